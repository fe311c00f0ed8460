"""virnucpro-predict end to end with the tiny test models: complete, resumable, a no-op when done."""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from helpers import FINAL, REPO, SMALL_SUBSET, files_in, predict_args, read, read_fasta_pairs, run_tool
from virnucpro.fasta import read_fasta


#: Largest score difference between runs that batch or shard the frames otherwise (fp32, CPU).
SCORE_ATOL = 1e-5


def assert_same_predictions(path, expected_path, atol=SCORE_ATOL):
    """The same ids and labels in the same order, and scores within `atol`."""
    rows = [line.split("\t") for line in read(path).splitlines()]
    expected = [line.split("\t") for line in read(expected_path).splitlines()]
    assert rows[0] == expected[0] and len(rows) == len(expected)
    assert [row[:2] for row in rows] == [row[:2] for row in expected]
    worst = max((abs(float(a) - float(b)) for row, other in zip(rows[1:], expected[1:])
                 for a, b in zip(row[2:], other[2:])), default=0.0)
    assert worst <= atol, f"scores differ by up to {worst}"


def all_files(folder):
    """Every file under a folder (hidden temporaries included) -> modification time in ns."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            found[os.path.relpath(path, folder)] = os.stat(path).st_mtime_ns
    return found


@pytest.fixture(scope="module")
def clean_run(test_models, small_fasta, tmp_path_factory):
    outdir = tmp_path_factory.mktemp("clean") / "run"
    result = run_tool("virnucpro-predict", *predict_args(test_models, small_fasta, outdir))
    return dict(outdir=str(outdir), stderr=result.stderr, stdout=result.stdout)


def test_clean_run_writes_final_tables_stages_and_summary(clean_run):
    outdir = clean_run["outdir"]
    for name in FINAL + ("report.html", "run.json"):
        assert os.path.isfile(os.path.join(outdir, name)), name
    for folder in ("1_translate", "2_dnabert", "3_esm", "4_merge"):
        assert files_in(os.path.join(outdir, folder)), folder
    assert clean_run["stdout"] == ""
    for stage in range(1, 7):
        assert f"[{stage}/6]" in clean_run["stderr"]
    summary = clean_run["stderr"][clean_run["stderr"].index("VirNucPro prediction finished"):]
    assert "sequences   3 " in summary and "frames" in summary and "stage times" in summary
    frames = len(read(os.path.join(outdir, "prediction_results.tsv")).splitlines()) - 1
    assert f"frames      {frames} scored" in summary


def test_report_is_self_contained(clean_run):
    report = read(os.path.join(clean_run["outdir"], "report.html"))
    assert report.count("src='data:image/png;base64,") >= 4
    assert not re.search(r"""(src|href)=['"](http|//|file:)""", report)
    for name in SMALL_SUBSET:
        assert name in report
    assert "chunk_size" in report and "threshold" in report


def test_rerun_of_finished_run_does_no_work(clean_run, test_models, small_fasta):
    before = all_files(clean_run["outdir"])
    result = run_tool("virnucpro-predict", *predict_args(test_models, small_fasta, clean_run["outdir"]))
    assert all_files(clean_run["outdir"]) == before
    assert result.stderr.count("already complete, skipped") == 6
    assert "embedding (" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kill_when", ["run.json", "2_dnabert/small.dnabert.h5", "3_esm/small.esm.h5"])
def test_killed_run_resumes_to_the_clean_result(clean_run, test_models, small_fasta, tmp_path, kill_when):
    outdir = tmp_path / "run"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    command = [sys.executable, os.path.join(REPO, "bin", "virnucpro-predict"), *map(str, predict_args(test_models, small_fasta, outdir))]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 300
    while not os.path.exists(outdir / kill_when) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    for name in FINAL:  # nothing final is left half-written
        path = outdir / name
        assert not path.exists() or read(path) == read(os.path.join(clean_run["outdir"], name))
    run_tool("virnucpro-predict", *predict_args(test_models, small_fasta, outdir))
    for name in FINAL:
        assert read(outdir / name) == read(os.path.join(clean_run["outdir"], name)), name
    leftovers = [p for p in all_files(outdir) if p.endswith((".tmp", ".virnucpro-partial"))]
    assert leftovers == []


def stage_files(outdir):
    """Modification times of the files of stages 1-4 (translate, embeddings, merge)."""
    return {path: mtime for path, mtime in all_files(outdir).items() if path.startswith(("1_", "2_", "3_", "4_"))}


def other_classifier(test_models, path):
    """The test classifier with other weights (a state dict): other scores, same input size."""
    import torch

    from virnucpro.models.classifier import load_classifier

    state = load_classifier(test_models["classifier"]).state_dict()
    state["output_layer.bias"] = state["output_layer.bias"] + torch.tensor([0.0, 3.0])
    torch.save(state, path)
    return str(path)


def test_threshold_or_classifier_change_redoes_only_classify_and_report(clean_run, test_models, small_fasta, tmp_path):
    outdir = tmp_path / "run"
    shutil.copytree(clean_run["outdir"], outdir)
    (outdir / ".notes.tmp").write_text("mine")  # a user's file: never the tool's to delete
    (outdir / ".run.json.abcd1234.tmp").write_text("left by a killed run")  # the tool's own temporary name
    embeddings = stage_files(outdir)
    result = run_tool("virnucpro-predict", *predict_args(test_models, small_fasta, outdir, "--threshold", 0.9))
    assert stage_files(outdir) == embeddings  # translate, embeddings and merge untouched
    for stage in ("translate", "dnabert", "esm", "merge"):
        assert f"{stage}: already complete, skipped" in result.stderr
    assert "classify: done" in result.stderr and "report: done" in result.stderr
    assert "threshold: 0.5 before, 0.9 now" in result.stderr
    assert read(outdir / "prediction_results.tsv") == read(os.path.join(clean_run["outdir"], "prediction_results.tsv"))
    rows = [line.split("\t") for line in read(outdir / "sequence_summary.tsv").splitlines()[1:]]
    assert [row[-1] for row in rows] == ["virus" if int(row[4]) >= 0.9 * int(row[3]) else "others" for row in rows]
    assert json.loads(read(outdir / "classify.json"))["threshold"] == 0.9
    assert "viral_fraction &gt;= 0.9" in read(outdir / "report.html")
    assert read(outdir / ".notes.tmp") == "mine" and not (outdir / ".run.json.abcd1234.tmp").exists()

    changed = other_classifier(test_models, tmp_path / "other.pth")
    args = predict_args(test_models, small_fasta, outdir, "--threshold", 0.9)
    args[args.index("--classifier") + 1] = changed
    result = run_tool("virnucpro-predict", *args)
    assert stage_files(outdir) == embeddings and "classifier_sha256" in result.stderr
    assert read(outdir / "prediction_results.tsv") != read(os.path.join(clean_run["outdir"], "prediction_results.tsv"))


def test_other_early_settings_are_refused_before_any_work_unless_overwrite(clean_run, test_models, small_fasta, tmp_path):
    outdir = tmp_path / "run"
    shutil.copytree(clean_run["outdir"], outdir)
    before = all_files(outdir)
    refused = run_tool("virnucpro-predict", *predict_args(test_models, small_fasta, outdir, "--shard_size", 5), check=False)
    assert refused.returncode == 1
    assert "other settings (shard_size: 0 before, 5 now)" in refused.stderr.strip().splitlines()[-1]
    assert "[1/6]" not in refused.stderr and all_files(outdir) == before
    run_tool("virnucpro-predict", *predict_args(test_models, small_fasta, outdir, "--shard_size", 5, "--overwrite"))
    # other shards batch the frames otherwise: equal scores within fp32 noise, not bit for bit (README, Reproducibility)
    assert_same_predictions(outdir / "prediction_results.tsv", os.path.join(clean_run["outdir"], "prediction_results.tsv"))
    assert len(glob.glob(str(outdir / "4_merge" / "*.features.h5"))) > 1


def test_a_run_that_failed_early_does_not_block_the_corrected_one(clean_run, test_models, small_fasta, tmp_path):
    outdir = tmp_path / "run"
    broken = tmp_path / "dnabert_broken"  # passes the preflight (config and weights file there), fails to load
    shutil.copytree(test_models["dnabert"], broken)
    (broken / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    typo = predict_args(test_models, small_fasta, outdir)
    typo[typo.index("--dnabert_model") + 1] = str(broken)
    failed = run_tool("virnucpro-predict", *typo, check=False)
    assert failed.returncode == 1 and "dnabert_broken" in failed.stderr.strip().splitlines()[-1]
    assert os.path.exists(outdir / "1_translate")  # it got that far
    run_tool("virnucpro-predict", *predict_args(test_models, small_fasta, outdir))
    for name in FINAL:
        assert read(outdir / name) == read(os.path.join(clean_run["outdir"], name)), name


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("", "empty file"),
    (">p1\nMKVLEFQPILS\n", "looks like a protein FASTA"),
    ("just some text\n", "not FASTA"),
])
def test_bad_input_gives_the_fasta_error(test_models, tmp_path, content, message):
    fasta = tmp_path / "input.fa"
    if content is not None:
        fasta.write_text(content)
    result = run_tool("virnucpro-predict", *predict_args(test_models, fasta, tmp_path / "out"), check=False)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("virnucpro-predict: error: ") and message in last
    assert not any(os.path.exists(tmp_path / "out" / name) for name in FINAL)


