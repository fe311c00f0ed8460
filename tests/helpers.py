"""Small helpers shared by the tests."""

import os
import subprocess
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(TESTS, "data")
REPO = os.path.dirname(TESTS)
BIN = os.path.join(REPO, "bin")


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
