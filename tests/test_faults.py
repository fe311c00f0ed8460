"""Fault matrix: OS errors, full disks, unwritable places and signals give one line, the right exit
status, no traceback and no temporary files; RNA, mismatched classifiers and unsafe pickles are
never silent and never advise turning safe loading off."""

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from helpers import BIN, DATA, PATIENCE, files_in, one_error_line, run_as, run_tool, write_pickle_bomb

EIGHT = os.path.join(DATA, "virsorter2", "8seq.fa")
VANILLA = os.path.join(DATA, "vanilla")


def no_temporaries(folder):
    """Nothing hidden (our temporaries are `.name.XXXX.tmp`) and no lock left in a folder tree."""
    left = [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names
            if name.startswith(".") or name.endswith((".tmp", ".lock"))]
    assert not left, left


@contextlib.contextmanager
def mounted_tmpfs(folder, options):
    """A small tmpfs at `folder` (skips the test where mounting is not allowed)."""
    os.makedirs(folder, exist_ok=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mount.stderr.strip() or 'mount failed'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def merge_args(output):
    return ["--nucleotide", os.path.join(VANILLA, "with_orfs_DNABERT_S.pt"),
            "--protein", os.path.join(VANILLA, "with_orfs_ESM.pt"), "--output", output]


# ---- places that cannot be written ---------------------------------------------------------------


def test_output_under_a_plain_file(tmp_path):
    (tmp_path / "plain").write_text("a file, not a folder\n")
    result = run_tool("virnucpro-translate", "--chunk_size", 500, "--input", EIGHT, "--outdir", tmp_path / "plain" / "out", check=False)
    one_error_line(result, "virnucpro-translate", "plain")
    result = run_tool("virnucpro-merge", *merge_args(tmp_path / "plain" / "m.h5"), check=False)
    one_error_line(result, "virnucpro-merge", "plain", "is a file, not a folder")
    assert files_in(tmp_path) == ["plain"]


def test_output_that_is_a_folder(tmp_path):
    (tmp_path / "8seq.nucleotide.fa").mkdir()
    result = run_tool("virnucpro-translate", "--chunk_size", 500, "--input", EIGHT, "--outdir", tmp_path, "--workers", 1, check=False)
    one_error_line(result, "virnucpro-translate", str(tmp_path / "8seq.nucleotide.fa"), "is a folder")
    assert files_in(tmp_path) == ["8seq.nucleotide.fa"]
    (tmp_path / "m.h5").mkdir()
    for overwrite in ([], ["--overwrite"]):
        result = run_tool("virnucpro-merge", *merge_args(tmp_path / "m.h5"), *overwrite, check=False)
        one_error_line(result, "virnucpro-merge", str(tmp_path / "m.h5"), "is a folder")
    assert files_in(tmp_path) == ["8seq.nucleotide.fa", "m.h5"]
    assert files_in(tmp_path / "m.h5") == []


def test_read_only_place(tmp_path):
    with mounted_tmpfs(tmp_path / "ro", "ro,size=64k") as read_only:
        result = run_tool("virnucpro-translate", "--chunk_size", 500, "--input", EIGHT, "--outdir", read_only / "out", check=False)
        one_error_line(result, "virnucpro-translate", "ro/out", "Read-only file system")
        result = run_tool("virnucpro-merge", *merge_args(read_only / "m.h5"), check=False)
        one_error_line(result, "virnucpro-merge", "Read-only file system")
        assert files_in(read_only) == []


def test_unwritable_place_and_unreadable_input(as_nobody):
    folder, preexec = as_nobody
    shut = os.path.join(folder, "shut")
    os.mkdir(shut, 0o555)
    result = run_as(preexec, "virnucpro-translate", "--chunk_size", 500, "--input", EIGHT, "--outdir", os.path.join(shut, "out"))
    one_error_line(result, "virnucpro-translate", "shut/out", "Permission denied")
    secret = os.path.join(folder, "secret.fa")
    shutil.copy(EIGHT, secret)
    os.chmod(secret, 0)
    result = run_as(preexec, "virnucpro-translate", "--chunk_size", 500, "--input", secret, "--outdir", os.path.join(folder, "out"))
    one_error_line(result, "virnucpro-translate", "secret.fa", "Permission denied")
    os.chmod(shut, 0o755)
    assert files_in(shut) == []


# ---- full disk -------------------------------------------------------------------------------------


def test_full_disk_translate_and_merge(tmp_path):
    with mounted_tmpfs(tmp_path / "small", "size=256k") as small:
        for workers in (1, 2):
            result = run_tool("virnucpro-translate", "--chunk_size", 500, "--input", EIGHT, "--outdir", small / "out",
                              "--workers", workers, check=False)
            one_error_line(result, "virnucpro-translate", "No space left on device")
            no_temporaries(small)
            assert files_in(small / "out") == []
    with mounted_tmpfs(tmp_path / "tiny", "size=20k") as tiny:
        result = run_tool("virnucpro-merge", *merge_args(tiny / "m.h5"), check=False)
        one_error_line(result, "virnucpro-merge", str(tiny / "m.h5"), "No space left on device")
        assert files_in(tiny) == []


def test_full_disk_during_embedding_is_one_line_and_publishes_nothing(tmp_path, test_models):
    """HDF5 buffers writes and reports a failed one only when its object is freed; the tool must
    still stop with one line, exit 1, and never put a damaged file under the final name."""
    proteins = os.path.join(VANILLA, "test_with_orfs_identified_protein.faa")
    with mounted_tmpfs(tmp_path / "tiny", "size=20k") as tiny:
        result = run_tool("virnucpro-extract", "esm", "--input", proteins, "--output", tiny / "e.h5",
                          "--model", test_models["esm"], "--device", "cpu", check=False)
        one_error_line(result, "virnucpro-extract", "e.h5", "No space left on device")
        assert "e.h5" not in files_in(tiny)  # its resumable .partial may stay


# ---- signals -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def large_fasta(tmp_path_factory):
    """~100 Mbp: 60 renamed copies of 8seq.fa, so that a run lasts long enough to be signalled."""
    path = tmp_path_factory.mktemp("large") / "large.fa"
    with open(EIGHT) as handle:
        text = handle.read()
    with open(path, "w") as out:
        for copy in range(60):
            out.write(text.replace(">", f">c{copy}_"))
    return path


def writing(outdir):
    """Whether a run has written part of an output under `outdir`: one of its hidden temporaries
    (not a lock) holds data, so its work (and any worker pool) is under way."""
    for root, _, names in os.walk(outdir):
        for name in names:
            if name.startswith(".") and not name.endswith("lock"):
                with contextlib.suppress(OSError):
                    if os.path.getsize(os.path.join(root, name)) > 0:
                        return True
    return False


#: Runs argv[1:] with Ctrl-C at its default, as a terminal starts a foreground job. A job that a
#: script starts in the background (`cmd &`, as a busy machine's CI may run this suite) inherits
#: Ctrl-C ignored, and so would the tool, which then rightly goes on when it comes.
FOREGROUND = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"


def signal_while_running(command, outdir, signum):
    """Start `command` in its own process group, wait until it is writing its outputs, then send
    `signum` to the whole group (as a terminal's Ctrl-C or a batch system does). The wait is on
    that event, not on a time: a loaded machine may take tens of seconds to get there."""
    process = subprocess.Popen([sys.executable, "-c", FOREGROUND, *command], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + PATIENCE
    try:
        while process.poll() is None and not writing(outdir):
            assert time.monotonic() < deadline, "the run never started writing"
            time.sleep(0.01)
        if process.poll() is not None:
            pytest.skip("the run finished before it could be signalled")
        os.killpg(process.pid, signum)
        _, stderr = process.communicate(timeout=PATIENCE)
    finally:  # a run that hung: leave nothing running
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode, stderr


@pytest.mark.parametrize("signum, status, words", [(signal.SIGTERM, 143, "terminated"),
                                                   (signal.SIGINT, 130, "interrupted")])
def test_signals_stop_translate_cleanly(tmp_path, large_fasta, signum, status, words):
    outdir = tmp_path / "out"
    command = [sys.executable, os.path.join(BIN, "virnucpro-translate"), "--input", str(large_fasta),
               "--outdir", str(outdir), "--chunk_size", "500", "--workers", "2"]
    code, stderr = signal_while_running(command, outdir, signum)
    assert code == status, stderr
    assert "Traceback" not in stderr, stderr
    assert f"virnucpro-translate: {words}" in stderr
    no_temporaries(outdir)
    assert not any(name.endswith(".fa") for name in files_in(outdir))
    # nothing left behind that a rerun would trip over: it completes
    run_tool("virnucpro-translate", "--chunk_size", 500, "--input", large_fasta, "--outdir", outdir, "--workers", 2)
    no_temporaries(outdir)


def test_sigterm_stops_predict_cleanly(tmp_path, test_models):
    outdir = tmp_path / "run"
    command = [sys.executable, os.path.join(BIN, "virnucpro-predict"), "--input", EIGHT, "--outdir", str(outdir),
               "--classifier", test_models["classifier"], "--dnabert_model", test_models["dnabert"],
               "--esm_model", test_models["esm"], "--device", "cpu", "--workers", "2"]
    code, stderr = signal_while_running(command, outdir, signal.SIGTERM)
    assert code == 143, stderr
    assert "Traceback" not in stderr, stderr
    assert "virnucpro-predict: terminated" in stderr
    left = [os.path.join(root, name) for root, _, names in os.walk(outdir) for name in names
            if name.endswith((".tmp", ".lock", ".virnucpro-lock"))]
    assert not left, left
    assert "prediction_results.tsv" not in files_in(outdir)


# ---- never silent ------------------------------------------------------------------------------------


def test_rna_is_read_as_dna_with_a_warning_naming_the_file(tmp_path):
    dna = "ATGGCTTTTAAACCCGGGTTTAAATGA" * 5
    (tmp_path / "dna.fa").write_text(f">s1\n{dna}\n")
    (tmp_path / "rna.fa").write_text(f">s1\n{dna.replace('T', 'U')}\n")
    for name in ("dna", "rna"):
        result = run_tool("virnucpro-translate", "--chunk_size", 500, "--input", tmp_path / f"{name}.fa", "--outdir", tmp_path / name)
        warned = [line for line in result.stderr.splitlines() if "WARNING" in line and "RNA" in line]
        assert bool(warned) == (name == "rna"), result.stderr
        if warned:
            assert str(tmp_path / "rna.fa") in warned[0] and "'s1'" in warned[0] and "U as T" in warned[0]
    for kind in ("nucleotide", "protein"):
        assert (tmp_path / "rna" / f"rna.{kind}.fa").read_text() == (tmp_path / "dna" / f"dna.{kind}.fa").read_text()


def test_rna_reading_keeps_case_and_counts_records(tmp_path, caplog):
    from virnucpro.fasta import read_fasta

    (tmp_path / "mixed.fa").write_text(">a\nACGU\n>b\nacgu\n>c\nACGT\n")
    with caplog.at_level(logging.WARNING):
        records = list(read_fasta(str(tmp_path / "mixed.fa")))
    assert records == [("a", "ACGT"), ("b", "acgt"), ("c", "ACGT")]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "record 1 'a'" in messages[0] and "2 RNA records" in messages[1]


def test_mismatched_classifier_message_is_complete_and_one_line(tmp_path):
    import torch

    from virnucpro.models.classifier import MLPClassifier, load_classifier
    from virnucpro.errors import UserError

    state = MLPClassifier().state_dict()
    for name in ("bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"):
        state[name] = torch.zeros(256)
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(UserError) as caught:
        load_classifier(tmp_path / "odd.pth")
    message = str(caught.value)
    assert "\n" not in message
    for name in ("bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"):
        assert f"size mismatch for {name}" in message, message
    assert message.count("torch.Size([256])") == 4


def test_unsafe_legacy_pickle_refusal_gives_no_advice_to_disable_safety(tmp_path):
    marker = write_pickle_bomb(tmp_path, "{'ids': ['a'], 'data': Payload()}", tmp_path / "evil.pt", legacy=True)
    result = run_tool("virnucpro-merge", "--nucleotide", tmp_path / "evil.pt",
                      "--protein", os.path.join(VANILLA, "with_orfs_ESM.pt"), "--output", tmp_path / "m.h5", check=False)
    line = one_error_line(result, "virnucpro-merge", "evil.pt", "not allowed")
    assert "weights_only" not in line and "trust" not in line
    assert not marker.exists()
    assert not (tmp_path / "m.h5").exists()
