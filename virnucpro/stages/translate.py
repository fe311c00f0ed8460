"""Stage 1: cut sequences into chunks and keep the stop-free six-frame translations (SPEC 1.1, 1.2).

The original translated codon by codon in Python. Here a whole batch of records is concatenated
and every codon position of both strands is translated at once with a NumPy lookup table; a frame
is then one C-level strided slice of that table's output.
"""

import contextlib
import hashlib
import logging
import os

import numpy as np
from tqdm import tqdm

from .. import __version__
from ..errors import UserError
from ..fasta import check_readable, check_unchanged, file_state, format_record, read_fasta, wrap_record
from ..names import SEQUENCES_COLUMNS, TRANSLATE_RECORD, stem, translate_output_pattern, translate_outputs
from ..outputs import discard, file_sha256, publish, temp_path_for
from ..parallel import available_cpus, ordered_map, plan_pool
from ..results import check_chunk_size, chunk_bounds, chunk_id
from ..tsv import tsv_line

log = logging.getLogger(__name__)

BASES = "TCAG"
AMINO_ACIDS = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"
#: Standard genetic code, e.g. "ATG" -> "M"; stop codons -> "*".
CODON_TABLE = {a + b + c: AMINO_ACIDS[16 * i + 4 * j + k]
               for i, a in enumerate(BASES) for j, b in enumerate(BASES) for k, c in enumerate(BASES)}

COMPLEMENT = bytes.maketrans(b"ACGT", b"TGCA")  # any other letter (N, IUPAC codes) stays as it is
_DROPPED = ord("#")  # marks a codon holding a non-ACGT letter: it adds no amino acid


def _codon_lookup():
    """Base codes A,C,G,T -> 0..3, anything else -> 4; a codon's index is 25*b1 + 5*b2 + b3."""
    base_code = np.full(256, 4, dtype=np.uint8)
    for code, base in enumerate(b"ACGT"):
        base_code[base] = code
    letters = np.full(125, _DROPPED, dtype=np.uint8)
    for codon, amino_acid in CODON_TABLE.items():
        b1, b2, b3 = (int(base_code[ord(b)]) for b in codon)
        letters[25 * b1 + 5 * b2 + b3] = ord(amino_acid)
    return base_code, letters


BASE_CODE, CODON_LETTERS = _codon_lookup()


def amino_acid_at_each_position(seq):
    """Byte i is the amino acid of the codon seq[i:i+3] (b'#' if it holds a non-ACGT letter)."""
    if len(seq) < 3:
        return b""
    codes = BASE_CODE[np.frombuffer(seq, dtype=np.uint8)]
    index = codes[:-2] * 25 + codes[1:-1] * 5 + codes[2:]  # at most 124: fits uint8
    return CODON_LETTERS[index].tobytes()


def _stop_free_frames(strand, amino_acids, start, end, chunk, strand_letter, out):
    """Append (frame id, nucleotide, protein) for each frame of strand[start:end] without a stop."""
    last_codon_stop = max(end - 2, 0)  # a negative stop would wrap around to the strand's end
    for frame in range(3):
        protein = amino_acids[start + frame : last_codon_stop : 3]
        if b"*" in protein:
            continue
        if b"#" in protein:
            protein = protein.replace(b"#", b"")
        if not protein:
            continue
        first = start + frame
        nucleotide = strand[first : min(first + 3 * len(protein) + 1, end)]
        out.append((f"{chunk}{strand_letter}{frame + 1}", nucleotide.decode(), protein.decode()))


def translate_records(records, chunk_size):
    """Chunk and six-frame translate a batch of (id, sequence) records.

    Returns (frames, summaries, frameless): frames as (id, nucleotide, protein) in output order,
    one (id, length, chunks) per record, and how many chunks had no stop-free frame.
    """
    forward = b"".join(seq.encode().upper() for _, seq in records)
    reverse = forward.translate(COMPLEMENT)[::-1]
    forward_aa = amino_acid_at_each_position(forward)
    reverse_aa = amino_acid_at_each_position(reverse)
    total = len(forward)
    frames, summaries, offset, frameless = [], [], 0, 0
    for record_id, seq in records:
        bounds = chunk_bounds(len(seq), chunk_size)
        summaries.append((record_id, len(seq), len(bounds)))
        for number, (start, end) in enumerate(bounds, 1):
            chunk = chunk_id(record_id, number)
            first, last = offset + start, offset + end
            before = len(frames)
            _stop_free_frames(forward, forward_aa, first, last, chunk, "F", frames)
            _stop_free_frames(reverse, reverse_aa, total - last, total - first, chunk, "R", frames)
            frameless += len(frames) == before
        offset += len(seq)
    return frames, summaries, frameless