def test_bad_classifier_fails_before_any_embedding(test_models, small_fasta, tmp_path):
    args = predict_args(test_models, small_fasta, tmp_path / "out")
    args[args.index("--classifier") + 1] = small_fasta
    result = run_tool("virnucpro-predict", *args, check=False)
    assert result.returncode == 1
    assert "not a VirNucPro classifier" in result.stderr
    assert not os.path.exists(tmp_path / "out")


def test_classifier_of_the_wrong_input_size_fails_before_any_work(test_models, small_fasta, tmp_path):
    import torch

    from virnucpro.models.classifier import MLPClassifier

    torch.save(MLPClassifier(input_dim=1024).state_dict(), tmp_path / "narrow.pth")
    args = predict_args(test_models, small_fasta, tmp_path / "out")
    args[args.index("--classifier") + 1] = tmp_path / "narrow.pth"
    result = run_tool("virnucpro-predict", *args, check=False)
    assert result.returncode == 1
    assert "takes 1024 features, but VirNucPro features have 3328" in result.stderr.strip().splitlines()[-1]
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.slow
def test_full_example_file_one_row_per_frame_and_per_record(test_models, tmp_path):
    """The bundled metagenome example: every translated frame scored, in translate order."""
    fasta = os.path.join(REPO, "examples", "metagenome_scaffolds.fa")
    outdir = tmp_path / "run"
    run_tool("virnucpro-predict", *predict_args(test_models, fasta, outdir, "--shard_size", 40))
    frames = []
    for path in sorted(glob.glob(str(outdir / "1_translate" / "*.nucleotide.fa"))):
        frames += [frame_id for frame_id, _ in read_fasta_pairs(path)]
    assert len(glob.glob(str(outdir / "4_merge" / "*.features.h5"))) > 1  # several shards
    rows = [line.split("\t") for line in read(outdir / "prediction_results.tsv").splitlines()]
    assert rows[0] == ["Sequence_ID", "Prediction", "score1", "score2"]
    assert [row[0] for row in rows[1:]] == frames
    record_ids = [record_id for record_id, _ in read_fasta(fasta)]
    summary = [line.split("\t") for line in read(outdir / "sequence_summary.tsv").splitlines()[1:]]
    assert [row[0] for row in summary] == record_ids
    chunks = {row[0]: row[2] for row in (line.split("\t") for line in read(glob.glob(str(outdir / "1_translate" / "*.sequences.tsv"))[0]).splitlines()[1:])}
    assert {row[0]: row[2] for row in summary} == chunks
    scored_chunks = {frame[:-2] for frame in frames}
    assert sum(int(row[3]) for row in summary) == len(scored_chunks)
    highest = read(outdir / "prediction_results_highestscore.tsv").splitlines()[1:]
    assert [line.split("\t")[0] for line in highest] == sorted(scored_chunks)


