"""Translate benchmark: virnucpro-translate vs the original VirNucPro's own way, same run.

"The original's way" is a re-expression of the original tool's code path for this stage
(prediction.py's make_predictdata): Biopython parses the input, a per-record loop cuts the chunks
and SeqIO.write()s them to a chunked FASTA (wrapped at 60); that file is parsed again, each chunk
upper-cased and translated in six frames with a codon dictionary (a codon that is not in it, e.g.
one with an N, adds nothing) and a per-base reverse-complement dictionary; stop-free frames are
written to the nucleotide and protein files. It is first checked to reproduce the original tool's
own files (tests/data/vanilla: chunked, identified nucleotide and protein) byte for byte.

Then a real-like input is built by repeating tests/data/virsorter2/8seq.fa (unique ids); each side
runs as its own process (start-up, reading, writing included); the outputs are checked identical;
wall time, Mbp/s, speed-up, scaling from 1 to 2 workers and peak RSS at N and 2N copies are printed.

    python bench/bench_translate.py [--copies 16] [--chunk_size 500]
"""

import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
EIGHT = os.path.join(REPO, "tests", "data", "virsorter2", "8seq.fa")
VANILLA = os.path.join(REPO, "tests", "data", "vanilla")


# ---- the original's way (run in its own process: `bench_translate.py --original IN CHUNKED OUT`) ----


def original_split_chunks(input_file, chunked_file, chunk_size):
    """Per-record chunking loop writing a chunked FASTA with SeqIO, as the original did."""
    from Bio import SeqIO
    from Bio.SeqRecord import SeqRecord

    chunks = []
    for record in SeqIO.parse(input_file, "fasta"):
        sequence = record.seq
        length = len(sequence)
        n = math.ceil(length / chunk_size)
        overlap = n * chunk_size - length
        low = overlap // n
        high_count = overlap - low * (n - 1)
        shifts = [low + 1] * high_count + [low] * (n - 1 - high_count) + [0]
        start = 0
        for i in range(n):
            chunks.append(SeqRecord(sequence[start:start + chunk_size], id=f"{record.id}_chunk_{i + 1}", description=""))
            start += chunk_size - shifts[i]
    SeqIO.write(chunks, chunked_file, "fasta")


def original_codon_table():
    from Bio.Data.CodonTable import standard_dna_table

    table = dict(standard_dna_table.forward_table)
    table.update({stop: "*" for stop in standard_dna_table.stop_codons})
    return table


COMPLEMENT = {"A": "T", "T": "A", "C": "G", "G": "C"}


def original_identify(seqid, sequence, codons):
    """Six frames of one upper-cased chunk; the stop-free ones as (id, nucleotide, protein)."""
    reverse = "".join(COMPLEMENT.get(base, base) for base in reversed(sequence))
    kept = []
    for strand, letter in ((sequence, "F"), (reverse, "R")):
        for frame in range(3):
            part = strand[frame:]
            protein = "".join(codons.get(part[i:i + 3], "") for i in range(0, len(part) - 2, 3))
            if protein and "*" not in protein:
                kept.append((f"{seqid}{letter}{frame + 1}", part[: len(protein) * 3 + 1], protein))
    return kept


def original_way(input_file, chunked_file, out_prefix, chunk_size=500):
    from Bio import SeqIO

    original_split_chunks(input_file, chunked_file, int(chunk_size))
    codons = original_codon_table()
    with open(out_prefix + ".nucleotide.fa", "w") as dna_out, open(out_prefix + ".protein.fa", "w") as protein_out:
        for record in SeqIO.parse(chunked_file, "fasta"):
            for seqid, nucleotide, protein in original_identify(record.id, str(record.seq).upper(), codons):
                dna_out.write(f">{seqid}\n{nucleotide}\n")
                protein_out.write(f">{seqid}\n{protein}\n")


# ---- the benchmark -------------------------------------------------------------------------------


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


def original_command(source, chunked, out, chunk_size):
    return [sys.executable, os.path.abspath(__file__), "--original", source, chunked, out, str(chunk_size)]


def check_original_reproduces_vanilla(work):
    """The re-expression gives the original tool's own files for its own input, byte for byte."""
    out = os.path.join(work, "vanilla")
    chunked = out + "_chunked500.fa"
    subprocess.run(original_command(os.path.join(VANILLA, "test_with_orfs.fa"), chunked, out, 500), check=True)
    pairs = [(chunked, "test_with_orfs_chunked500.fa"),
             (out + ".nucleotide.fa", "test_with_orfs_identified_nucleotide.fa"),
             (out + ".protein.fa", "test_with_orfs_identified_protein.faa")]
    for ours, theirs in pairs:
        assert same_files(ours, os.path.join(VANILLA, theirs)), f"{ours} differs from the original's {theirs}"
    print("original's way reproduces the original tool's chunked and identified files: yes")


def main(copies=16, chunk_size=500, workdir=None):
    work = workdir or tempfile.mkdtemp(prefix="bench_translate_")
    tool = os.path.join(REPO, "bin", "virnucpro-translate")
    print(f"machine: {os.cpu_count()} CPUs, {sys.platform}, python {sys.version.split()[0]}; "
          f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    check_original_reproduces_vanilla(work)
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
    original_out = os.path.join(work, "original")
    original_seconds, original_rss = timed(original_command(source, original_out + "_chunked.fa", original_out, chunk_size))
    print(f"original's way (Biopython chunking + codon-dictionary six frames) large ({bases / 1e6:.1f} Mbp): "
          f"{original_seconds:.2f} s, {bases / 1e6 / original_seconds:.2f} Mbp/s, peak RSS {original_rss:.0f} MiB")
    for workers in (1, 2):
        for kind in ("nucleotide", "protein"):
            ours = os.path.join(work, f"large_w{workers}", f"large.{kind}.fa")
            assert same_files(ours, f"{original_out}.{kind}.fa"), f"{kind} differs from the original's (workers={workers})"
    print("outputs identical to the original's way: yes")
    for workers in (1, 2):
        print(f"speed-up vs the original's way, workers={workers}: {original_seconds / results['large', workers][1]:.1f}x")
    print(f"scaling 1 -> 2 workers: {results['large', 1][1] / results['large', 2][1]:.2f}x")
    for workers in (1, 2):
        print(f"peak RSS at {results['large', workers][0] / 1e6:.0f} vs {results['double', workers][0] / 1e6:.0f} Mbp "
              f"(workers={workers}): {results['large', workers][2]:.0f} vs {results['double', workers][2]:.0f} MiB")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if not workdir:
        shutil.rmtree(work)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--original"]:
        original_way(*sys.argv[2:6])
    else:
        import fire

        fire.Fire(main)
