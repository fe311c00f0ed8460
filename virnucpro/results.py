"""Rules the stages share about chunks and their scores, below the stages that use them:
chunk bounds and ids (SPEC 1.1; translate cuts, report draws), each chunk's best scores (classify
writes them, report reads them back), the valid chunk sizes and thresholds (every tool checks them
here), and classify's record (read by report).
"""

import logging
import math
import os

from .errors import UserError
from .names import CLASSIFY_RECORD

log = logging.getLogger(__name__)

#: Default verdict threshold: a sequence is virus when at least this fraction of its scored chunks is viral.
DEFAULT_THRESHOLD = 0.5
#: The chunk sizes the published classifiers were trained on (300_model.pth, 500_model.pth).
CHUNK_SIZES = (300, 500)


def is_viral_chunk(best_other, best_virus):
    """The original's per-chunk rule (prediction_results_highestscore.tsv): viral when the best virus
    score of its frames is at or above their best other score. The report colours chunks by it."""
    return bool(best_virus >= best_other)


def is_viral_sequence(chunks_viral, chunks_scored, threshold):
    """This project's per-sequence verdict (the original decides per chunk only): virus when
    chunks_viral >= threshold x chunks_scored, compared in whole numbers of chunks (no rounding
    surprise: 0.5 of 8 chunks is 4 chunks), so the verdict can be read off the chunk track."""
    return chunks_scored > 0 and chunks_viral >= threshold * chunks_scored - 1e-9


def chunk_bounds(length, chunk_size):
    """(start, end) of each chunk of a sequence, spreading the overlap exactly as VirNucPro does."""
    n = math.ceil(length / chunk_size)
    overlap = n * chunk_size - length
    low = overlap // n
    k = overlap - low * (n - 1)
    shifts = [low + 1] * k + [low] * (n - 1 - k) + [0]
    bounds, shifted = [], 0
    for i in range(n):
        start = i * chunk_size - shifted
        bounds.append((start, min(start + chunk_size, length)))
        shifted += shifts[i]
    return bounds


def chunk_id(record_id, number):
    """`<record id>_chunk_<number>` (number 1-based)."""
    return f"{record_id}_chunk_{number}"


def chunk_of(frame_id):
    """The original's Modified_ID: the frame id minus its frame suffix (last two characters)."""
    return frame_id[:-2]


def sequence_of(chunk):
    """The input record id of a chunk id `<record>_chunk_<n>` (and n, 1-based)."""
    record, sep, number = chunk.rpartition("_chunk_")
    if not sep or not number.isdigit():
        return None, None
    return record, int(number)


def update_chunk_best(chunk_best, frame_id, score1, score2):
    """Keep each chunk's best score1 and best score2 (over its frames, independently)."""
    chunk = chunk_of(frame_id)
    best = chunk_best.get(chunk)
    if best is None:
        chunk_best[chunk] = [score1, score2]
    else:
        best[0] = max(best[0], score1)
        best[1] = max(best[1], score2)


def check_chunk_size(chunk_size, any_chunk_size=False, option="--chunk_size", warn=False):
    """The chunk size, or a one-line error: a whole number of at least 3 (a chunk must hold a
    codon), and 300 or 500, the sizes the published classifiers were trained on, unless
    `any_chunk_size` (a classifier of one's own). `warn`: say once that another size was accepted."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 3:
        raise UserError(f"{option} must be a whole number of at least 3 (300 or 500 for the published "
                        f"classifiers), got {chunk_size!r}")
    if chunk_size not in CHUNK_SIZES:
        if not any_chunk_size:
            raise UserError(f"{option} {chunk_size}: the published classifiers were trained on 300 or 500 bp chunks "
                            "(--any_chunk_size allows another size, for a classifier of your own)")
        if warn:
            log.warning("%s %s: the published classifiers were trained on 300 or 500", option, chunk_size)
    return chunk_size


def check_threshold(threshold):
    """The verdict threshold as a float in [0, 1] (None: the default), or a one-line error."""
    if threshold is None:
        return DEFAULT_THRESHOLD
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise UserError(f"--threshold must be a number, got {threshold!r}") from None
    if not 0.0 <= threshold <= 1.0:
        raise UserError(f"--threshold must be between 0 and 1, got {threshold}")
    return threshold


def read_classify_record(summary):
    """The classify record that vouches for this sequence_summary.tsv (same folder, and it
    recorded this file's SHA-256), or None: how report finds the run's threshold and chunk size."""
    from .outputs import file_sha256, read_record

    record = read_record(os.path.join(os.path.dirname(str(summary)), CLASSIFY_RECORD))
    if not record or not os.path.isfile(str(summary)) or record.get("summary_sha256") != file_sha256(summary):
        return None
    return record
