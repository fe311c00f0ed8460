"""A plain, obviously-correct reference of SPEC 1.1-1.2, written from the text of the rule.

It shares no code with virnucpro.stages.translate: codon by codon, with Biopython's standard table.
(The translate benchmark measures against a re-expression of the original's own code instead.)
"""

import math

from Bio.Data.CodonTable import standard_dna_table

CODONS = dict(standard_dna_table.forward_table)
for stop in standard_dna_table.stop_codons:
    CODONS[stop] = "*"

PAIRS = {"A": "T", "T": "A", "C": "G", "G": "C"}


def chunks(seq, size):
    length = len(seq)
    n = math.ceil(length / size)
    r = n * size - length
    lo = r // n
    k = r - lo * (n - 1)
    shifts = [lo + 1] * k + [lo] * (n - 1 - k) + [0]
    result = []
    for i in range(n):
        start = i * size - sum(shifts[:i])
        result.append(seq[start:start + size])
    return result


def reverse_complement(seq):
    return "".join(PAIRS.get(base, base) for base in reversed(seq))


def translate_frame(seq, offset):
    protein = ""
    position = offset
    while position + 3 <= len(seq):
        codon = seq[position:position + 3]
        if all(base in "ACGT" for base in codon):
            protein += CODONS[codon]
        position += 3
    return protein


def six_frames(chunk_id, chunk):
    chunk = chunk.upper()
    kept = []
    for letter, strand in (("F", chunk), ("R", reverse_complement(chunk))):
        for offset in range(3):
            protein = translate_frame(strand, offset)
            if protein and "*" not in protein:
                nucleotide = strand[offset:offset + 3 * len(protein) + 1]
                kept.append((f"{chunk_id}{letter}{offset + 1}", nucleotide, protein))
    return kept


def reference_translate(records, size):
    """(id, seq) records -> list of (frame id, nucleotide, protein) in output order."""
    frames = []
    for record_id, seq in records:
        if not seq:
            continue
        for number, chunk in enumerate(chunks(seq, size), 1):
            frames.extend(six_frames(f"{record_id}_chunk_{number}", chunk))
    return frames


def read_plain_fasta(path):
    records, name, parts = [], None, []
    with open(path) as handle:
        for line in handle:
            line = line.strip()
            if line.startswith(">"):
                if name is not None:
                    records.append((name, "".join(parts)))
                name, parts = line[1:].split()[0], []
            elif line:
                parts.append(line)
    if name is not None:
        records.append((name, "".join(parts)))
    return records
