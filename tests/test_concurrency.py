"""Two runs on one output, with real processes: the second stops at once with one line naming the
holder, the first still finishes complete; a killed holder's lock and temporaries are taken over
by the next run, which deletes only the temporary names its tool makes."""

import os
import signal

import h5py
import numpy as np
import pytest

from helpers import (FINAL, files_in, predict_args, read, run_tool, start, stop_while_holding, write_embeddings,
                     write_random_dna_fasta)


def lock_of(output):
    """The hidden, tool-named lock beside an output file."""
    folder, name = os.path.split(str(output))
    return os.path.join(folder, f".{name}.virnucpro-lock")


def refused_line(result, holder):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "is being written by another run (pid %d on " % holder.pid in lines[-1], lines[-1]
    return lines[-1]


@pytest.fixture(scope="module")
def big_pair(tmp_path_factory):
    """An embedding pair large enough that merging it takes a noticeable moment."""
    folder = tmp_path_factory.mktemp("pair")
    n = 300_000
    ids = [f"c{i}_chunk_1F1" for i in range(n)]
    rng = np.random.default_rng(0)
    nucleotide = write_embeddings(folder / "s.nucleotide.h5", ids, rng.standard_normal((n, 48)), "dnabert")
    protein = write_embeddings(folder / "s.protein.h5", ids, rng.standard_normal((n, 48)), "esm")
    return nucleotide, protein


def test_merge_second_run_is_refused_and_a_killed_holder_is_taken_over(big_pair, tmp_path):
    nucleotide, protein = big_pair
    output = tmp_path / "out.features.h5"
    (tmp_path / ".notes.tmp").write_text("mine")
    (tmp_path / ".other.features.h5.abcd1234.tmp").write_text("another output's temporary")
    first = start("virnucpro-merge", "--nucleotide", nucleotide, "--protein", protein, "--output", output)
    own_temps = lambda: [n for n in files_in(tmp_path) if n.startswith(".out.features.h5.") and n.endswith(".tmp")]  # noqa: E731
    stop_while_holding(first, lock_of(output), also=lambda: bool(own_temps()))
    try:
        second = run_tool("virnucpro-merge", "--nucleotide", nucleotide, "--protein", protein, "--output", output,
                          check=False)
        refused_line(second, first)
        assert not output.exists() and own_temps()  # the live run's temporary file was left alone
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The holder died (kill -9): the next run takes its lock over and removes its own tool's temporaries only.
    run_tool("virnucpro-merge", "--nucleotide", nucleotide, "--protein", protein, "--output", output)
    assert own_temps() == [] and read(tmp_path / ".notes.tmp") == "mine"
    assert (tmp_path / ".other.features.h5.abcd1234.tmp").exists()
    assert not os.path.exists(lock_of(output))
    with h5py.File(output, "r") as handle:
        assert handle["features"].shape == (300_000, 96)


def test_merge_holder_that_finishes_publishes_a_complete_file(big_pair, tmp_path):
    nucleotide, protein = big_pair
    output = tmp_path / "out.features.h5"
    first = start("virnucpro-merge", "--nucleotide", nucleotide, "--protein", protein, "--output", output)
    stop_while_holding(first, lock_of(output))
    second = run_tool("virnucpro-merge", "--nucleotide", nucleotide, "--protein", protein, "--output", output, check=False)
    refused_line(second, first)
    first.send_signal(signal.SIGCONT)
    assert first.wait() == 0
    with h5py.File(output, "r") as handle:
        assert handle["features"].shape == (300_000, 96)
        with h5py.File(nucleotide, "r") as n:
            assert np.array_equal(handle["features"][-5:, :48], n["embeddings"][-5:])


def test_translate_rerun_after_a_kill_removes_only_its_own_temporaries(tmp_path):
    fasta = write_random_dna_fasta(tmp_path / "big.fa", 400, 50_000, seed=1)
    outdir = tmp_path / "out"
    outdir.mkdir()
    keep = [".notes.tmp", ".bigger.shard.abcd1234.tmp", "big.notes.fa"]
    for name in keep:
        (outdir / name).write_text("not the tool's")
    own = lambda: [n for n in files_in(outdir) if n.startswith((".big.shard.", ".big.sequences.tsv."))]  # noqa: E731
    first = start("virnucpro-translate", "--chunk_size", 500, "--input", fasta, "--outdir", outdir, "--workers", 1, "--shard_size", 1000)
    stop_while_holding(first, outdir / ".big.translate.json.virnucpro-lock", also=lambda: len(own()) >= 3)
    try:
        second = run_tool("virnucpro-translate", "--chunk_size", 500, "--input", fasta, "--outdir", outdir, check=False)
        refused_line(second, first)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert own()  # a kill -9 leaves them; the rerun cleans them
    run_tool("virnucpro-translate", "--chunk_size", 500, "--input", fasta, "--outdir", outdir, "--workers", 1, "--shard_size", 1000)
    assert own() == []
    for name in keep:
        assert read(outdir / name) == "not the tool's"
    assert "big.00001.protein.fa" in files_in(outdir) and ".big.translate.json.virnucpro-lock" not in files_in(outdir)


@pytest.mark.slow
def test_predict_requeued_while_the_old_copy_still_runs(test_models, small_fasta, tmp_path):
    """A requeued job starts while its old copy still runs: the new one stops at once and changes
    nothing; the old one finishes complete and exits 0."""
    outdir = tmp_path / "run"
    args = predict_args(test_models, small_fasta, outdir)
    first = start("virnucpro-predict", *args)
    stop_while_holding(first, outdir / ".virnucpro.lock", also=lambda: os.path.exists(outdir / "1_translate"))
    second = run_tool("virnucpro-predict", *args, check=False)
    line = refused_line(second, first)
    assert "prediction folder" in line and "virnucpro-predict" in line
    first.send_signal(signal.SIGCONT)
    assert first.wait() == 0
    for name in FINAL + ("report.html", "run.json"):
        assert os.path.isfile(outdir / name), name
    again = run_tool("virnucpro-predict", *args)
    assert again.stderr.count("already complete, skipped") == 6
