"""virnucpro-fetch-model against a fake hub (tests/fake_hub.py): never the network."""

import json
import os

import pytest

from fake_hub import COMMIT, FakeHub, install, write_hub_file
from helpers import files_in, run_tool
from virnucpro.errors import UserError
from virnucpro.models.fetch_model import RECORD, fetch_model_snapshot, partial_folder

OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture
def repos(test_models, tmp_path):
    """The test DNABERT-S (pytorch_model.bin only), the test ESM-2 (safetensors), one with both
    formats plus files the extract tool does not need, and one without weights."""
    both = tmp_path / "both"
    both.mkdir()
    for name in ("config.json", "vocab.txt", "model.safetensors", "pytorch_model.bin", "tf_model.h5", "README.md"):
        (both / name).write_text(name)
    (both / "onnx").mkdir()
    (both / "onnx" / "model.onnx").write_text("onnx")
    config_only = tmp_path / "config_only"
    config_only.mkdir()
    (config_only / "config.json").write_text("{}")
    revisions = {"main": COMMIT, "v1": OTHER_COMMIT}
    return {
        "test-org/dnabert": {"folder": test_models["dnabert"], "revisions": revisions},
        "test-org/esm": {"folder": test_models["esm"], "revisions": revisions},
        "test-org/both": {"folder": str(both), "revisions": revisions},
        "test-org/empty": {"folder": str(config_only), "revisions": revisions},
    }


@pytest.fixture
def hub(repos, monkeypatch):
    fake = FakeHub(repos)
    install(fake, monkeypatch.setattr)
    return fake


def same_bytes(a, b):
    with open(a, "rb") as x, open(b, "rb") as y:
        return x.read() == y.read()


@pytest.mark.parametrize("kind, weights", [("dnabert", "pytorch_model.bin"), ("esm", "model.safetensors")])
def test_snapshot_holds_what_extract_loads_and_the_commit(hub, test_models, tmp_path, kind, weights):
    outdir = tmp_path / "models" / kind
    record = fetch_model_snapshot(f"test-org/{kind}", outdir)
    source = test_models[kind]
    wanted = sorted(n for n in os.listdir(source) if n != RECORD and (n.endswith((".json", ".txt")) or n == weights))
    assert weights in wanted
    assert files_in(outdir) == sorted(wanted + [RECORD])  # no hub .cache/ left in the model folder
    for name in wanted:
        assert same_bytes(outdir / name, os.path.join(source, name))
    assert json.loads((outdir / RECORD).read_text()) == record
    assert record["commit"] == COMMIT and record["model"] == f"test-org/{kind}" and record["revision"] == "main"
    assert record["files"] == wanted
    # Resolved once, then downloaded at that commit (both formats never fetched).
    (download,) = [c for c in hub.calls if c[0] == "snapshot_download"]
    assert download[2] == COMMIT
    assert files_in(tmp_path / "models") == [kind]  # the partial folder was renamed away


def test_loaders_accept_the_snapshot(hub, tmp_path):
    from virnucpro.models.esm import load_esm

    outdir = tmp_path / "esm"
    fetch_model_snapshot("test-org/esm", outdir)
    assert sum(p.numel() for p in load_esm(str(outdir)).parameters()) > 0


def test_one_weight_format_safetensors_first(hub, tmp_path):
    fetch_model_snapshot("test-org/both", tmp_path / "fetched")
    assert files_in(tmp_path / "fetched") == ["config.json", "model.safetensors", RECORD, "vocab.txt"]


def test_revision_is_resolved_and_recorded(hub, tmp_path):
    record = fetch_model_snapshot("test-org/esm", tmp_path / "esm", revision="v1")
    assert record["commit"] == OTHER_COMMIT and record["revision"] == "v1"
    assert ("model_info", "test-org/esm", "v1") in hub.calls


def test_complete_snapshot_is_skipped_other_model_refused(hub, tmp_path):
    outdir = tmp_path / "esm"
    fetch_model_snapshot("test-org/esm", outdir)
    before = {n: os.stat(outdir / n).st_mtime_ns for n in files_in(outdir)}
    hub.calls.clear()
    fetch_model_snapshot("test-org/esm", outdir)
    fetch_model_snapshot("test-org/esm", outdir, revision=COMMIT)  # the recorded commit is the same snapshot
    assert hub.calls == [] and {n: os.stat(outdir / n).st_mtime_ns for n in files_in(outdir)} == before
    with pytest.raises(UserError, match="holds test-org/esm@main, not test-org/dnabert@main"):
        fetch_model_snapshot("test-org/dnabert", outdir)
    record = fetch_model_snapshot("test-org/dnabert", outdir, overwrite=True)
    assert record["model"] == "test-org/dnabert" and "pytorch_model.bin" in files_in(outdir)
    assert "model.safetensors" not in files_in(outdir)


