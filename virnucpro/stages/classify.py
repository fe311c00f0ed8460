"""Classify stage (SPEC 1.6): score merged features with the MLP and write the original's two
tables, plus a per-sequence summary so that each input contig gets one answer.

- `prediction_results.tsv`: one row per scored frame, in feature order, scores as numpy prints a
  float32 (exactly the original's `prediction_results.txt`).
- `prediction_results_highestscore.tsv`: one row per chunk (frame id minus its last two
  characters), `True` when the chunk's best virus score >= its best other score, sorted by id.
- `sequence_summary.tsv`: one row per input sequence (see `summarize`).
Features are read in row blocks, so memory does not hold the features; it holds one small entry
per chunk (for the sorted highest-score table and the summary) and the frame ids (to refuse duplicates).
"""

import logging
import os

import numpy as np

from ..errors import UserError
from ..models.classifier import CLASS_NAMES, load_classifier, match_trained_chunk_size, predict_proba
from ..names import (CLASSIFY_RECORD, CLASSIFY_STAGE, HIGHESTSCORE, HIGHESTSCORE_COLUMNS, MADE_FROM, PREDICTION_COLUMNS,
                    PREDICTIONS, SEQUENCES_COLUMNS, SEQUENCES_TABLE, SUMMARY, SUMMARY_COLUMNS, TRANSLATE_RECORD,
                    as_path_list)
from ..outputs import atomic_paths
from ..pt_io import is_hdf5, read_pt_embeddings
from ..results import (DEFAULT_THRESHOLD, check_threshold, is_viral_chunk, is_viral_sequence, sequence_of,
                      update_chunk_best)
from ..tsv import read_tsv, tsv_line

log = logging.getLogger(__name__)

#: Width of a frame's features: DNABERT-S (768) then ESM-2 3B (2560), the classifier's input size.
FEATURE_DIM = 768 + 2560
#: The original scored batches of 256 rows (DataLoader batch_size=256) over all feature files
#: in a row; float32 results can depend on the batch, so the same batches are used here.
MODEL_BATCH = 256
BLOCK_ROWS = 32 * MODEL_BATCH


def iter_feature_blocks(path, block_rows=BLOCK_ROWS):
    """Yield (ids, float32 features) blocks of a features HDF5 file or an original merged `.pt`."""
    path = str(path)
    if is_hdf5(path):
        import h5py

        from ..embeddings_h5 import decode_ids

        try:
            handle = h5py.File(path, "r")
        except OSError as err:
            raise UserError(f"{path}: cannot read HDF5 ({err})") from None
        with handle:
            if "features" not in handle or "ids" not in handle:
                raise UserError(f"{path}: not a merged features file (needs datasets 'ids' and 'features')")
            ids, features = handle["ids"], handle["features"]
            if features.ndim != 2 or features.shape[0] != ids.shape[0]:
                raise UserError(f"{path}: {ids.shape[0]} ids but features of shape {features.shape}")
            for start in range(0, ids.shape[0], block_rows):
                stop = min(start + block_rows, ids.shape[0])
                yield decode_ids(ids[start:stop]), np.asarray(features[start:stop], dtype=np.float32)
        return
    kind, ids, matrix = read_pt_embeddings(path)
    if kind != "merged":
        raise UserError(f"{path}: holds {kind} embeddings, not merged features (run virnucpro-merge first)")
    for start in range(0, len(ids), block_rows):
        yield ids[start : start + block_rows], matrix[start : start + block_rows]


def rebatch(blocks, rows):
    """Regroup (ids, matrix) blocks from several files into blocks of exactly `rows` rows
    (the last may be shorter), so batch boundaries fall where the original's did."""
    pending_ids, pending = [], []
    have = 0
    for ids, matrix in blocks:
        pending_ids.extend(ids)
        pending.append(matrix)
        have += len(ids)
        while have >= rows:
            merged = np.concatenate(pending) if len(pending) > 1 else pending[0]
            yield pending_ids[:rows], merged[:rows]
            pending_ids, pending, have = pending_ids[rows:], [merged[rows:]], have - rows
    if have:
        yield pending_ids, np.concatenate(pending) if len(pending) > 1 else pending[0]


def prediction_line(frame_id, score1, score2):
    """One row of prediction_results.tsv: numpy's str() of float32 scores; a tie goes to others."""
    label = CLASS_NAMES[1] if score2 > score1 else CLASS_NAMES[0]
    return tsv_line((frame_id, label, str(score1), str(score2)), "frame id")


