"""Translate benchmark: virnucpro-translate vs a plain per-codon Python reference, same run.

Builds a real-like input by repeating tests/data/virsorter2/8seq.fa (unique ids), runs each
side as its own process, checks the outputs are identical, and prints wall time, Mbp/s, the
speed-up, scaling from 1 to 2 workers and the peak RSS at two input sizes (N and 2N copies;
the reference runs on N copies only). Peak RSS is the largest single process of the run.

    python bench/bench_translate.py [--copies 16] [--chunk_size 500]
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

import fire

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
EIGHT = os.path.join(REPO, "tests", "data", "virsorter2", "8seq.fa")

REFERENCE_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from reference_translate import read_plain_fasta, reference_translate
records = read_plain_fasta({input!r})
frames = reference_translate(records, {chunk_size})
with open({out!r} + ".nucleotide.fa", "w") as n, open({out!r} + ".protein.fa", "w") as p:
    for frame_id, nucleotide, protein in frames:
        n.write(">" + frame_id + "\\n" + nucleotide + "\\n")
        p.write(">" + frame_id + "\\n" + protein + "\\n")
"""


def make_input(path, copies):
    """`copies` renamed copies of 8seq.fa; returns the number of bases."""
    with open(EIGHT) as handle:
        text = handle.read()
    bases = sum(len(line.strip()) for line in text.splitlines() if not line.startswith(">"))
    with open(path, "w") as out:
        for copy in range(copies):
            out.write(text.replace(">", f">c{copy}_"))
    return bases * copies


def timed(command):
    """Run a command; return (seconds, peak RSS in MiB of its largest process)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"failed: {' '.join(command)}")
    return seconds, usage.ru_maxrss / 1024


def same_files(a, b):
    with open(a, "rb") as x, open(b, "rb") as y:
        return x.read() == y.read()


def main(copies=16, chunk_size=500, workdir=None):
    work = workdir or tempfile.mkdtemp(prefix="bench_translate_")
    tool = os.path.join(REPO, "bin", "virnucpro-translate")
    print(f"machine: {os.cpu_count()} CPUs, {sys.platform}, python {sys.version.split()[0]}")
    results = {}
    for label, n in (("large", copies), ("double", 2 * copies)):
        source = os.path.join(work, f"{label}.fa")
        bases = make_input(source, n)
        for workers in (1, 2):
            out = os.path.join(work, f"{label}_w{workers}")
            seconds, rss = timed([sys.executable, tool, "--input", source, "--outdir", out,
                                  "--chunk_size", str(chunk_size), "--workers", str(workers), "--overwrite"])
            results[label, workers] = (bases, seconds, rss)
            print(f"virnucpro-translate {label} ({bases / 1e6:.1f} Mbp) workers={workers}: "
                  f"{seconds:.2f} s, {bases / 1e6 / seconds:.2f} Mbp/s, peak RSS {rss:.0f} MiB")
    source = os.path.join(work, "large.fa")
    bases = results["large", 1][0]
    ref_out = os.path.join(work, "reference")
    script = REFERENCE_SCRIPT.format(tests=os.path.join(REPO, "tests"), input=source, chunk_size=chunk_size, out=ref_out)
    ref_seconds, ref_rss = timed([sys.executable, "-c", script])
    print(f"plain reference (per-codon Python) large ({bases / 1e6:.1f} Mbp): {ref_seconds:.2f} s, "
          f"{bases / 1e6 / ref_seconds:.3f} Mbp/s, peak RSS {ref_rss:.0f} MiB")
    for workers in (1, 2):
        for kind in ("nucleotide", "protein"):
            ours = os.path.join(work, f"large_w{workers}", f"large.{kind}.fa")
            assert same_files(ours, f"{ref_out}.{kind}.fa"), f"{kind} differs from the reference (workers={workers})"
    print("outputs identical to the reference: yes")
    for workers in (1, 2):
        print(f"speed-up vs reference, workers={workers}: {ref_seconds / results['large', workers][1]:.1f}x")
    print(f"scaling 1 -> 2 workers: {results['large', 1][1] / results['large', 2][1]:.2f}x")
    for workers in (1, 2):
        print(f"peak RSS at {results['large', workers][0] / 1e6:.0f} vs {results['double', workers][0] / 1e6:.0f} Mbp "
              f"(workers={workers}): {results['large', workers][2]:.0f} vs {results['double', workers][2]:.0f} MiB")
    if not workdir:
        shutil.rmtree(work)


if __name__ == "__main__":
    fire.Fire(main)