def test_each_model_is_loaded_once_for_all_shards(test_models, small_fasta, tmp_path, monkeypatch):
    from virnucpro.engine import embedder
    from virnucpro.stages.predict import predict_run

    loads = []
    real = embedder.load_runner
    monkeypatch.setattr(embedder, "load_runner", lambda *args: loads.append(args[0]) or real(*args))
    result = predict_run(small_fasta, str(tmp_path / "run"), classifier=test_models["classifier"], device="cpu",
                         dnabert_model=test_models["dnabert"], esm_model=test_models["esm"], shard_size=5, workers=1)
    shards = sorted(os.listdir(tmp_path / "run" / "2_dnabert"))
    assert len(shards) > 2 and shards == [f"small.{n:05d}.dnabert.h5" for n in range(1, len(shards) + 1)]
    assert sorted(loads) == ["dnabert", "esm"]
    recorded = json.loads(read(tmp_path / "run" / "run.json"))["stages"]["dnabert"]
    assert recorded["precision"] == "fp32"  # auto, resolved on the CPU
    assert result["frames"] > 0


def test_an_embeddings_shard_made_otherwise_is_made_again_not_reused(clean_run, test_models, small_fasta, tmp_path):
    """A run killed mid-stage and rerun with other settings: the stage is not recorded, so only the
    file itself can say how it was made; predict owns the folder and makes it again."""
    from virnucpro.embeddings_h5 import read_attrs

    outdir = tmp_path / "run"
    shutil.copytree(clean_run["outdir"], outdir)
    (outdir / "run.json").unlink()
    shutil.copy(outdir / "3_esm" / "small.esm.h5", outdir / "2_dnabert" / "small.dnabert.h5")
    result = run_tool("virnucpro-predict", *predict_args(test_models, small_fasta, outdir))
    assert "small.dnabert.h5 was made differently" in result.stderr
    assert read_attrs(outdir / "2_dnabert" / "small.dnabert.h5")["kind"] == "dnabert"
    for table in ("prediction_results.tsv", "prediction_results_highestscore.tsv"):
        assert read(outdir / table) == read(os.path.join(clean_run["outdir"], table))