def highestscore_lines(chunk_best):
    """prediction_results_highestscore.tsv: chunks sorted as strings, True when best2 >= best1."""
    yield tsv_line(HIGHESTSCORE_COLUMNS)
    for chunk_id in sorted(chunk_best):
        best_other, best_virus = chunk_best[chunk_id]
        yield tsv_line((chunk_id, str(is_viral_chunk(best_other, best_virus))), "chunk id")


def read_sequences_table(path):
    """`<stem>.sequences.tsv` from translate -> [(sequence_id, length, chunks)] in input order."""
    rows = []
    for line_number, (record, length, chunks) in read_tsv(path, SEQUENCES_COLUMNS, "sequences table"):
        try:
            rows.append((record, int(length), int(chunks)))
        except ValueError:
            raise UserError(f"{path}, line {line_number}: expected id, length, chunks") from None
    return rows


def summarize(chunk_scores, sequences, threshold):
    """One summary row per sequence.

    A chunk is scored when at least one of its six frames is stop-free (others get no score);
    it is called viral by the original's rule (best virus score >= best other score over its
    frames, its `prediction_results_highestscore.tsv` row). This project's aggregation: a
    sequence's `viral_fraction` is chunks_viral / chunks_scored and its `verdict` is `virus` when
    viral_fraction >= threshold, `others` below it, `unscored` when no chunk was scored; so the
    verdict follows from counting the chunks the original calls viral (the report's red bars).
    `mean_virus_score` (the mean of the scored chunks' best virus scores) is shown beside it but
    decides nothing: a mean of probabilities can sit above the threshold while most chunks are
    called others. Without a sequences table, sequences come from the frame ids in first-seen
    order, `length` is NA and `chunks` counts only scored chunks.
    """
    per_sequence = {}
    odd = 0
    for chunk_id, (best_other, best_virus) in chunk_scores.items():
        record, number = sequence_of(chunk_id)
        if record is None:  # not a VirNucPro chunk id: summarized as a one-chunk sequence of its own
            record, number, odd = chunk_id, 1, odd + 1
        per_sequence.setdefault(record, []).append((number, best_other, best_virus))
    if odd:
        log.warning("%d frame id(s) are not of the form <sequence>_chunk_<n><frame>, e.g. '%s'; each is "
                    "summarized as a sequence of its own", odd, next(c for c in chunk_scores if sequence_of(c)[0] is None))
    if sequences is None:
        sequences = [(record, None, len(chunks)) for record, chunks in per_sequence.items()]
    else:
        known = {record: chunks for record, _, chunks in sequences}
        for record, chunks in per_sequence.items():
            if record not in known:
                raise UserError(f"features hold sequence '{record}', which the sequences table does not list")
            too_far = max(number for number, _, _ in chunks)
            if too_far > known[record]:
                raise UserError(f"features hold chunk {too_far} of '{record}', which has {known[record]} chunks")
    rows = []
    for record, length, n_chunks in sequences:
        chunks = per_sequence.get(record, [])
        viral = sum(1 for _, best_other, best_virus in chunks if is_viral_chunk(best_other, best_virus))
        if chunks:
            score = np.float32(np.mean([float(best_virus) for _, _, best_virus in chunks]))
            verdict = "virus" if is_viral_sequence(viral, len(chunks), threshold) else "others"
            score_text, fraction = str(score), str(np.float32(viral / len(chunks)))
        else:
            score_text, fraction, verdict = "NA", "NA", "unscored"
        rows.append((record, "NA" if length is None else str(length), str(n_chunks), str(len(chunks)), str(viral), fraction, score_text, verdict))
    return rows


def classify_record(feature_files, classifier, sequences, threshold, chunk_size):
    """What the tables are made from: each features file's identity (the `made_from` merge records
    and its content digest, else its SHA-256), the classifier's and the sequences table's SHA-256, the threshold, and the
    chunk size the frames were cut with (None when unknown)."""
    from ..embeddings_h5 import CONTENT_DIGEST
    from ..outputs import input_identity

    return {"features": [input_identity(path, (MADE_FROM, CONTENT_DIGEST)) for path in feature_files],
            "classifier": input_identity(classifier), "threshold": threshold, "chunk_size": chunk_size,
            "sequences": input_identity(sequences) if sequences else None}


