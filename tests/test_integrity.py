"""Nothing lost, nothing silently wrong (issue 16), with real subprocesses: ids of any shape
round-trip through every table; locks live in the tool's own namespace and never touch a user's
file; outputs are verified before reuse; an input that changes while it is read is caught;
CR-only line ends are named; worker counts are capped."""

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys

import h5py
import numpy as np
import pytest

from helpers import (BIN, FINAL, REPO, files_in, one_error_line, predict_args, read, run_as, run_tool, start,
                     stop_while_holding, write_random_dna_fasta)
from virnucpro.tsv import MAX_ID_LENGTH

SCAFFOLDS = os.path.join(REPO, "examples", "metagenome_scaffolds.fa")
LONG_ID = "L" * MAX_ID_LENGTH
#: The issue's repro (ids `"a`, `b"`, `"q1"`) and more shapes: unicode with a unicode line
#: separator (not a line end in a TSV), backslashes, the longest id accepted.
ODD_IDS = ('"a', 'b"', '"q1"', "vírus\u2028α|β\\x", LONG_ID)


def first_scaffold():
    with open(SCAFFOLDS) as handle:
        lines = handle.read().split(">")[1].splitlines()
    return "".join(lines[1:])


@pytest.fixture(scope="module")
def odd_fasta(tmp_path_factory):
    seq = first_scaffold()
    path = tmp_path_factory.mktemp("odd") / "q.fa"
    records = [('"a', "N" * 600), ('b"', "N" * 600), ('"q1"', seq), (ODD_IDS[3], seq[:1200]), (LONG_ID, seq[1200:2000])]
    path.write_text("".join(f">{name} a description\n{sequence}\n" for name, sequence in records))
    return str(path)


@pytest.fixture(scope="module")
def odd_run(test_models, odd_fasta, tmp_path_factory):
    outdir = tmp_path_factory.mktemp("odd_run") / "run"
    result = run_tool("virnucpro-predict", *predict_args(test_models, odd_fasta, outdir))
    return outdir, result


def rows(path):
    with open(path, encoding="utf-8", newline="\n") as handle:
        return [line[:-1].split("\t") for line in handle]


# ---- 1. ids of any shape ---------------------------------------------------------------------------


def test_ids_of_any_shape_round_trip_through_every_table(odd_run):
    outdir, result = odd_run
    assert "5 sequences" in result.stderr, result.stderr
    summary = rows(outdir / "sequence_summary.tsv")
    assert [row[0] for row in summary[1:]] == list(ODD_IDS)
    assert all(len(row) == 8 for row in summary)
    assert [row[-1] for row in summary[1:3]] == ["unscored", "unscored"]  # all N: no stop-free frame
    assert summary[3][-1] != "unscored"  # `"q1"`: a real scaffold, scored
    table = rows(outdir / "1_translate" / "q.sequences.tsv")
    assert [row[0] for row in table[1:]] == list(ODD_IDS) and all(len(row) == 3 for row in table)
    frames = [row[0] for row in rows(outdir / "prediction_results.tsv")[1:]]
    assert '"q1"' in {frame.rpartition("_chunk_")[0] for frame in frames} <= set(ODD_IDS[2:])
    chunks = [row[0] for row in rows(outdir / "prediction_results_highestscore.tsv")[1:]]
    assert chunks == sorted({frame[:-2] for frame in frames})
    page = read(outdir / "report.html")
    assert "&quot;q1&quot;" in page


def test_classify_alone_reads_the_same_tables(odd_run, test_models, tmp_path):
    outdir, _ = odd_run
    run_tool("virnucpro-classify", "--features", outdir / "4_merge" / "q.features.h5", "--classifier",
             test_models["classifier"], "--outdir", tmp_path, "--sequences", outdir / "1_translate" / "q.sequences.tsv")
    for name in FINAL:
        assert read(tmp_path / name) == read(outdir / name), name


def test_an_id_over_the_limit_is_refused_at_input(tmp_path):
    fasta = tmp_path / "long.fa"
    fasta.write_text(f">ok\nACGTACGT\n>{'x' * (MAX_ID_LENGTH + 1)}\nACGTACGT\n")
    result = run_tool("virnucpro-translate", "--chunk_size", 500, "--input", fasta, "--outdir", tmp_path / "out", check=False)
    one_error_line(result, "virnucpro-translate", "long.fa", "record 2", f"at most {MAX_ID_LENGTH}")
    assert files_in(tmp_path / "out") == []