def test_overwrite_removes_only_the_files_predict_writes(clean_run, test_models, small_fasta, tmp_path):
    outdir = tmp_path / "run"
    shutil.copytree(clean_run["outdir"], outdir)
    mine = ["notes.txt", "1_translate/README", "2_dnabert/other.dnabert.h5", "4_merge/keep.features.h5.bak"]
    for name in mine:
        (outdir / name).write_text("mine")
    stale = outdir / "2_dnabert" / "small.00007.dnabert.h5"  # an earlier sharded run's file: predict's to remove
    stale.write_text("old")
    record = json.loads(read(outdir / "run.json"))  # as if the earlier run had been of `previous.fa`
    record["stages"]["translate"]["input_name"] = "previous.fa"
    (outdir / "run.json").write_text(json.dumps(record))
    previous = outdir / "3_esm" / "previous.esm.h5"
    previous.write_text("old")
    run_tool("virnucpro-predict", *predict_args(test_models, small_fasta, outdir, "--overwrite"))
    for name in mine:
        assert read(outdir / name) == "mine", name
    assert not stale.exists() and not previous.exists()
    for name in FINAL:
        assert read(outdir / name) == read(os.path.join(clean_run["outdir"], name)), name


# ---- preflight: every input checked before stage 1, one line per problem, nothing written ----

def preflight_refused(result, *lines):
    """Exit 1, and stderr is exactly these problems, one `virnucpro-predict: error:` line each (substrings)."""
    got = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert len(got) == len(lines), result.stderr
    for line, expected in zip(got, lines):
        assert line.startswith("virnucpro-predict: error: ") and expected in line, (expected, line)
    assert "[1/6]" not in result.stderr