def recorded_chunk_size(sequences):
    """The chunk size in translate's manifest beside its `<stem>.sequences.tsv`, or None."""
    from ..outputs import read_record

    folder, name = os.path.split(str(sequences))
    if not name.endswith(SEQUENCES_TABLE):
        return None
    manifest = read_record(os.path.join(folder, name[: -len(SEQUENCES_TABLE)] + TRANSLATE_RECORD)) or {}
    if manifest.get("outputs", {}).get("sequences") != name:
        return None
    return manifest.get("settings", {}).get("chunk_size")


def _check_finite(path, ids, block):
    """A NaN or infinite feature would still get a verdict: refuse it, naming the frames."""
    bad = ~np.isfinite(block).all(axis=1)
    if bad.any():
        named = [frame_id for frame_id, b in zip(ids, bad) if b]
        shown = ", ".join(f"'{i}'" for i in named[:5]) + (f" and {len(named) - 5} more" if len(named) > 5 else "")
        raise UserError(f"{path}: non-finite (NaN or infinite) features for frame(s) {shown}; no verdict can be given")


def classify_features(
    features,
    classifier,
    outdir,
    sequences=None,
    threshold=DEFAULT_THRESHOLD,
    overwrite=False,
    device="cpu",
    block_rows=BLOCK_ROWS,
    chunk_size=None,
    redo=False,
    any_chunk_size=False,
):
    """Score features file(s) in order and write the three TSVs into `outdir`; returns their paths.

    `outdir/classify.json` records what the tables were made from (`classify_record`) and the
    summary's SHA-256. Tables made the same way are kept; tables made differently are refused
    (one line) unless `overwrite`, or made again with `redo` (for a caller that owns the folder).
    `chunk_size` (recorded for the report) defaults to the one in translate's manifest beside
    `sequences`; when known, it must be one the classifier says it was trained on (its metadata or
    published file name) unless `any_chunk_size`.
    """
    from ..outputs import make_once

    outdir = str(outdir)
    paths = [os.path.join(outdir, name) for name in (PREDICTIONS, HIGHESTSCORE, SUMMARY)]
    result = dict(zip(("predictions", "highestscore", "summary"), paths))
    feature_files = as_path_list(features)
    if not feature_files:
        raise UserError("no --features file given")
    threshold = check_threshold(threshold)
    if chunk_size is None and sequences:
        chunk_size = recorded_chunk_size(sequences)
    model = load_classifier(classifier)  # before any work: a wrong file, or one for another chunk size, stops here
    if chunk_size is not None:
        chunk_size = match_trained_chunk_size(classifier, model, chunk_size, any_chunk_size)
    record = classify_record(feature_files, classifier, sequences, threshold, chunk_size)
    manifest_path = os.path.join(outdir, CLASSIFY_RECORD)

    def made_from(counts, digests):
        return {"made_from": record, "summary_sha256": digests[SUMMARY], "sha256": digests, "threshold": threshold,
                "chunk_size": chunk_size, "counts": counts, "test_classifier": bool(model.virnucpro.get("test_model"))}

    make_once(paths, record, lambda: _classify(feature_files, classifier, paths, sequences, threshold, device, block_rows),
              what="classification", lock=manifest_path, lock_what=f"classification in {outdir}",
              record_path=manifest_path, record=made_from, overwrite=overwrite, redo=redo)
    return result


