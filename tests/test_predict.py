"""virnucpro-predict end to end with the tiny test models: complete, resumable, a no-op when done."""

import glob
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from helpers import DATA, REPO, files_in, read_fasta_pairs, run_tool
from virnucpro.fasta import format_record, read_fasta

FINAL = ("prediction_results.tsv", "prediction_results_highestscore.tsv", "sequence_summary.tsv")
SUBSET = ("ssDNA-linear", "Caudo-1hallmarkgene", "RNA-linear")


def predict_args(test_models, fasta, outdir, *extra):
    return ["--input", fasta, "--outdir", outdir, "--chunk_size", 500, "--classifier", test_models["classifier"],
            "--dnabert_model", test_models["dnabert"], "--esm_model", test_models["esm"], "--device", "cpu", *extra]


def read(path):
    with open(path) as handle:
        return handle.read()


def all_files(folder):
    """Every file under a folder (hidden temporaries included) -> modification time in ns."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            found[os.path.relpath(path, folder)] = os.stat(path).st_mtime_ns
    return found


@pytest.fixture(scope="module")
def small_fasta(tmp_path_factory):
    """Three short genomes of 8seq.fa (with chunks that have no stop-free frame)."""
    records = dict(read_fasta(os.path.join(DATA, "virsorter2", "8seq.fa")))
    path = tmp_path_factory.mktemp("input") / "small.fa"
    path.write_text("".join(format_record(name, records[name]) for name in SUBSET))
    return str(path)


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
    for name in SUBSET:
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
    leftovers = [p for p in all_files(outdir) if p.endswith((".tmp", ".partial"))]
    assert leftovers == []


def test_other_settings_in_the_same_outdir_are_refused_unless_overwrite(clean_run, test_models, small_fasta, tmp_path):
    outdir = tmp_path / "run"
    run_tool("virnucpro-predict", *predict_args(test_models, small_fasta, outdir))
    refused = run_tool("virnucpro-predict", *predict_args(test_models, small_fasta, outdir, "--threshold", 0.9), check=False)
    assert refused.returncode == 1
    assert "other settings (threshold" in refused.stderr.strip().splitlines()[-1]
    run_tool("virnucpro-predict", *predict_args(test_models, small_fasta, outdir, "--threshold", 0.9, "--overwrite"))
    assert read(outdir / "prediction_results.tsv") == read(os.path.join(clean_run["outdir"], "prediction_results.tsv"))
    verdicts = [line.split("\t")[-1] for line in read(outdir / "sequence_summary.tsv").splitlines()[1:]]
    scores = [float(line.split("\t")[-2]) for line in read(outdir / "sequence_summary.tsv").splitlines()[1:]]
    assert verdicts == ["virus" if s >= 0.9 else "others" for s in scores]


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
    assert not os.path.exists(tmp_path / "out" / "2_dnabert")


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