def translate_batch(task):
    """Pool worker: one batch of records -> (nucleotide records, protein records, summaries,
    frameless), the records already formatted as FASTA text so the writer only writes."""
    records, chunk_size = task
    frames, summaries, frameless = translate_records(records, chunk_size)
    nucleotide = [format_record(frame_id, seq) for frame_id, seq, _ in frames]
    protein = [format_record(frame_id, seq) for frame_id, _, seq in frames]
    return nucleotide, protein, summaries, frameless


def chunk_batch(task):
    """Pool worker for --write_chunks: the chunks themselves, wrapped as the original wrote them."""
    records, chunk_size = task
    return "".join(
        wrap_record(chunk_id(record_id, number), seq[start:end])
        for record_id, seq in records
        for number, (start, end) in enumerate(chunk_bounds(len(seq), chunk_size), 1)
    )


def batches(records, chunk_size, batch_bases):
    """Group records into tasks of about `batch_bases` bases (a huge record is a task alone)."""
    batch, size = [], 0
    for record in records:
        batch.append(record)
        size += len(record[1])
        if size >= batch_bases:
            yield batch, chunk_size
            batch, size = [], 0
    if batch:
        yield batch, chunk_size


def plan_translation(input_bytes, workers=None, batch_bases=None):
    """(workers, chunksize, batch_bases) for an input of this size: batches of up to 1 Mbp, but
    small enough that a small input still gives every worker several batches."""
    wanted = workers or available_cpus()
    batch_bases = batch_bases or min(1_000_000, max(20_000, input_bytes // (wanted * 8)))
    workers, chunksize = plan_pool(input_bytes // batch_bases + 1, wanted)
    return workers, chunksize, batch_bases


def _our_outputs(input, outdir):
    """The final names of `input`'s outputs (any shard layout) that exist in `outdir`. A shard-like
    name that is another input's own output (`x.00001.nucleotide.fa` of `x.00001.fa`, which has
    its record `x.00001.translate.json` here) is not `x.fa`'s."""
    ours = translate_output_pattern(input)
    found = []
    for name in os.listdir(outdir):
        match = ours.fullmatch(name)
        if match and not (match.group(2) and os.path.exists(
                os.path.join(outdir, stem(input) + match.group(2) + TRANSLATE_RECORD))):
            found.append(os.path.join(outdir, name))
    return sorted(found)


def _recorded_outputs(manifest, outdir):
    """The output paths a manifest lists (a dict like `names.translate_outputs` gives), or None if it lists none."""
    listed = manifest.get("outputs")
    if not isinstance(listed, dict) or not {"nucleotide", "protein", "sequences"} <= set(listed):
        return None
    return {key: [os.path.join(outdir, n) for n in names] if isinstance(names, list) else os.path.join(outdir, names)
            for key, names in listed.items()}


def _files(outputs):
    """The output files of a `names.translate_outputs`-like dict, the manifest excepted."""
    return outputs["nucleotide"] + outputs["protein"] + [outputs[key] for key in ("sequences", "chunks") if key in outputs]


def _temp_bases(input, outdir):
    """The names our temporary files derive from (`outputs.temp_path_for`), for cleanup."""
    paths = translate_outputs(outdir, input, write_chunks=True)
    return [os.path.join(outdir, f"{stem(input)}.shard"), paths["sequences"], paths["chunks"], paths["manifest"]]


class _ShardWriter:
    """Writes frames to numbered (nucleotide, protein) temporary files of `shard_size` frames each."""

    def __init__(self, base, shard_size):
        self.base, self.shard_size = base, shard_size  # temporaries are named .<base name>.XXXXXXXX.tmp
        self.temps, self.frames_in_shard, self.handles = [], 0, None
        self._open()

    def _open(self):
        if self.handles:
            for handle in self.handles:
                handle.close()
        temps = (self._temp(), self._temp())
        self.temps.append(temps)
        self.handles = [open(t, "w", encoding="utf-8", buffering=1 << 20) for t in temps]
        self.frames_in_shard = 0

    def _temp(self):
        return temp_path_for(self.base)

    def write(self, nucleotide, protein):
        """Write formatted records (same frames in both lists), opening a new shard when one is full."""
        done = 0
        while done < len(nucleotide):
            if self.shard_size and self.frames_in_shard == self.shard_size:
                self._open()
            take = len(nucleotide) - done
            if self.shard_size:
                take = min(take, self.shard_size - self.frames_in_shard)
            self.handles[0].writelines(nucleotide[done : done + take])
            self.handles[1].writelines(protein[done : done + take])
            self.frames_in_shard += take
            done += take

    def close(self):
        for handle in self.handles:
            handle.close()

    def discard(self):
        with contextlib.suppress(OSError):  # flushing onto a full disk fails again: remove anyway
            self.close()
        discard([temp for pair in self.temps for temp in pair])


def translate_fasta(input, outdir, chunk_size=500, workers=None, shard_size=0, overwrite=False,
                    write_chunks=False, batch_bases=None, redo=False, input_sha256=None, any_chunk_size=True):
    """Translate one FASTA file; returns dict(nucleotide=[paths], protein=[paths], sequences=path, ...).

    Output is byte-identical for any number of workers. `<stem>.translate.json` records the
    input's SHA-256 and the settings (chunk size, shards): a finished run made the same way is
    reused (logged); outputs made differently are refused (one line) unless `overwrite`, or made
    again with `redo` (for a caller that owns the folder). One run at a time per input stem and
    folder; nothing is left under a final name if the run fails. `input_sha256`: the input's digest
    when the caller has just taken it (one read less; a change since is still caught while reading).
    `any_chunk_size`: accept a chunk size other than 300 or 500 (with a warning).
    """
    from ..outputs import make_once

    check_chunk_size(chunk_size, any_chunk_size, warn=True)
    if not isinstance(shard_size, int) or shard_size < 0:
        raise UserError(f"--shard_size must be a whole number >= 0, got {shard_size!r}")
    check_readable(input)
    outdir = str(outdir)
    settings = {"input": os.path.basename(input), "input_sha256": input_sha256 or file_sha256(input), "chunk_size": chunk_size,
                "shard_size": shard_size, "write_chunks": bool(write_chunks)}

    def existing(manifest):
        """The outputs to judge: those the manifest lists, else any of this input's here."""
        listed = _recorded_outputs(manifest, outdir)
        return _files(listed) if listed else _our_outputs(input, outdir)

    manifest_path = translate_outputs(outdir, input)["manifest"]
    # record=None: _translate replaces the manifest itself, just before it publishes (the manifest
    # lists the shards, known only then).
    return make_once(existing, settings, lambda: _translate(input, outdir, settings, workers, batch_bases),
                     what=f"translation of {input}", lock=manifest_path,
                     lock_what=f"translation of {stem(input)} in {outdir}", record_path=manifest_path,
                     recorded=lambda manifest: manifest.get("settings"), temps_of=_temp_bases(input, outdir),
                     kept=lambda manifest: _recorded_outputs(manifest, outdir), overwrite=overwrite, redo=redo)


def _translate(input, outdir, settings, workers, batch_bases):
    """Translate into temporaries, then replace the earlier outputs: manifest first, outputs after it
    (so a manifest whose outputs all exist always describes them)."""
    chunk_size, shard_size, write_chunks = settings["chunk_size"], settings["shard_size"], settings["write_chunks"]
    before = file_state(input)
    size = before[0]
    read_digest = hashlib.sha256()
    workers, chunksize, batch_bases = plan_translation(size, workers, batch_bases)
    log.info("translating %s: chunk size %d, %d worker(s), batches of ~%d bases", input, chunk_size, workers, batch_bases)

    names = translate_outputs(outdir, input, write_chunks=write_chunks)
    writer = _ShardWriter(_temp_bases(input, outdir)[0], shard_size)
    table_temp = temp_path_for(names["sequences"])
    temps = [table_temp]
    n_records = n_frames = n_chunks = n_frameless = 0
    try:
        with open(table_temp, "w", encoding="utf-8") as table, tqdm(total=size, unit="B", unit_scale=True, desc="translate",
                                                   mininterval=1.0) as progress:
            table.write(tsv_line(SEQUENCES_COLUMNS))
            records = read_fasta(input, alphabet="nucleotide", progress=progress, digest=read_digest)
            tasks = batches(records, chunk_size, batch_bases)
            for nucleotide, protein, summaries, frameless in ordered_map(translate_batch, tasks, workers, chunksize):
                writer.write(nucleotide, protein)
                table.writelines(tsv_line((i, str(length), str(chunks)), "sequence id") for i, length, chunks in summaries)
                n_records += len(summaries)
                n_chunks += sum(chunks for _, _, chunks in summaries)
                n_frames += len(nucleotide)
                n_frameless += frameless
        writer.close()
        check_unchanged(input, before, settings["input_sha256"], read_digest.hexdigest())
        if not n_records:
            raise UserError(f"{input}: no sequences (every record is empty)")
        if write_chunks:
            temps.append(temp_path_for(names["chunks"]))
            _write_chunks(input, temps[-1], chunk_size, workers, chunksize, batch_bases)
            check_unchanged(input, before, settings["input_sha256"], settings["input_sha256"])

        outputs = translate_outputs(outdir, input, len(writer.temps) if shard_size else 0, write_chunks)
        if os.path.exists(outputs["manifest"]):  # the old record goes first (outputs.make_once says why)
            os.remove(outputs["manifest"])
        for old in _our_outputs(input, outdir):
            os.remove(old)
        finals = [*zip(writer.temps, zip(outputs["nucleotide"], outputs["protein"]))]
        pairs = [pair for temp_pair, final_pair in finals for pair in zip(temp_pair, final_pair)]
        pairs.append((table_temp, outputs["sequences"]))
        if write_chunks:
            pairs.append((temps[-1], outputs["chunks"]))
        digests = {os.path.basename(final): file_sha256(temp) for temp, final in pairs}
        _write_manifest(outputs, settings, {"records": n_records, "chunks": n_chunks, "frames": n_frames}, digests)
        for (nucleotide_temp, protein_temp), nucleotide, protein in zip(writer.temps, outputs["nucleotide"], outputs["protein"]):
            publish(nucleotide_temp, nucleotide)
            publish(protein_temp, protein)
        publish(table_temp, outputs["sequences"])
        if write_chunks:
            publish(temps[-1], outputs["chunks"])
    except BaseException:  # also e.g. a folder in the way of a final name: leave no temporaries
        writer.discard()
        discard(temps)
        raise
    log.info("%d records, %d chunks, %d stop-free frames in %d shard(s) under %s", n_records, n_chunks,
             n_frames, len(outputs["nucleotide"]), outdir)
    if n_frameless:
        log.info("%d chunk(s) had no stop-free frame in any of the six frames: they get no score", n_frameless)
    return outputs


def _write_manifest(outputs, settings, counts, digests):
    """The record that vouches for the outputs: settings, names, counts and each file's SHA-256
    (checked before a rerun reuses them)."""
    from ..outputs import write_record

    names = {key: [os.path.basename(p) for p in value] if isinstance(value, list) else os.path.basename(value)
             for key, value in outputs.items()}
    write_record(outputs["manifest"], {"settings": settings, "outputs": names, "counts": counts, "sha256": digests,
                                       "virnucpro_version": __version__})


def _write_chunks(input, temp, chunk_size, workers, chunksize, batch_bases):
    with open(temp, "w", encoding="utf-8") as handle:
        records = read_fasta(input, alphabet="nucleotide", check_duplicates=False)
        tasks = batches(records, chunk_size, batch_bases)
        handle.writelines(ordered_map(chunk_batch, tasks, workers, chunksize))


def translate(input, outdir, chunk_size, workers=None, shard_size=0, overwrite=False,
              write_chunks=False, any_chunk_size=False, verbose=False):
    """Cut sequences into chunks and keep each chunk's stop-free six-frame translations.

    Writes OUTDIR/<stem>.nucleotide.fa and OUTDIR/<stem>.protein.fa (same ids, same order) and
    OUTDIR/<stem>.sequences.tsv (id, length, chunks per input record); OUTDIR/<stem>.translate.json
    records the input's SHA-256 and the settings. A rerun skips outputs made the same way and
    refuses (one line) outputs made differently (another input or --chunk_size) unless --overwrite.

    Args:
      input: FASTA file of DNA (plain or .gz).
      outdir: output folder (created if needed).
      chunk_size: 300 or 500, the length the classifier was trained on (no default: a wrong one would show only at classify, after the embedding).
      workers: processes to use (default: all CPUs available to this job).
      shard_size: frames per output shard pair <stem>.00001.*.fa, ... (0: one pair).
      overwrite: redo, replacing complete outputs made the same way or differently.
      write_chunks: also write the chunks as <stem>.chunks.fa (wrapped like the original's).
      any_chunk_size: accept a --chunk_size other than 300 or 500 (for a classifier of your own).
      verbose: debug logging.
    """
    translate_fasta(input, outdir, chunk_size=chunk_size, workers=workers, shard_size=shard_size,
                    overwrite=overwrite, write_chunks=write_chunks, any_chunk_size=any_chunk_size)