def test_an_id_with_a_tab_from_a_features_file_is_one_line(tmp_path, test_models):
    features = tmp_path / "x.features.h5"
    with h5py.File(features, "w") as handle:
        handle.create_dataset("ids", data=["a\tb_chunk_1F1"], dtype=h5py.string_dtype("utf-8"))
        handle.create_dataset("features", data=np.zeros((1, 3328), np.float32))
    result = run_tool("virnucpro-classify", "--features", features, "--classifier", test_models["classifier"],
                      "--outdir", tmp_path / "out", check=False)
    one_error_line(result, "virnucpro-classify", "holds a tab")
    assert not [name for name in files_in(tmp_path / "out") if name.endswith(".tsv")]


def test_cr_only_line_ends_are_named(tmp_path):
    fasta = tmp_path / "mac.fa"
    fasta.write_bytes(b">a\rACGTACGTAAAC\r>b\rACGTTTGACCA\r")
    result = run_tool("virnucpro-translate", "--chunk_size", 500, "--input", fasta, "--outdir", tmp_path / "out", check=False)
    one_error_line(result, "virnucpro-translate", "mac.fa", "CR-only (classic Mac) line ends")


# ---- 2. locks in the tool's own namespace ---------------------------------------------------------


def copy_models(test_models, folder):
    """The test models where an unprivileged user can read them."""
    shutil.copytree(test_models["dnabert"], os.path.join(folder, "dnabert"))
    shutil.copytree(test_models["esm"], os.path.join(folder, "esm"))
    shutil.copy(test_models["classifier"], os.path.join(folder, "classifier.pth"))
    return {"dnabert": os.path.join(folder, "dnabert"), "esm": os.path.join(folder, "esm"),
            "classifier": os.path.join(folder, "classifier.pth")}


def test_users_lock_files_survive_and_a_read_only_parent_works(test_models, small_fasta, as_nobody):
    """`uv.lock` beside --outdir uv, `classify.lock`, `report.html.lock` and `<shard>.dnabert.h5.lock`
    inside it are the user's: left as they were. The parent of --outdir cannot be written (as
    $HOME's parent): nothing is written there, and the run works."""
    folder, prefix = as_nobody
    parent = os.path.join(folder, "home")
    outdir = os.path.join(parent, "uv")
    os.makedirs(os.path.join(outdir, "2_dnabert"))
    users = {os.path.join(parent, "uv.lock"): "data", os.path.join(outdir, "classify.lock"): "mine",
             os.path.join(outdir, "report.html.lock"): "mine too",
             os.path.join(outdir, "2_dnabert", "small.dnabert.h5.lock"): "and mine"}
    for path, text in users.items():
        with open(path, "w") as handle:
            handle.write(text)
    shutil.copy(small_fasta, os.path.join(folder, "small.fa"))
    models = copy_models(test_models, folder)
    for root, dirs, names in os.walk(folder):
        for name in dirs + names:
            os.chmod(os.path.join(root, name), 0o777 if name in dirs else 0o666)
    os.chmod(parent, 0o555)  # nobody (or a non-root user) cannot write here
    try:
        result = run_as(prefix, "virnucpro-predict", *predict_args(models, os.path.join(folder, "small.fa"), outdir))
    finally:
        os.chmod(parent, 0o755)
    assert result.returncode == 0, result.stderr
    for path, text in users.items():
        assert read(path) == text, path
    assert files_in(parent) == ["uv", "uv.lock"]
    for name in FINAL:
        assert os.path.isfile(os.path.join(outdir, name))
    assert not [name for root, _, names in os.walk(outdir) for name in names if "virnucpro-lock" in name
                or name == ".virnucpro.lock"]


def translate_lock(tmp_path):
    """(input, outdir, the lock translate takes for it) of a one-record translation."""
    fasta = tmp_path / "x.fa"
    fasta.write_text(">a\nACGTACGTAAACGT\n")
    out = tmp_path / "out"
    out.mkdir()
    return fasta, out, out / ".x.translate.json.virnucpro-lock"