def _classify(feature_files, classifier, paths, sequences, threshold, device, block_rows):
    """Score the frames and write the three tables (atomically, together); returns counts."""
    outdir = os.path.dirname(paths[0])
    sequence_rows = read_sequences_table(sequences) if sequences else None
    from tqdm import tqdm

    model = load_classifier(classifier).to(device)
    block_rows = max(MODEL_BATCH, block_rows // MODEL_BATCH * MODEL_BATCH)  # batches stay aligned
    chunk_scores = {}  # chunk id -> [best score1, best score2] (float32)
    n_frames = 0
    seen = set()
    os.makedirs(outdir, exist_ok=True)

    def blocks():
        for path in feature_files:
            for ids, block in iter_feature_blocks(path, block_rows):
                if block.shape[1] != model.input_dim:
                    raise UserError(f"{path}: features have {block.shape[1]} columns, the classifier expects {model.input_dim}")
                _check_finite(path, ids, block)
                yield ids, block

    with atomic_paths(paths) as (tmp_predictions, tmp_highest, tmp_summary):
        with open(tmp_predictions, "w", newline="\n", encoding="utf-8") as out, tqdm(desc=CLASSIFY_STAGE, unit="frame", disable=None) as bar:
            out.write(tsv_line(PREDICTION_COLUMNS))
            for ids, block in rebatch(blocks(), block_rows):
                probabilities = np.concatenate(
                    [predict_proba(model, block[i : i + MODEL_BATCH], device) for i in range(0, len(ids), MODEL_BATCH)]
                )
                lines = []
                for frame_id, (score1, score2) in zip(ids, probabilities):
                    if frame_id in seen:
                        raise UserError(f"frame '{frame_id}' appears twice in the features")
                    seen.add(frame_id)
                    lines.append(prediction_line(frame_id, score1, score2))
                    update_chunk_best(chunk_scores, frame_id, score1, score2)
                out.writelines(lines)
                n_frames += len(ids)
                bar.update(len(ids))
        with open(tmp_highest, "w", newline="\n", encoding="utf-8") as out:
            out.writelines(highestscore_lines(chunk_scores))
        rows = summarize(chunk_scores, sequence_rows, threshold)
        with open(tmp_summary, "w", newline="\n", encoding="utf-8") as out:
            out.write(tsv_line(SUMMARY_COLUMNS))
            out.writelines(tsv_line(row, "sequence id") for row in rows)
    n_viral_chunks = sum(1 for best_other, best_virus in chunk_scores.values() if is_viral_chunk(best_other, best_virus))
    log.info(
        "scored %d frames in %d chunks (%d called viral); %d sequences summarized into %s",
        n_frames, len(chunk_scores), n_viral_chunks, len(rows), outdir,
    )
    return {"frames": n_frames, "chunks": len(chunk_scores), "sequences": len(rows)}


def classify(
    *more_features,
    features,
    classifier,
    outdir,
    sequences=None,
    threshold=DEFAULT_THRESHOLD,
    device="cpu",
    chunk_size=None,
    any_chunk_size=False,
    overwrite=False,
    verbose=False,
):
    """Score merged features with the VirNucPro MLP classifier.

    Usage: virnucpro-classify --features H5_OR_PT [MORE_FEATURES ...] --classifier PTH --outdir DIR
             --sequences TSV --chunk_size 300|500 --threshold X --device DEVICE
    Features are scored in the order given (--features may also be a comma-separated list).
    Writes DIR/prediction_results.tsv and DIR/prediction_results_highestscore.tsv (the original's
    two tables: per frame, score1 = softmax probability of class others, score2 = of class virus;
    per chunk, Is_Virus = its best score2 >= its best score1) and DIR/sequence_summary.tsv, this
    project's per-sequence aggregation: chunks, chunks_scored (chunks with a stop-free frame),
    chunks_viral, viral_fraction (= chunks_viral / chunks_scored), mean_virus_score (shown, decides
    nothing) and verdict (virus when viral_fraction >= --threshold, others below, unscored when no
    chunk was scored). --sequences (translate's <stem>.sequences.tsv) adds lengths, unscored chunks
    and sequences without any scored frame.

    DIR/classify.json records what the tables were made from, the threshold and the chunk size,
    so virnucpro-report needs neither again. A rerun keeps tables made the same way and refuses
    (one line) to replace tables made differently unless --overwrite.

    Args:
      more_features: further feature files, after --features (the same as listing them there).
      features: merged features, HDF5 or the original's .pt.
      classifier: the published 300_model.pth / 500_model.pth, a state dict or safetensors; loaded without running pickled code.
      outdir: folder for the tables (created if needed).
      sequences: translate's <stem>.sequences.tsv, to summarize every sequence, scored or not.
      threshold: a sequence is called virus when at least this fraction of its scored chunks is viral.
      device: where to run the classifier: cpu, cuda or cuda:N.
      chunk_size: the chunk size the frames were cut with, checked against the classifier and recorded for the report. Default: the one in translate's manifest beside --sequences.
      any_chunk_size: accept a chunk size other than 300 or 500, or other than the one the classifier says.
      overwrite: replace tables made differently.
      verbose: debug logging.
    """
    files = as_path_list(features) + [str(f) for f in more_features]
    if not files:
        raise UserError("--features is required")
    classify_features(files, classifier, outdir, sequences=sequences, threshold=threshold, overwrite=overwrite, device=device,
                      chunk_size=chunk_size, any_chunk_size=any_chunk_size)