def test_interrupted_download_leaves_no_folder_and_resumes(repos, monkeypatch, tmp_path):
    outdir = tmp_path / "models" / "both"
    failing = FakeHub(repos, fail_after=2)
    install(failing, monkeypatch.setattr)
    with pytest.raises(ConnectionError):
        fetch_model_snapshot("test-org/both", outdir)
    assert not outdir.exists()
    assert len(files_in(partial_folder(outdir))) >= 2  # what was fetched is kept for the re-run
    working = FakeHub(repos)
    install(working, monkeypatch.setattr)
    fetch_model_snapshot("test-org/both", outdir)
    assert files_in(outdir) == ["config.json", "model.safetensors", RECORD, "vocab.txt"]
    assert files_in(tmp_path / "models") == ["both"]


@pytest.mark.parametrize("model, revision", [("test-org/dnabert", "main"), ("test-org/both", "v1")])
def test_interrupted_download_of_another_model_or_commit_is_not_mixed_in(repos, test_models, monkeypatch, tmp_path,
                                                                         model, revision):
    outdir = tmp_path / "models" / "m"
    install(FakeHub(repos, fail_after=2), monkeypatch.setattr)
    with pytest.raises(ConnectionError):
        fetch_model_snapshot("test-org/both", outdir)
    assert "model.safetensors" in files_in(partial_folder(outdir))
    # What the other model/commit had under a shared name (the fake hub keeps files already there).
    with open(os.path.join(partial_folder(outdir), "config.json"), "w") as handle:
        handle.write("config.json of the interrupted download")
    install(FakeHub(repos), monkeypatch.setattr)
    record = fetch_model_snapshot(model, outdir, revision=revision)
    source = repos[model]["folder"]
    wanted = sorted(n for n in os.listdir(source) if n != RECORD and (n.endswith((".json", ".txt"))
                    or n == ("pytorch_model.bin" if model == "test-org/dnabert" else "model.safetensors")))
    assert record["files"] == wanted and files_in(outdir) == sorted(wanted + [RECORD])
    for name in wanted:
        assert same_bytes(outdir / name, os.path.join(source, name)), name
    assert record["commit"] == repos[model]["revisions"][revision]
    assert files_in(tmp_path / "models") == ["m"]


@pytest.mark.parametrize("model, revision, message", [
    ("test-org/missing", "main", "no such model on the hub"),
    ("test-org/esm", "v9", "no revision 'v9'"),
    ("test-org/empty", "main", "neither .safetensors nor pytorch_model"),
    ("../models/esm", "main", "neither a local folder nor a hub id"),
])
def test_hub_problems_are_user_errors_and_leave_nothing(hub, tmp_path, model, revision, message):
    with pytest.raises(UserError, match=message):
        fetch_model_snapshot(model, tmp_path / "run" / "out", revision=revision)
    assert files_in(tmp_path / "run") == []


def test_cli_fetches_from_the_hub_and_refuses_a_local_folder(repos, test_models, tmp_path):
    env = write_hub_file(tmp_path / "hub.json", repos)
    run_tool("virnucpro-fetch-model", "--model", "test-org/esm", "--outdir", tmp_path / "esm", env=env)
    assert json.loads((tmp_path / "esm" / RECORD).read_text())["commit"] == COMMIT
    local = run_tool("virnucpro-fetch-model", "--model", test_models["esm"], "--outdir", tmp_path / "x", check=False)
    assert local.returncode == 1
    last = local.stderr.strip().splitlines()[-1]
    assert last.startswith("virnucpro-fetch-model: error: ") and "pass the folder itself" in last
    offline = run_tool("virnucpro-fetch-model", "--model", "test-org/esm", "--outdir", tmp_path / "y", check=False)
    assert offline.returncode == 1 and "HF_HUB_OFFLINE" in offline.stderr.strip().splitlines()[-1]
    assert not os.path.exists(tmp_path / "x") and not os.path.exists(tmp_path / "y")


def test_a_hub_snapshot_without_weights_is_a_one_line_error(tmp_path, monkeypatch):
    """A cache holding only configs (offline) must fail here, not later inside the model loader."""
    import huggingface_hub

    from virnucpro.models import hub

    snapshot = tmp_path / "models--org--m" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *args, **kwargs: str(snapshot))
    with pytest.raises(UserError, match="gave no weight file"):
        hub.download("org/m")