def test_a_file_under_the_lock_name_without_the_signature_is_left_alone(tmp_path):
    fasta, out, lock = translate_lock(tmp_path)
    lock.write_text("someone else's notes\n")
    result = run_tool("virnucpro-translate", "--chunk_size", 500, "--input", fasta, "--outdir", out, check=False)
    one_error_line(result, "virnucpro-translate", "not a virnucpro lock", "left alone")
    assert read(lock) == "someone else's notes\n"


def test_a_lock_left_on_another_host_is_refused_unless_taken_over(tmp_path):
    fasta, out, lock = translate_lock(tmp_path)
    holder = dict(pid=1, host=socket.gethostname() + "-elsewhere", started="2026-01-01 00:00:00", command="translate")
    lock.write_text("virnucpro-lock v1\n" + json.dumps(holder) + "\n")
    result = run_tool("virnucpro-translate", "--chunk_size", 500, "--input", fasta, "--outdir", out, check=False)
    one_error_line(result, "virnucpro-translate", "another host", holder["host"], "VIRNUCPRO_TAKE_OVER_LOCK=1")
    assert not os.path.exists(out / "x.nucleotide.fa")
    run_tool("virnucpro-translate", "--chunk_size", 500, "--input", fasta, "--outdir", out, env={"VIRNUCPRO_TAKE_OVER_LOCK": "1"})
    assert os.path.exists(out / "x.nucleotide.fa") and not lock.exists()


# ---- 3. outputs verified before reuse ----------------------------------------------------------------


def flip_a_base(path):
    lines = read(path).splitlines(keepends=True)
    lines[1] = ("C" if lines[1][0] != "C" else "G") + lines[1][1:]
    with open(path, "w") as handle:
        handle.writelines(lines)


def add_to_a_float(path, dataset):
    with h5py.File(path, "r+") as handle:
        handle[dataset][0, 0] += 0.5


def drop_last_row(path):
    lines = read(path).splitlines(keepends=True)
    with open(path, "w") as handle:
        handle.writelines(lines[:-1])


