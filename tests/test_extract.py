"""virnucpro-extract: HDF5 layout, batching, resume after a kill, workers, precision, errors."""

import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from virnucpro.errors import UserError
from virnucpro.embeddings_h5 import PartialEmbeddings, partial_path, read_embeddings
from virnucpro.engine.streaming import plan_batches
from virnucpro.stages.extract import extract_embeddings, resolve_model
from virnucpro.fasta import read_fasta

from helpers import DATA, REPO, child_pids, files_in, outliving, run_tool

REFERENCE = os.path.join(DATA, "dnabert_reference")
DNA = os.path.join(REFERENCE, "sequences.fa")
DIMS = {"dnabert": 768, "esm": 2560}
REQUIRED_ATTRS = {"model", "model_revision", "kind", "pooling", "precision", "virnucpro_version"}
#: Largest difference allowed between fp32 CPU runs that batch, shard or thread differently (README
#: "Reproducibility": measured differences are below 1e-6 on the test models).
FP32_ATOL = 1e-5


def cosines(a, b):
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def proteins(tmp_path_factory):
    """Proteins of varied lengths (a few real ORF translations plus random ones)."""
    rng = np.random.default_rng(11)
    records = list(read_fasta(os.path.join(DATA, "vanilla", "test_with_orfs_identified_protein.faa"), "protein"))
    for number, length in enumerate([3, 17, 40, 41, 90, 150, 8, 64]):
        records.append((f"random_{number}", "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size=length))))
    path = tmp_path_factory.mktemp("proteins") / "proteins.faa"
    path.write_text("".join(f">{name}\n{seq}\n" for name, seq in records))
    return str(path)


@pytest.fixture(scope="module")
def dna(tmp_path_factory):
    """A dozen of the reference DNA sequences (N runs, 20 to 520 bp): enough to batch, quick to run."""
    records = list(read_fasta(DNA))[::3][:12]
    path = tmp_path_factory.mktemp("dna") / "dna.fa"
    path.write_text("".join(f">{name}\n{seq}\n" for name, seq in records))
    return str(path)


def inputs(kind, proteins):
    return DNA if kind == "dnabert" else proteins


def unbatched(kind, folder, path):
    """Each sequence alone through the model: the original tool's way."""
    if kind == "dnabert":
        from virnucpro.models.dnabert import DnabertTokenizer, embed_batch, load_dnabert

        model, tokenizer = load_dnabert(folder), DnabertTokenizer(folder)
    else:
        from virnucpro.models.esm import EsmTokens, embed_batch, load_esm

        model, tokenizer = load_esm(folder), EsmTokens(folder)
    records = list(read_fasta(path, None))
    tokens = tokenizer.encode([seq for _, seq in records])
    return [name for name, _ in records], np.stack([embed_batch(model, [t], tokenizer.pad_id, "cpu")[0] for t in tokens])


@pytest.mark.parametrize("kind", ["dnabert", "esm"])
def test_layout_and_batched_equals_unbatched(tmp_path, test_models, proteins, kind):
    source = inputs(kind, proteins)
    output = tmp_path / f"{kind}.h5"
    written = extract_embeddings(kind, source, output, model=test_models[kind], device="cpu", batch_tokens=600, block_size=10)
    assert written == str(output)
    assert files_in(tmp_path) == [f"{kind}.h5"]  # no partial or temporary file left
    with h5py.File(output) as handle:
        assert set(handle) == {"ids", "embeddings"}
        assert handle["embeddings"].dtype == np.float32
        assert h5py.check_string_dtype(handle["ids"].dtype).encoding == "utf-8"
        assert REQUIRED_ATTRS <= set(handle.attrs)
    ids, embeddings, attrs = read_embeddings(output)
    expected_ids, expected = unbatched(kind, test_models[kind], source)
    assert ids == expected_ids
    assert embeddings.shape == (len(ids), DIMS[kind])
    assert cosines(embeddings, expected).min() >= 0.9999
    assert attrs["kind"] == kind and attrs["precision"] == "fp32" and attrs["model"] == test_models[kind]
    assert attrs["model_revision"].startswith("sha256:")


@pytest.mark.parametrize("folder", ["", "heads12"])
def test_extract_reproduces_upstream_dnabert(tmp_path, folder):
    model = os.path.join(REFERENCE, folder)
    with h5py.File(os.path.join(model, "expected.h5")) as handle:
        expected, expected_long = handle["embeddings"][:], handle["long_embeddings"][:]
    for source, want in ((DNA, expected), (os.path.join(REFERENCE, "long_sequences.fa"), expected_long)):
        output = tmp_path / "out.h5"
        extract_embeddings("dnabert", source, output, model=model, device="cpu", batch_tokens=2000, overwrite=True)
        _, got, _ = read_embeddings(output)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
        assert cosines(got, want).min() >= 0.99999


@pytest.mark.parametrize("kind", ["dnabert", "esm"])
def test_empty_input_gives_a_valid_empty_file(tmp_path, test_models, kind):
    for name, text in (("empty.fa", ""), ("blank_record.fa", ">nothing\n")):
        source = tmp_path / name
        source.write_text(text)
        output = tmp_path / "new_folder" / f"{name}.h5"
        extract_embeddings(kind, source, output, model=test_models[kind], device="cpu")
        ids, embeddings, attrs = read_embeddings(output)
        assert ids == [] and embeddings.shape == (0, DIMS[kind]) and attrs["kind"] == kind


def test_complete_output_is_skipped_unless_it_differs_or_overwrite(tmp_path, test_models, dna):
    output = tmp_path / "d.h5"
    extract_embeddings("dnabert", dna, output, model=test_models["dnabert"], device="cpu")
    before = os.stat(output)
    extract_embeddings("dnabert", dna, output, model=test_models["dnabert"], device="cpu", batch_tokens=300)
    after = os.stat(output)
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    with pytest.raises(UserError, match="precision differ.*--overwrite"):
        extract_embeddings("dnabert", dna, output, model=test_models["dnabert"], device="cpu", precision="bf16")
    extract_embeddings("dnabert", dna, output, model=test_models["dnabert"], device="cpu", precision="bf16", overwrite=True)
    assert read_embeddings(output)[2]["precision"] == "bf16"


KILL_AFTER_TWO_BLOCKS = textwrap.dedent("""
    import os, signal, sys
    from virnucpro import embeddings_h5
    from virnucpro.stages.extract import extract_embeddings

    write_block = embeddings_h5.PartialEmbeddings.write_block
    written = []

    def write_then_die(self, start, embeddings):
        write_block(self, start, embeddings)
        written.append(len(embeddings))
        if len(written) == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind runs

    embeddings_h5.PartialEmbeddings.write_block = write_then_die
    extract_embeddings("dnabert", sys.argv[1], sys.argv[2], model=sys.argv[3], device="cpu", batch_tokens=500, block_size=8)
""")


def python_script(script, *args):
    """Command and environment to run `script` with this repository importable."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return [sys.executable, "-c", script, *map(str, args)], env


def test_killed_run_resumes_from_its_last_block_and_matches(tmp_path, test_models, monkeypatch):
    model = test_models["dnabert"]
    whole = tmp_path / "whole.h5"
    extract_embeddings("dnabert", DNA, whole, model=model, device="cpu", batch_tokens=500, block_size=8)

    output = tmp_path / "resumed.h5"
    command, env = python_script(KILL_AFTER_TWO_BLOCKS, DNA, output, model)
    killed = subprocess.run(command, env=env, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    assert not output.exists() and os.path.exists(partial_path(output))
    with h5py.File(partial_path(output)) as handle:
        assert handle.attrs["blocks_done"] == 2

    written = []
    write_block = PartialEmbeddings.write_block
    def counting_write_block(self, start, embeddings):
        written.append(start)
        write_block(self, start, embeddings)

    monkeypatch.setattr(PartialEmbeddings, "write_block", counting_write_block)
    extract_embeddings("dnabert", DNA, output, model=model, device="cpu", batch_tokens=500, block_size=8)

    total = len(list(read_fasta(DNA)))
    assert written == list(range(16, total, 8))  # the two saved blocks (windows of 8) were not redone
    assert not os.path.exists(partial_path(output))
    ids_a, emb_a, attrs_a = read_embeddings(whole)
    ids_b, emb_b, attrs_b = read_embeddings(output)
    assert ids_a == ids_b and attrs_a == attrs_b
    np.testing.assert_array_equal(emb_a, emb_b)  # bit for bit


def test_stale_partial_from_other_settings_is_discarded(tmp_path, test_models, dna):
    output = tmp_path / "d.h5"
    partial = partial_path(output)
    with h5py.File(partial, "w") as handle:
        handle.attrs["resume_key"] = "something else"
        handle.attrs["blocks_done"] = 3
    extract_embeddings("dnabert", dna, output, model=test_models["dnabert"], device="cpu")
    _, embeddings, _ = read_embeddings(output)
    assert np.isfinite(embeddings).all() and np.abs(embeddings).sum(1).min() > 0
    with open(partial, "wb") as handle:  # a partial file too damaged to open
        handle.write(b"not hdf5")
    extract_embeddings("dnabert", dna, output, model=test_models["dnabert"], device="cpu", overwrite=True)
    assert not os.path.exists(partial)


def test_two_spawned_cpu_workers_equal_one(tmp_path, test_models, dna):
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    extract_embeddings("dnabert", dna, one, model=test_models["dnabert"], device="cpu", batch_tokens=400, block_size=6)
    extract_embeddings("dnabert", dna, two, model=test_models["dnabert"], device="cpu", batch_tokens=400, block_size=6,
                       workers=2)
    ids_one, emb_one, attrs_one = read_embeddings(one)
    ids_two, emb_two, attrs_two = read_embeddings(two)
    assert ids_one == ids_two and attrs_one == attrs_two
    assert cosines(emb_one, emb_two).min() >= 0.99999
    np.testing.assert_allclose(emb_one, emb_two, atol=1e-5, rtol=0)


def test_a_model_that_fails_to_load_in_spawned_workers_is_a_one_line_error(tmp_path, test_models, dna):
    """A worker whose model load fails must hand its error to the parent (not just break the pool)."""
    import shutil

    import torch

    folder = tmp_path / "dnabert"
    shutil.copytree(test_models["dnabert"], folder)
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    del state["encoder.layer.0.mlp.wo.bias"]
    torch.save(state, folder / "pytorch_model.bin")
    output = tmp_path / "out.h5"
    with pytest.raises(UserError, match="missing weights: encoder.layer.0.mlp.wo.bias"):
        extract_embeddings("dnabert", dna, output, model=str(folder), device="cpu", batch_tokens=400, workers=2)
    result = run_tool("virnucpro-extract", "dnabert", "--input", dna, "--output", output, "--model", folder,
                      "--device", "cpu", "--batch_tokens", 400, "--workers", 2, check=False)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("virnucpro-extract: error: ") and "encoder.layer.0.mlp.wo.bias" in last, result.stderr
    assert not output.exists()


KILLED_PARENT = textwrap.dedent("""
    import sys, time
    from virnucpro.stages.extract import Embedder

    if __name__ == "__main__":
        embedder = Embedder("dnabert", model=sys.argv[1], device="cpu", workers=2, threads=2, batch_tokens=400)
        embedder.embed(sys.argv[2], sys.argv[3])
        print("ready", flush=True)
        time.sleep(600)  # killed here, its two workers idle with their models
""")


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc to find the worker processes")
def test_spawned_workers_exit_when_their_parent_is_killed(tmp_path, test_models):
    """A killed extraction (SIGKILL, OOM killer) must not leave its workers holding a model (and a GPU)."""
    import signal
    import time

    script = tmp_path / "killed_parent.py"
    script.write_text(KILLED_PARENT)
    parent = subprocess.Popen([sys.executable, str(script), test_models["dnabert"], DNA, str(tmp_path / "out.h5")],
                              stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    try:
        assert parent.stdout.readline().strip() == "ready"
        workers = [pid for pid in child_pids(parent.pid) if "spawn_main" in open(f"/proc/{pid}/cmdline").read()]
        assert len(workers) == 2
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    assert not outliving(workers), "workers outlived their killed parent"


@pytest.mark.parametrize("kind", ["dnabert", "esm"])
def test_bf16_on_cpu_stays_close_to_fp32(tmp_path, test_models, proteins, kind):
    source = inputs(kind, proteins)
    fp32, bf16 = tmp_path / "fp32.h5", tmp_path / "bf16.h5"
    extract_embeddings(kind, source, fp32, model=test_models[kind], device="cpu")
    extract_embeddings(kind, source, bf16, model=test_models[kind], device="cpu", precision="bf16")
    assert read_embeddings(bf16)[1].dtype == np.float32
    assert cosines(read_embeddings(fp32)[1], read_embeddings(bf16)[1]).min() >= 0.999


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["dnabert", "esm"])
@pytest.mark.parametrize("precision, min_cosine", [("fp32", 0.9999), ("fp16", 0.999), ("bf16", 0.999)])
def test_gpu_matches_cpu(tmp_path, test_models, proteins, kind, precision, min_cosine):
    source = inputs(kind, proteins)
    cpu, gpu = tmp_path / "cpu.h5", tmp_path / "gpu.h5"
    extract_embeddings(kind, source, cpu, model=test_models[kind], device="cpu")
    extract_embeddings(kind, source, gpu, model=test_models[kind], device="cuda", precision=precision, batch_tokens=600)
    assert cosines(read_embeddings(cpu)[1], read_embeddings(gpu)[1]).min() >= min_cosine


@pytest.mark.gpu
def test_gpu_results_come_back_through_blocking_events(tmp_path, test_models, dna, monkeypatch):
    """The writer sleeps on each copy back (a blocking CUDA event) instead of spinning a host core."""
    import torch

    made = []
    real = torch.cuda.Event

    def event(*args, **kwargs):
        made.append(kwargs.get("blocking", False))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.cuda, "Event", event)
    extract_embeddings("dnabert", dna, tmp_path / "g.h5", model=test_models["dnabert"], device="cuda:0",
                       batch_tokens=600)
    assert made and all(made)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["dnabert", "esm"])
def test_models_load_straight_onto_the_gpu_in_the_compute_dtype(test_models, kind):
    import torch

    model, _ = _tiny(kind, test_models[kind])
    from virnucpro.engine.embedder import load_model

    on_gpu = load_model(kind, test_models[kind], "cuda:0", "bf16")
    tensors = list(on_gpu.parameters())
    assert all(t.device.type == "cuda" and t.dtype == torch.bfloat16 for t in tensors)
    for (name, ours), (_, reference) in zip(on_gpu.state_dict().items(), model.state_dict().items()):
        assert torch.equal(ours.cpu(), reference.to(ours.dtype)), name


def test_batches_respect_the_token_budget():
    rng = np.random.default_rng(5)
    lengths = rng.integers(5, 300, size=500)
    batches = plan_batches(lengths, 1000)
    covered = np.concatenate(batches)
    assert sorted(covered.tolist()) == list(range(500))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * lengths[batch].max() <= 1000
    assert list(lengths[covered]) == sorted(lengths, reverse=True)
    assert plan_batches([5000, 3], 1000)[0].tolist() == [0]  # too long alone still runs
    for batch in plan_batches(lengths, 1000, multiple=8):  # lengths are padded up to multiples of 8
        assert len(batch) == 1 or len(batch) * (-(-lengths[batch].max() // 8) * 8) <= 1000


def test_cli_runs_and_reports_bad_input_in_one_line(tmp_path, test_models, dna):
    output = tmp_path / "cli.h5"
    run_tool("virnucpro-extract", "dnabert", "--input", dna, "--output", output, "--model", test_models["dnabert"],
             "--device", "cpu", "--batch_tokens", 2000)
    assert len(read_embeddings(output)[0]) == 12
    bad = tmp_path / "bad.fa"
    bad.write_text(">x\nACGTQQ\n")
    for args in (["dnabert", "--input", bad, "--output", tmp_path / "bad.h5", "--model", test_models["dnabert"]],
                 ["rna", "--input", dna, "--output", tmp_path / "bad.h5", "--model", test_models["dnabert"]],
                 ["dnabert", "--input", dna, "--output", tmp_path / "bad.h5", "--model", tmp_path / "nowhere"],
                 ["dnabert", "--input", dna, "--output", tmp_path / "bad.h5", "--precision", "fp8"],
                 ["dnabert", "--input", dna, "--output", tmp_path / "bad.h5", "--batch_tokens", "0"]):
        result = run_tool("virnucpro-extract", *args, check=False)
        assert result.returncode == (2 if args[0] == "rna" else 1)  # 2: a command-line error, found before any work
        assert result.stderr.strip().splitlines()[-1].startswith("virnucpro-extract: error: "), result.stderr
    assert not (tmp_path / "bad.h5").exists()


def test_hub_id_is_never_fetched_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(UserError, match="cannot get it from the Hugging Face hub or its cache"):
        resolve_model("dnabert", "zhihan1996/DNABERT-S")


def test_dna_given_to_esm_is_warned_about(tmp_path, test_models):
    fasta = tmp_path / "frames.nucleotide.fa"
    fasta.write_text(">a\nACGTACGTTTGA\n>b\nGGGCCCAAATTN\n")
    result = run_tool("virnucpro-extract", "esm", "--input", fasta, "--output", tmp_path / "x.h5",
                      "--model", test_models["esm"], "--device", "cpu")
    assert "is this DNA given to ESM-2" in result.stderr
    protein = tmp_path / "frames.protein.fa"
    protein.write_text(">a\nMKVLAG\n")
    quiet = run_tool("virnucpro-extract", "esm", "--input", protein, "--output", tmp_path / "y.h5",
                     "--model", test_models["esm"], "--device", "cpu")
    assert "is this DNA" not in quiet.stderr


def test_revision_of_a_fetched_folder_is_its_recorded_commit(tmp_path, test_models):
    import json
    import shutil

    from virnucpro.stages.extract import resolve_model

    folder = tmp_path / "dnabert"
    shutil.copytree(test_models["dnabert"], folder)
    _, digest = resolve_model("dnabert", str(folder))
    assert digest.startswith("sha256:")
    (folder / "virnucpro_model.json").write_text(json.dumps({"model": "zhihan1996/DNABERT-S", "commit": "abc123"}))
    assert resolve_model("dnabert", str(folder)) == (str(folder), "abc123")


HOLD_AFTER_FIRST_BLOCK = textwrap.dedent("""
    import sys
    from virnucpro import embeddings_h5
    from virnucpro.stages.extract import extract_embeddings

    write_block = embeddings_h5.PartialEmbeddings.write_block

    def write_then_wait(self, start, embeddings):
        write_block(self, start, embeddings)
        if start == 0:
            print("first block written", flush=True)
            sys.stdin.readline()  # held here while the second run tries the same output

    embeddings_h5.PartialEmbeddings.write_block = write_then_wait
    extract_embeddings("dnabert", sys.argv[1], sys.argv[2], model=sys.argv[3], device="cpu", batch_tokens=500, block_size=8)
""")


def test_a_second_run_on_the_same_output_stops_at_once_and_spares_the_first(tmp_path, test_models):
    model = test_models["dnabert"]
    alone = tmp_path / "alone.h5"
    extract_embeddings("dnabert", DNA, alone, model=model, device="cpu", batch_tokens=500, block_size=8)
    output = tmp_path / "shared.h5"
    command, env = python_script(HOLD_AFTER_FIRST_BLOCK, DNA, output, model)
    first = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        assert first.stdout.readline().strip() == "first block written"
        second = run_tool("virnucpro-extract", "dnabert", "--input", DNA, "--output", output, "--model", model,
                          "--device", "cpu", "--batch_tokens", 500, "--block_size", 8, check=False)
        assert second.returncode == 1
        last = second.stderr.strip().splitlines()[-1]
        assert last.startswith("virnucpro-extract: error: ") and "being written by another run" in last, second.stderr
        assert "Traceback" not in second.stderr
        with h5py.File(partial_path(output), "r", locking=False) as handle:  # the first run's work is untouched
            assert handle.attrs["blocks_done"] == 1
        first.stdin.write("go on\n")
        first.stdin.flush()
        _, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr
    ids_a, emb_a, _ = read_embeddings(alone)
    ids_b, emb_b, _ = read_embeddings(output)
    assert ids_a == ids_b
    np.testing.assert_array_equal(emb_a, emb_b)
    assert sorted(files_in(tmp_path)) == ["alone.h5", "shared.h5"]


def _failing_pooled(monkeypatch, fail):
    """Make DNABERT's pooled forward raise or corrupt what `fail(ids)` says, as a device would."""
    from virnucpro.models import dnabert

    real = dnabert.pooled

    def pooled(model, ids, mask):
        return fail(ids) or real(model, ids, mask)

    monkeypatch.setattr(dnabert, "pooled", pooled)
    return real


def test_out_of_memory_splits_the_batch_and_gives_the_same_vectors(tmp_path, test_models, dna, monkeypatch, caplog):
    import torch

    expected = tmp_path / "expected.h5"
    extract_embeddings("dnabert", dna, expected, model=test_models["dnabert"], device="cpu", batch_tokens=2000)
    sizes = []

    def oom_above_two(ids):
        sizes.append(len(ids))
        if len(ids) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    _failing_pooled(monkeypatch, oom_above_two)
    output = tmp_path / "split.h5"
    with caplog.at_level("WARNING"):
        extract_embeddings("dnabert", dna, output, model=test_models["dnabert"], device="cpu", batch_tokens=2000)
    assert max(sizes) > 2 and "out of memory" in caplog.text and "splitting it into" in caplog.text
    ids_a, emb_a, _ = read_embeddings(expected)
    ids_b, emb_b, _ = read_embeddings(output)
    assert ids_a == ids_b
    np.testing.assert_allclose(emb_a, emb_b, atol=1e-5, rtol=0)

    def always(ids):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    _failing_pooled(monkeypatch, always)
    with pytest.raises(UserError, match="out of memory on cpu for a single sequence"):
        extract_embeddings("dnabert", dna, tmp_path / "never.h5", model=test_models["dnabert"], device="cpu")
    assert not (tmp_path / "never.h5").exists()


def test_non_finite_embeddings_stop_the_tool_naming_the_sequences(tmp_path, test_models, dna, monkeypatch):
    import torch

    names = [name for name, _ in read_fasta(dna)]
    real = _failing_pooled(monkeypatch, lambda ids: None)
    from virnucpro.models import dnabert

    def nan_for_longest(model, ids, mask):
        vectors = real(model, ids, mask)
        lengths = mask.sum(1)
        return torch.where((lengths == lengths.max())[:, None] & (lengths.max() > 100), torch.nan, vectors)

    monkeypatch.setattr(dnabert, "pooled", nan_for_longest)
    output = tmp_path / "nan.h5"
    with pytest.raises(UserError, match=r"NaN or Inf for \d+ sequence\(s\) \(.+\)") as error:
        extract_embeddings("dnabert", dna, output, model=test_models["dnabert"], device="cpu", batch_tokens=400)
    assert any(name in str(error.value) for name in names)
    assert not output.exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dnabert", "esm"])
def test_compiled_equals_eager(tmp_path, test_models, proteins, kind, monkeypatch):
    """Real Inductor on the CPU (DNABERT-S compiled runs FlexAttention, eager the unpadded SDPA path)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    eager, compiled = tmp_path / "eager.h5", tmp_path / "compiled.h5"
    source = inputs(kind, proteins)
    extract_embeddings(kind, source, eager, model=test_models[kind], device="cpu", compile="off", batch_tokens=600)
    extract_embeddings(kind, source, compiled, model=test_models[kind], device="cpu", compile="on", batch_tokens=600)
    assert cosines(read_embeddings(eager)[1], read_embeddings(compiled)[1]).min() >= 0.99999


def test_precision_and_compile_auto_follow_the_device():
    from virnucpro.engine.devices import resolve_compile, resolve_precision

    assert resolve_precision("auto", "cpu") == "fp32" and resolve_precision("auto", "cuda") == "bf16"
    assert resolve_precision("fp16", "cpu") == "fp16"
    assert resolve_compile("auto", "cpu") is False and resolve_compile("auto", "cuda") is True
    assert resolve_compile("off", "cuda") is False and resolve_compile(True, "cpu") is True
    with pytest.raises(UserError, match="--compile maybe"):
        resolve_compile("maybe", "cpu")


def test_one_embedder_embeds_several_files_with_one_model_load(tmp_path, test_models, dna, proteins, monkeypatch):
    from virnucpro.engine import embedder as engine
    from virnucpro.stages.extract import Embedder

    loads = []
    real = engine.load_runner
    monkeypatch.setattr(engine, "load_runner", lambda *args: loads.append(args) or real(*args))
    with Embedder("dnabert", model=test_models["dnabert"], device="cpu", threads=1) as embedder:
        first = embedder.embed(dna, tmp_path / "a.h5")
        second = embedder.embed(DNA, tmp_path / "b.h5")
    assert len(loads) == 1
    single = tmp_path / "single.h5"
    extract_embeddings("dnabert", DNA, single, model=test_models["dnabert"], device="cpu")
    # other thread counts (1 here, all CPUs there) round differently: equal within fp32 noise, not bitwise
    np.testing.assert_allclose(read_embeddings(second)[1], read_embeddings(single)[1], rtol=0, atol=FP32_ATOL)
    assert len(read_embeddings(first)[0]) == 12


def test_embedder_workers_load_the_model_once_for_several_files(tmp_path, test_models, dna):
    from virnucpro.stages.extract import Embedder

    def worker_pids(embedder):  # one single-process pool per device: its worker's pid
        return [pool.submit(os.getpid).result() for pool in embedder.engine.pools]

    with Embedder("dnabert", model=test_models["dnabert"], device="cpu", threads=2, workers=2) as embedder:
        first = embedder.embed(dna, tmp_path / "a.h5")
        workers = worker_pids(embedder)
        second = embedder.embed(DNA, tmp_path / "b.h5")
        assert worker_pids(embedder) == workers and len(set(workers)) == 2  # the same processes, one load each
    assert embedder.engine.pools is None
    single = tmp_path / "single.h5"
    extract_embeddings("dnabert", DNA, single, model=test_models["dnabert"], device="cpu")
    np.testing.assert_allclose(read_embeddings(second)[1], read_embeddings(single)[1], rtol=1e-5, atol=1e-6)
    assert read_embeddings(first)[0] == read_embeddings(extract_embeddings(
        "dnabert", dna, tmp_path / "c.h5", model=test_models["dnabert"], device="cpu"))[0]


def test_threads_option_sets_torch_threads(tmp_path, test_models, dna):
    import torch

    before = torch.get_num_threads()
    try:
        extract_embeddings("dnabert", dna, tmp_path / "t.h5", model=test_models["dnabert"], device="cpu", threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(UserError, match="--threads 0: must be a positive whole number"):
        extract_embeddings("dnabert", dna, tmp_path / "u.h5", model=test_models["dnabert"], device="cpu", threads=0)


def test_pool_workers_leave_ctrl_c_to_their_parent():
    """Ctrl-C reaches every process of the group: workers ignore it (no worker tracebacks)."""
    import signal

    from virnucpro.parallel import ordered_map

    handlers = list(ordered_map(signal.getsignal, [signal.SIGINT] * 4, 2))
    assert handlers == [signal.SIG_IGN] * 4


def test_esm_cap_is_part_of_the_output_identity(tmp_path, test_models):
    """A long protein's vector depends on --max_residues, so an output made with another cap is not reused."""
    fasta = tmp_path / "long.faa"
    fasta.write_text(">long\n" + "MKV" * 30 + "\n>short\nMKVLA\n")
    output = tmp_path / "long.h5"
    extract_embeddings("esm", fasta, output, model=test_models["esm"], device="cpu", max_residues=50)
    assert "cut to 50" in read_embeddings(output)[2]["pooling"]
    with pytest.raises(UserError, match="pooling differ"):
        extract_embeddings("esm", fasta, output, model=test_models["esm"], device="cpu")


def test_a_writer_failure_while_its_queue_is_full_is_raised_not_hung():
    """The writer thread fails (disk full) while the main thread has filled its queue: closing
    must raise the writer's error; it used to block forever on the full queue."""
    import threading
    import time

    from virnucpro.engine.streaming import Batch, Writer

    class FailingPartial:
        written = 0

        def write_block(self, start, window):
            time.sleep(0.2)
            self.written += 1
            if self.written == 2:
                raise OSError(28, "No space left on device")

    writer = Writer(FailingPartial(), [f"s{i}" for i in range(8)], 4)
    outcome = []

    def feed_and_close():
        try:
            for start in range(8):
                writer.put(Batch(start, 1, np.array([0]), True, None, None, 1), np.zeros((1, 4), np.float32))
            writer.close()
            outcome.append("closed")
        except OSError as err:
            outcome.append(err.errno)

    thread = threading.Thread(target=feed_and_close, daemon=True)
    thread.start()
    thread.join(60)  # a hang guard, not a timing assertion: the work itself takes about 0.4 s
    assert outcome == [28]


def test_a_batch_size_that_ran_out_of_memory_is_split_up_front_afterwards():
    """After one out-of-memory split, later batches as large are split before they are tried,
    so a run does not fail (and warn) again on every batch; results are unchanged."""
    import torch

    from virnucpro.engine.pooling import OomSplitter

    raised = []

    def forward(ids, mask):
        if len(ids) > 2:
            raised.append(len(ids))
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return ids.float().sum(1, keepdim=True) * mask.float().sum(1, keepdim=True)

    splitter = OomSplitter(forward, "cpu")
    for _ in range(3):
        ids = torch.arange(8 * 16).reshape(8, 16)
        mask = torch.ones_like(ids)
        expected = ids.float().sum(1, keepdim=True) * 16
        assert torch.equal(splitter(ids, mask), expected)
    assert raised == [8, 4]  # only the first batch ever ran out of memory


# ---------------------------------------------------------------- compile that steps aside, one graph


def _tiny(kind, folder):
    from virnucpro.models import dnabert, esm

    return (dnabert.load_dnabert(folder), dnabert.pooled) if kind == "dnabert" else (esm.load_esm(folder), esm.pooled)


def _shapes_batches(pad_id, rng=np.random.default_rng(3)):
    """Padded batches of several batch sizes (one included) and lengths, some rows padded."""
    from virnucpro.engine.pooling import pad_batch

    for size, longest in [(3, 24), (1, 40), (5, 8), (2, 64), (1, 16), (4, 48)]:
        tokens = [rng.integers(4, 20, size=max(3, longest - 5 * row)) for row in range(size)]
        yield pad_batch(tokens, pad_id, multiple=8)


@pytest.mark.parametrize("kind", ["dnabert", "esm"])
def test_one_compiled_graph_serves_every_batch_size_and_length(test_models, kind):
    """Dynamic shapes from the first call: no recompile for other lengths or batch sizes, one included."""
    import torch

    from virnucpro.engine.pooling import CompiledOrEager

    model, pooled = _tiny(kind, test_models[kind])
    graphs = []

    def counting_backend(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    compiled = CompiledOrEager(model, backend=counting_backend)
    torch._dynamo.reset()
    with torch.inference_mode():
        for ids, mask in _shapes_batches(1 if kind == "esm" else 3):
            got, expected = pooled(compiled, ids, mask), pooled(model, ids, mask)
            assert cosines(got.numpy(), expected.numpy()).min() >= 0.99999
    assert compiled.compiled is not None and len(graphs) == 1


def test_a_compiler_that_fails_at_the_first_call_steps_aside_with_one_warning(test_models, caplog):
    """Inductor compiles at the first call: a failure there (no C compiler, a Triton error) means
    eager from then on, with identical results and one warning line for the whole run."""
    import torch

    from virnucpro.engine.pooling import CompiledOrEager

    model, pooled = _tiny("esm", test_models["esm"])

    def broken_backend(graph, example_inputs):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nsecond line of the story")

    compiled = CompiledOrEager(model, backend=broken_backend)
    torch._dynamo.reset()
    with caplog.at_level("WARNING"), torch.inference_mode():
        for ids, mask in _shapes_batches(1):
            assert torch.equal(pooled(compiled, ids, mask), pooled(model, ids, mask))
    warnings = [r.getMessage() for r in caplog.records if "torch.compile failed" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0] and "No working C++ compiler" in warnings[0]
    assert compiled.compiled is None


def test_a_compile_that_fails_when_set_up_steps_aside(test_models, dna, tmp_path, monkeypatch, caplog):
    import torch

    def no_compile(*args, **kwargs):
        raise RuntimeError("torch.compile is not supported on this Python")

    eager = tmp_path / "eager.h5"
    extract_embeddings("dnabert", dna, eager, model=test_models["dnabert"], device="cpu", compile="off")
    monkeypatch.setattr(torch, "compile", no_compile)
    with caplog.at_level("WARNING"):
        output = extract_embeddings("dnabert", dna, tmp_path / "c.h5", model=test_models["dnabert"], device="cpu",
                                    compile="on")
    assert caplog.text.count("torch.compile failed") == 1
    np.testing.assert_array_equal(read_embeddings(output)[1], read_embeddings(eager)[1])


@pytest.mark.slow
def test_no_c_compiler_is_one_warning_line_and_the_eager_result(tmp_path, test_models, proteins):
    """The CUDA image's old failure, on a CPU: Inductor finds no C++ compiler at the first batch."""
    common = ["esm", "--input", proteins, "--model", test_models["esm"], "--device", "cpu", "--threads", 1]
    run_tool("virnucpro-extract", *common, "--output", tmp_path / "eager.h5", "--compile", "off")
    no_compiler = dict(CXX=str(tmp_path / "no-such-c++"), CC=str(tmp_path / "no-such-cc"),
                       TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"))  # a fresh cache: nothing compiled before
    result = run_tool("virnucpro-extract", *common, "--output", tmp_path / "c.h5", "--compile", "on", env=no_compiler)
    lines = [line for line in result.stderr.splitlines() if "compile" in line.lower() and "INFO" not in line]
    assert len(lines) == 1 and "torch.compile failed" in lines[0] and "running eager" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    np.testing.assert_array_equal(read_embeddings(tmp_path / "c.h5")[1], read_embeddings(tmp_path / "eager.h5")[1])


def test_a_cache_folder_the_user_set_is_kept(monkeypatch, tmp_path):
    from virnucpro.engine.pooling import writable_compile_caches

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "mine-too"))
    monkeypatch.setenv("HOME", "/")
    writable_compile_caches()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")
    assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path / "mine-too")


def _unset(monkeypatch, *names):
    for name in names:  # set first, so that the test's end restores "unset"
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def test_unwritable_default_caches_move_to_the_temporary_folder(monkeypatch):
    """A container run as -u uid:gid has HOME=/ (Triton's ~/.triton is not writable there); a
    read-only temporary folder does the same to Inductor's default cache."""
    import tempfile

    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    from virnucpro.engine import pooling

    _unset(monkeypatch, "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "TRITON_HOME")
    monkeypatch.setenv("HOME", "/")
    unwritable = ("/.triton", default_cache_dir())
    monkeypatch.setattr(pooling, "_can_write", lambda folder: not folder.startswith(unwritable))
    pooling.writable_compile_caches()
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        assert os.environ[name].startswith(os.path.join(tempfile.gettempdir(), "virnucpro-compile-cache-")), name
    assert pooling._can_write(os.environ["TRITON_CACHE_DIR"])


def test_writable_default_caches_are_left_alone(monkeypatch):
    from virnucpro.engine import pooling

    _unset(monkeypatch, "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "TRITON_HOME")
    monkeypatch.setattr(pooling, "_can_write", lambda folder: True)
    pooling.writable_compile_caches()
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ and "TRITON_CACHE_DIR" not in os.environ


# ---------------------------------------------------------------- reproducibility


class _Stop(Exception):
    pass


def test_a_resumed_run_splits_batches_as_the_stopped_run_did(tmp_path, test_models, dna, monkeypatch):
    """The out-of-memory split size is saved with each block of the partial file: a resumed run
    goes on splitting as the first run did from there (it does not run out of memory again first)."""
    import torch

    attempts = []

    def oom_above_two(ids):
        attempts.append(tuple(ids.shape))
        if len(ids) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    _failing_pooled(monkeypatch, oom_above_two)
    settings = dict(model=test_models["dnabert"], device="cpu", batch_tokens=2000, block_size=4)
    whole = tmp_path / "whole.h5"
    extract_embeddings("dnabert", dna, whole, **settings)
    uninterrupted = list(attempts)

    write_block = PartialEmbeddings.write_block

    def write_one_then_stop(self, start, embeddings):
        write_block(self, start, embeddings)
        raise _Stop

    output = tmp_path / "resumed.h5"
    monkeypatch.setattr(PartialEmbeddings, "write_block", write_one_then_stop)
    with pytest.raises(_Stop):
        extract_embeddings("dnabert", dna, output, **settings)
    with h5py.File(partial_path(output), "r") as handle:
        assert handle.attrs["blocks_done"] == 1 and handle.attrs["oom_split_tokens"] > 0
    monkeypatch.setattr(PartialEmbeddings, "write_block", write_block)
    attempts.clear()
    extract_embeddings("dnabert", dna, output, **settings)
    assert 0 < len(attempts) < len(uninterrupted) and attempts == uninterrupted[-len(attempts):]
    np.testing.assert_array_equal(read_embeddings(output)[1], read_embeddings(whole)[1])


HOG = "import time\nend = time.monotonic() + 600\nwhile time.monotonic() < end:\n    pass\n"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dnabert", "esm"])
def test_the_same_command_gives_the_same_bits_beside_a_cpu_hog(tmp_path, test_models, proteins, kind):
    """CPU, fp32, the same command: bit-identical HDF5 contents whatever else the machine runs."""
    command = [kind, "--input", inputs(kind, proteins), "--model", test_models[kind], "--device", "cpu",
               "--batch_tokens", 600, "--block_size", 16]
    run_tool("virnucpro-extract", *command, "--output", tmp_path / "quiet.h5")
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(2)]  # bounded: each stops after 10 minutes
    try:
        run_tool("virnucpro-extract", *command, "--output", tmp_path / "busy.h5")
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    with h5py.File(tmp_path / "quiet.h5", "r") as quiet, h5py.File(tmp_path / "busy.h5", "r") as busy:
        assert list(quiet["ids"][:]) == list(busy["ids"][:])
        assert quiet["embeddings"][:].tobytes() == busy["embeddings"][:].tobytes()


@pytest.mark.parametrize("kind", ["dnabert", "esm"])
def test_other_batching_is_equal_within_the_stated_tolerance(tmp_path, test_models, proteins, kind):
    """Other --batch_tokens / --block_size change which sequences share a batch, hence the rounding:
    equal within FP32_ATOL (and cosine >= 0.99999), not bit for bit."""
    source = inputs(kind, proteins)
    small = extract_embeddings(kind, source, tmp_path / "small.h5", model=test_models[kind], device="cpu",
                               batch_tokens=200, block_size=5)
    large = extract_embeddings(kind, source, tmp_path / "large.h5", model=test_models[kind], device="cpu",
                               batch_tokens=8192)
    a, b = read_embeddings(small)[1], read_embeddings(large)[1]
    np.testing.assert_allclose(a, b, rtol=0, atol=FP32_ATOL)
    assert cosines(a, b).min() >= 0.99999


# ---------------------------------------------------------------- the input is read twice


def test_the_second_reading_repeats_no_warning(tmp_path, test_models, caplog):
    """The input is read twice (ids and digest first, then the sequences in windows): each warning
    about it (an empty record, RNA read as DNA) comes once, from the first reading."""
    fasta = tmp_path / "rna.fa"
    fasta.write_text(">empty\n>rna1\nACGUACGUAC\n>dna\nACGTACGTAC\n>rna2\nUUUUACGA\n")
    with caplog.at_level("WARNING"):
        extract_embeddings("dnabert", fasta, tmp_path / "rna.h5", model=test_models["dnabert"], device="cpu")
    messages = [record.getMessage() for record in caplog.records]
    assert sum("has an empty sequence" in message for message in messages) == 1, messages
    assert sum("is RNA (has U)" in message for message in messages) == 1, messages
    assert sum("2 RNA records read with U as T" in message for message in messages) == 1, messages
    assert read_embeddings(tmp_path / "rna.h5")[0] == ["rna1", "dna", "rna2"]


def test_an_input_changed_between_its_two_readings_is_one_line_and_nothing_is_published(tmp_path, test_models,
                                                                                         monkeypatch):
    from virnucpro.stages import extract

    fasta = tmp_path / "in.fa"
    fasta.write_text(">a\nACGTACGTAC\n>b\nGGGTACGTAC\n")
    real = extract.scan_input

    def scan_then_change(kind, path):  # the file is rewritten after the first reading, before the second
        found = real(kind, path)
        fasta.write_text(">a\nACGTACGTAC\n>b\nTTTTTTTTTT\n")
        return found

    monkeypatch.setattr(extract, "scan_input", scan_then_change)
    output = tmp_path / "out.h5"
    with pytest.raises(UserError, match="changed while it was read") as raised:
        extract_embeddings("dnabert", fasta, output, model=test_models["dnabert"], device="cpu")
    assert "\n" not in str(raised.value)
    assert not output.exists()