def test_preflight_names_every_problem_with_the_option_typed(test_models, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    args = ["--input", tmp_path / "missing.fa", "--outdir", tmp_path / "a_file" / "out", "--chunk_size", 500,
            "--classifier", test_models["classifier"], "--dnabert_model", "zhihan1996/DNABERT-S-not-cached",
            "--esm_model", tmp_path / "esm_tpyo"]
    result = run_tool("virnucpro-predict", *args, check=False)
    preflight_refused(result, "missing.fa: no such file",
                      "--dnabert_model zhihan1996/DNABERT-S-not-cached: no such model folder, and not in the local "
                      "Hugging Face cache",
                      "--esm_model", "--outdir")
    lines = result.stderr.strip().splitlines()
    assert "virnucpro-fetch-model --model zhihan1996/DNABERT-S-not-cached" in lines[1]
    assert "esm_tpyo: no such model folder" in lines[2] and "a_file is a file, not a folder" in lines[3]
    assert files_in(tmp_path) == ["a_file"]


def test_a_model_folder_without_weights_is_refused_before_any_work(test_models, small_fasta, tmp_path):
    empty = tmp_path / "esm_empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    args = predict_args(test_models, small_fasta, tmp_path / "out")
    args[args.index("--esm_model") + 1] = empty
    result = run_tool("virnucpro-predict", *args, check=False)
    preflight_refused(result, "esm_empty: a model folder without weights")
    assert "error: --esm_model " in result.stderr
    assert not os.path.exists(tmp_path / "out")


def published_copy(test_models, path):
    """A classifier without recorded metadata (a state dict), under a name such as 300_model.pth:
    like the published files, only its name says its chunk size."""
    import torch

    from virnucpro.models.classifier import load_classifier

    torch.save(load_classifier(test_models["classifier"]).state_dict(), path)
    return str(path)


@pytest.mark.parametrize("chunk_size, classifier, message", [
    (300, "classifier", "--chunk_size 300 does not match the classifier"),  # recorded metadata says 500
    (500, "classifier_300", "its recorded metadata says it was trained on 300 bp chunks"),
    (500, "300_model.pth", "its file name says it was trained on 300 bp chunks"),
    (400, "classifier", "--chunk_size 400: the published classifiers were trained on 300 or 500"),
    (None, "mine.pth", "--chunk_size is required"),
])
def test_chunk_size_and_classifier_must_agree(test_models, small_fasta, tmp_path, chunk_size, classifier, message):
    path = test_models.get(classifier) or published_copy(test_models, tmp_path / classifier)
    args = predict_args(test_models, small_fasta, tmp_path / "out")
    args[args.index("--classifier") + 1] = path
    if chunk_size is None:
        del args[args.index("--chunk_size"):args.index("--chunk_size") + 2]
    else:
        args[args.index("--chunk_size") + 1] = chunk_size
    preflight_refused(run_tool("virnucpro-predict", *args, check=False), message)
    assert files_in(tmp_path) == ([classifier] if classifier.endswith(".pth") else [])


@pytest.mark.parametrize("chunk_size, extra", [(300, "--any_chunk_size"), (400, "--any_chunk_size"), (None, None)])
def test_chunk_size_override_and_the_classifiers_own_size_pass_the_preflight(test_models, small_fasta, tmp_path,
                                                                              chunk_size, extra):
    """Shown by an unwritable --outdir then being the one problem left (so nothing runs)."""
    (tmp_path / "a_file").write_text("")
    args = predict_args(test_models, small_fasta, tmp_path / "a_file" / "out") + ([extra] if extra else [])
    if chunk_size is None:  # the test classifier records 500
        del args[args.index("--chunk_size"):args.index("--chunk_size") + 2]
    else:
        args[args.index("--chunk_size") + 1] = chunk_size
    preflight_refused(run_tool("virnucpro-predict", *args, check=False), "--outdir")


def test_the_report_says_what_the_run_did(clean_run):
    """Banner for test models (recorded, not assumed), the rules in words, every stage timed."""
    page = read(os.path.join(clean_run["outdir"], "report.html"))
    assert "<div class='banner'><b>Test models: these scores mean nothing.</b>" in page
    assert "classifier, dnabert, esm" in page
    assert "this project's aggregation" in page and "<b>score1</b> is its softmax probability of class <i>others</i>" in page
    times = re.search(r"<h2>Stage times</h2>\s*(<table>.*?</table>)", page, re.S).group(1)
    for stage in ("translate", "dnabert", "esm", "merge", "classify", "report"):
        assert f"<td>{stage}</td>" in times, stage
    assert "[6/6] report: done" in clean_run["stderr"]


def test_a_report_made_otherwise_is_made_again_and_the_log_says_so(clean_run, test_models, small_fasta, tmp_path):
    """The log never says `remaking` and then `skipped` for the same stage."""
    outdir = tmp_path / "run"
    shutil.copytree(clean_run["outdir"], outdir)
    record = json.loads(read(outdir / "report.json"))
    record["made_from"]["threshold"] = 0.25
    (outdir / "report.json").write_text(json.dumps(record))
    result = run_tool("virnucpro-predict", *predict_args(test_models, small_fasta, outdir))
    assert "report was made differently" in result.stderr
    assert "[6/6] report: done" in result.stderr and "[6/6] report: already complete" not in result.stderr


def test_device_auto_on_a_gpu_machine_with_cpu_only_torch_warns_once(tmp_path):
    """Faked: an `nvidia-smi` on PATH stands for the GPU; this torch is the CPU build."""
    import torch

    if torch.version.cuda is not None:
        pytest.skip("this torch is a CUDA build")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho GPU 0\n")
    (fake / "nvidia-smi").chmod(0o755)
    code = "from virnucpro.engine.devices import plan_devices; plan_devices('auto'); plan_devices('auto'); print('ok')"
    env = dict(os.environ, PATH=f"{fake}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run([sys.executable, "-c", "import logging; logging.basicConfig(); " + code],
                            capture_output=True, text=True, env=env)
    warnings = [line for line in result.stderr.splitlines() if "CPU-only build" in line]
    assert result.stdout.strip() == "ok" and len(warnings) == 1, result.stderr
    assert "NVIDIA GPU" in warnings[0] and "CUDA build" in warnings[0]