def truncate(path):
    with open(path, "r+") as handle:
        handle.truncate(os.path.getsize(path) // 2)


DAMAGE = {
    "1_translate/small.nucleotide.fa": flip_a_base,
    "1_translate/small.protein.fa": truncate,
    "3_esm/small.esm.h5": lambda path: add_to_a_float(path, "embeddings"),
    "4_merge/small.features.h5": lambda path: add_to_a_float(path, "features"),
    "sequence_summary.tsv": drop_last_row,
    "report.html": truncate,
}


@pytest.fixture(scope="module")
def clean_small_run(test_models, small_fasta, tmp_path_factory):
    outdir = tmp_path_factory.mktemp("clean_small") / "run"
    run_tool("virnucpro-predict", *predict_args(test_models, small_fasta, outdir))
    return outdir


@pytest.mark.parametrize("damaged", sorted(DAMAGE))
def test_a_damaged_output_is_remade_with_one_warning_never_reused(clean_small_run, test_models, small_fasta, tmp_path,
                                                                   damaged):
    outdir = tmp_path / "run"
    shutil.copytree(clean_small_run, outdir)
    before = open(outdir / damaged, "rb").read()
    DAMAGE[damaged](outdir / damaged)
    assert open(outdir / damaged, "rb").read() != before
    result = run_tool("virnucpro-predict", *predict_args(test_models, small_fasta, outdir))
    warnings = [line for line in result.stderr.splitlines() if "differ" in line and "vouches for" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0] and os.path.basename(damaged) in warnings[0], result.stderr
    for name in FINAL:
        assert read(outdir / name) == read(clean_small_run / name), name
    if damaged.endswith(".h5"):
        with h5py.File(outdir / damaged, "r") as remade, h5py.File(clean_small_run / damaged, "r") as clean:
            name = "features" if "features" in remade else "embeddings"
            assert np.array_equal(remade[name][()], clean[name][()])
    elif damaged == "report.html":  # made again (its times differ from the first run's)
        assert read(outdir / damaged).rstrip().endswith("</html>")
    else:
        assert open(outdir / damaged, "rb").read() == before
    again = run_tool("virnucpro-predict", *predict_args(test_models, small_fasta, outdir))
    assert "vouches for" not in again.stderr and again.stderr.count("already complete, skipped") == 6


# ---- 4. the input's identity is what was read ------------------------------------------------------


def append_a_record(path):
    with open(path, "a") as handle:
        handle.write(">late\nACGTACGTACGTAAACCCGGGTTT\n")


def change_and_put_back(path):
    with open(path, "r+b") as handle:
        handle.seek(-10, os.SEEK_END)
        tail = handle.read(4)
        handle.seek(-10, os.SEEK_END)
        handle.write(b"NNNN")
        handle.flush()
        handle.seek(-10, os.SEEK_END)
        handle.write(tail)


@pytest.mark.parametrize("change", [append_a_record, change_and_put_back])
def test_an_input_changed_while_it_is_read_is_one_line_and_nothing_is_published(tmp_path, change):
    fasta = write_random_dna_fasta(tmp_path / "big.fa", 200, 20_000, seed=3)
    outdir = tmp_path / "out"
    first = start("virnucpro-translate", "--chunk_size", 500, "--input", fasta, "--outdir", outdir, "--workers", 1)
    started = lambda: any(name.endswith(".tmp") for name in files_in(outdir))  # noqa: E731
    stop_while_holding(first, outdir / ".big.translate.json.virnucpro-lock", also=started)
    change(fasta)
    first.send_signal(signal.SIGCONT)
    assert first.wait() == 1
    stderr = first.stderr.read()
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "big.fa: changed while it was read" in errors[0], stderr
    assert files_in(outdir) == []


# ---- 5. resources ------------------------------------------------------------------------------------


def test_workers_are_capped_at_the_cpus_available(tmp_path, test_models):
    from virnucpro.parallel import available_cpus

    fasta = os.path.join(REPO, "examples", "metagenome_scaffolds.fa")
    many = run_tool("virnucpro-translate", "--chunk_size", 500, "--input", fasta, "--outdir", tmp_path / "many", "--workers", 64)
    assert f"--workers 64: only {available_cpus()} CPU(s) are available to this job" in many.stderr
    run_tool("virnucpro-translate", "--chunk_size", 500, "--input", fasta, "--outdir", tmp_path / "one", "--workers", 1)
    for name in ("metagenome_scaffolds.nucleotide.fa", "metagenome_scaffolds.protein.fa"):
        assert read(tmp_path / "many" / name) == read(tmp_path / "one" / name)
    frames = tmp_path / "many" / "metagenome_scaffolds.nucleotide.fa"
    result = run_tool("virnucpro-extract", "dnabert", "--input", frames, "--output", tmp_path / "x.h5",
                      "--model", test_models["dnabert"], "--device", "cpu", "--workers", 64)
    assert result.stderr.count("--workers 64: only") == 1, result.stderr


def test_model_workers_are_capped_by_the_memory_each_needs(monkeypatch, caplog):
    from virnucpro import parallel

    monkeypatch.setattr(parallel, "available_cpus", lambda: 16)
    monkeypatch.setattr(parallel, "available_memory", lambda: 40 << 30)
    assert parallel.cap_workers(8, memory_per_worker=12 << 30, what="esm worker") == 3
    assert "each esm worker needs about 12.0 GiB and 40.0 GiB are available; using 3" in caplog.text
    assert parallel.cap_workers(8, memory_per_worker=100 << 30) == 1
    assert parallel.cap_workers(4) == 4


def test_out_of_memory_is_one_line_naming_the_stage(test_models, small_fasta, tmp_path):
    """The issue's `ulimit -v 1500000`: a traceback before, one line naming the stage now."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (1_500_000 * 1024, 1_500_000 * 1024))

    result = subprocess.run([sys.executable, os.path.join(BIN, "virnucpro-predict"),
                             *map(str, predict_args(test_models, small_fasta, tmp_path / "run"))],
                            capture_output=True, text=True, preexec_fn=limit, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    if result.returncode == 0:
        pytest.skip("the run fits in 1.5 GB of address space on this machine")
    line = one_error_line(result, "virnucpro-predict", "out of memory in the", "stage", "--batch_tokens", "--workers")
    assert "Traceback" not in result.stderr, line
    assert not [name for name in FINAL if os.path.exists(tmp_path / "run" / name)]
