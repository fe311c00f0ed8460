"""Small helpers shared by the tests."""

import json
import os
import signal
import subprocess
import sys
import time

TESTS = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(TESTS, "data")
REPO = os.path.dirname(TESTS)
BIN = os.path.join(REPO, "bin")
#: The three tables of a prediction run.
FINAL = ("prediction_results.tsv", "prediction_results_highestscore.tsv", "sequence_summary.tsv")
#: The genomes of 8seq.fa in the `small_fasta` fixture.
SMALL_SUBSET = ("ssDNA-linear", "Caudo-1hallmarkgene", "RNA-linear")
#: How long a wait for something a subprocess does may last before the test gives up: only a
#: safety net (a loaded machine can take tens of seconds to start a Python that imports torch);
#: the waits themselves end on the event.
PATIENCE = 600


def read(path):
    with open(path) as handle:
        return handle.read()


def predict_args(test_models, fasta, outdir, *extra):
    """virnucpro-predict's arguments for a run with the tiny test models on the CPU."""
    return ["--input", fasta, "--outdir", outdir, "--chunk_size", 500, "--classifier", test_models["classifier"],
            "--dnabert_model", test_models["dnabert"], "--esm_model", test_models["esm"], "--device", "cpu", *extra]


def read_fasta_pairs(path):
    """Single-line FASTA as written by the tools -> list of (id, sequence)."""
    with open(path) as handle:
        lines = handle.read().splitlines()
    assert len(lines) % 2 == 0, f"{path} is not one line per sequence"
    return [(lines[i][1:], lines[i + 1]) for i in range(0, len(lines), 2)]


def run_tool(tool, *args, check=True, env=None, cwd=None):
    """Run a bin/ tool with this interpreter; returns the CompletedProcess (text)."""
    full_env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **(env or {}))
    result = subprocess.run([sys.executable, os.path.join(BIN, tool), *map(str, args)],
                            capture_output=True, text=True, env=full_env, cwd=cwd)
    if check and result.returncode != 0:
        raise AssertionError(f"{tool} failed ({result.returncode}):\n{result.stderr}")
    return result


def write_pickle_bomb(tmp_path, saved_expression, path, legacy=False):
    """torch.save() into `path` an object whose unpickling runs `touch <marker>`; returns the marker.

    `saved_expression` is the Python expression saved, with `Payload()` where the code hides;
    `legacy`: torch's pre-1.6 format (a bare pickle, read by torch.load, not a zip archive)."""
    marker = tmp_path / "ran"
    script = tmp_path / "evil.py"
    script.write_text(
        "import os, sys, torch\n"
        "class Payload:\n"
        "    def __reduce__(self):\n"
        f"        return (os.system, ('touch {marker}',))\n"
        f"torch.save({saved_expression}, sys.argv[1], _use_new_zipfile_serialization={not legacy})\n"
    )
    subprocess.run([sys.executable, str(script), str(path)], check=True)
    return marker


def files_in(folder):
    """Names of the files in a folder, hidden temporaries included (so leftovers are caught)."""
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def write_random_dna_fasta(path, records, length, seed):
    """`records` random DNA records `r0`, `r1`, ... of `length` bases each (deterministic by `seed`):
    an input large enough that translating it takes a moment."""
    import numpy as np

    rng = np.random.default_rng(seed)
    with open(path, "w") as handle:
        for i in range(records):
            handle.write(f">r{i}\n" + "".join(rng.choice(list("ACGT"), length)) + "\n")
    return path


def write_embeddings(path, ids, matrix, kind):
    """An embeddings HDF5 file as SPEC 2 describes it."""
    import h5py
    import numpy as np

    with h5py.File(path, "w") as out:
        out.create_dataset("ids", data=list(ids), dtype=h5py.string_dtype("utf-8"), shape=(len(ids),))
        out.create_dataset("embeddings", data=np.asarray(matrix, np.float32))
        out.attrs.update(model=f"test-{kind}", kind=kind, pooling="mean", virnucpro_version="test")
    return str(path)


def one_error_line(result, tool, *words):
    """The run failed with exit 1 and exactly one stderr line for the error, naming `words`."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and errors[0].startswith(f"{tool}: error: "), result.stderr
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def run_as(prefix, tool, *args):
    """Run a bin/ tool behind a command `prefix` (the `as_nobody` fixture's)."""
    return subprocess.run([*prefix, sys.executable, os.path.join(BIN, tool), *map(str, args)], capture_output=True,
                          text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))


def start(tool, *args):
    """Start a bin/ tool in the background (stderr readable from the process)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.Popen([sys.executable, os.path.join(BIN, tool), *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def holds(process, lock):
    """Whether `lock` names `process` as its holder."""
    try:
        with open(lock) as handle:
            signature, _, holder = handle.read().partition("\n")
        holder = json.loads(holder) if signature == "virnucpro-lock v1" else {}
    except (OSError, ValueError):
        holder = {}
    return holder.get("pid") == process.pid


def proc_stat(pid):
    """The fields of /proc/<pid>/stat after the command name (state first, then the parent's pid),
    or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(")")[2].split()
    except OSError:
        return None


def child_pids(pid):
    """The pids of the processes whose parent is `pid`."""
    return [int(entry) for entry in os.listdir("/proc")
            if entry.isdigit() and (proc_stat(entry) or [None, None])[1] == str(pid)]


def is_alive(pid):
    """Whether `pid` runs (a zombie has ended)."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def outliving(pids, patience=PATIENCE):
    """Wait (up to `patience` s, a safety net) for `pids` to end; returns those still running, killed
    so none is left behind."""
    deadline = time.monotonic() + patience
    while any(is_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid in pids if is_alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


def wait_stopped(process):
    """Wait until a SIGSTOP sent to `process` has taken effect (the kernel delivers it later):
    True once it is stopped, False if it ended first."""
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        state = (proc_stat(process.pid) or ["X"])[0]
        if state in "TtZX":
            return state in "Tt"
        time.sleep(0.001)
    raise AssertionError(f"pid {process.pid} was never stopped")


def stop_while_holding(process, lock, also=lambda: True):
    """Wait until `process` holds `lock` (its pid written there) and `also()` holds, then SIGSTOP it:
    from then on it keeps the lock, as a slow run would, whatever the machine's speed. Both are
    checked again once it is stopped (it may have moved on between the look and the signal); if
    they no longer hold, it goes on and the wait too."""
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        assert process.poll() is None, f"finished before it was caught holding the lock: {process.stderr.read()}"
        if holds(process, lock) and also():
            process.send_signal(signal.SIGSTOP)
            if wait_stopped(process) and holds(process, lock) and also():
                return
            process.send_signal(signal.SIGCONT)
        time.sleep(0.002)
    raise AssertionError(f"{lock} never named pid {process.pid}")
