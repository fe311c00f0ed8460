"""`report.html` of a prediction run: one self-contained file (plots embedded as PNG data URIs).

It shows what the original's plotting script (`drew_fig.py`) drew, chunk scores along the first
sequences, and more: the rules for frames, chunks and sequences in words, the distributions of
frame scores and of the sequences' fractions of viral chunks, verdict counts, the per-sequence
table, counts, stage times and the run's settings; a banner when the run's models record that
they are virnucpro-make-test-models' random ones.
"""

import base64
import collections
import datetime
import html
import io
import logging
import os
import time

import numpy as np

from .. import __version__
from ..errors import UserError
from ..names import (HIGHESTSCORE, PREDICTION_COLUMNS, PREDICTIONS, REPORT, REPORT_RECORD, REPORT_STAGE, SUMMARY,
                     SUMMARY_COLUMNS)
from ..results import (DEFAULT_THRESHOLD, check_chunk_size, check_threshold, chunk_bounds, chunk_id, is_viral_chunk,
                      is_viral_sequence, read_classify_record, update_chunk_best)

log = logging.getLogger(__name__)

#: Sequences drawn as chunk tracks (the original drew 5), and rows in the HTML verdict table.
TRACKS = 12
TABLE_ROWS = 2000
#: Numeric columns of sequence_summary.tsv: (name, type, may be NA).
SUMMARY_NUMBERS = (("length", int, True), ("chunks", int, False), ("chunks_scored", int, False),
                   ("chunks_viral", int, False), ("viral_fraction", float, True), ("mean_virus_score", float, True))
VIRUS, OTHERS, UNSCORED = "#c0392b", "#2c3e50", "#bdc3c7"


class Results:
    """What the report and the final summary need, read back from the run's TSVs."""

    def __init__(self, frame_virus_scores, frames_virus, chunk_best, summary_rows, threshold):
        self.frame_virus_scores = frame_virus_scores  # float32 [frames]
        self.frames_virus = frames_virus
        self.chunk_best = chunk_best  # chunk id -> [best score1, best score2]
        self.summary_rows = summary_rows  # dicts from sequence_summary.tsv
        self.threshold = threshold

    def counts(self):
        chunks = sum(int(r["chunks"]) for r in self.summary_rows)
        scored = sum(int(r["chunks_scored"]) for r in self.summary_rows)
        return dict(
            sequences=len(self.summary_rows),
            chunks=chunks,
            chunks_scored=scored,
            chunks_unscored=chunks - scored,
            chunks_viral=sum(int(r["chunks_viral"]) for r in self.summary_rows),
            frames=len(self.frame_virus_scores),
            frames_virus=self.frames_virus,
            verdicts=dict(collections.Counter(r["verdict"] for r in self.summary_rows)),
        )


def _table_lines(path, what, columns):
    """Rows of a TSV as lists, after checking that it exists and starts with `columns` (one-line errors)."""
    from ..tsv import read_tsv

    return read_tsv(path, columns, what, exact=False)


def read_results(tables, threshold):
    """Read prediction_results.tsv and sequence_summary.tsv (streamed; fine for millions of frames).

    `tables`: dict(predictions=path, summary=path). Missing or malformed tables are one-line UserErrors.
    """
    scores, frames_virus, chunk_best = [], 0, {}
    path = tables["predictions"]
    for number, fields in _table_lines(path, "prediction table", PREDICTION_COLUMNS):
        try:
            frame_id, label, score1, score2 = fields
            s1, s2 = float(score1), float(score2)
        except ValueError:
            raise UserError(f"{path}, line {number}: expected 4 tab-separated fields (id, label, two scores)") from None
        if not (np.isfinite(s1) and np.isfinite(s2)):
            raise UserError(f"{path}, line {number}: frame '{frame_id}' has a non-finite score ({score1}, {score2})")
        scores.append(s2)
        frames_virus += label == "virus"
        update_chunk_best(chunk_best, frame_id, s1, s2)
    path = tables["summary"]
    rows = []
    for number, fields in _table_lines(path, "sequence summary", SUMMARY_COLUMNS):
        row = dict(zip(SUMMARY_COLUMNS, fields))
        if len(fields) != len(SUMMARY_COLUMNS) or not all(
            _is_number(row[key], kind, may_be_na) for key, kind, may_be_na in SUMMARY_NUMBERS
        ):
            raise UserError(f"{path}, line {number}: expected {len(SUMMARY_COLUMNS)} tab-separated fields "
                            f"({' '.join(SUMMARY_COLUMNS)}) with numbers or NA")
        rows.append(row)
    return Results(np.asarray(scores, dtype=np.float32), frames_virus, chunk_best, rows, threshold)


def _is_number(text, kind, may_be_na):
    if text == "NA":
        return may_be_na
    try:
        kind(text)
    except ValueError:
        return False
    return True


def chunk_colour(best):
    """A chunk's colour on the track: by the same rule as its chunks_viral count (None: unscored)."""
    return UNSCORED if best is None else VIRUS if is_viral_chunk(best[0], best[1]) else OTHERS


def _png(fig):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _plots(results, chunk_size):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = []
    bins = np.linspace(0.0, 1.0, 51)

    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.hist(results.frame_virus_scores, bins=bins, color="#c0392b", edgecolor="white")
    ax.set_xlabel("virus score (score2) of each scored frame")
    ax.set_ylabel("frames")
    ax.set_title("Frame scores")
    images.append(("Frame scores", "Distribution of the classifier's virus probability over all scored frames.", _png(fig)))

    fractions = [float(r["viral_fraction"]) for r in results.summary_rows if r["viral_fraction"] != "NA"]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.hist(fractions, bins=np.linspace(0.0, 1.0, 21), color=OTHERS, edgecolor="white")
    ax.axvline(results.threshold, color=VIRUS, linestyle="--", label=f"threshold {results.threshold}")
    ax.set_xlabel("viral_fraction: chunks called viral / scored chunks")
    ax.set_ylabel("sequences")
    ax.set_title("Fraction of viral chunks per sequence")
    ax.legend(frameon=False)
    images.append(("Fraction of viral chunks per sequence",
                   "A sequence whose viral_fraction is at or right of the threshold line is called virus.", _png(fig)))

    verdicts = collections.Counter(r["verdict"] for r in results.summary_rows)
    names = ["virus", "others", "unscored"]
    fig, ax = plt.subplots(figsize=(5, 2.6))
    ax.barh(names, [verdicts.get(n, 0) for n in names], color=["#c0392b", "#2c3e50", "#95a5a6"])
    ax.invert_yaxis()
    ax.set_xlabel("sequences")
    ax.set_title("Verdicts")
    images.append(("Verdicts", "Sequences per verdict.", _png(fig)))

    shown = [r for r in results.summary_rows if r["length"] != "NA"][:TRACKS]
    if shown:
        fig, axes = plt.subplots(nrows=len(shown), ncols=1, figsize=(12, 1.5 * len(shown) + 0.5), squeeze=False)
        for ax, row in zip(axes[:, 0], shown):
            starts, ends, heights, others, colors = [], [], [], [], []
            for number, (start, end) in enumerate(chunk_bounds(int(row["length"]), chunk_size), 1):
                best = results.chunk_best.get(chunk_id(row["sequence_id"], number))
                starts.append(start)
                ends.append(end)
                heights.append(0 if best is None else best[1])
                others.append(np.nan if best is None else best[0])
                colors.append(chunk_colour(best))
            # One artist per kind of line, not per chunk. The faint line is the chunk's best other
            # score: a bar is red exactly where it stands at or above that line (the original's rule).
            ax.hlines(others, starts, ends, colors="#95a5a6", linewidth=1, linestyles=":")
            ax.hlines(heights, starts, ends, colors=colors, linewidth=2.5)
            ax.set_ylim(-0.05, 1.05)
            verdict = row["verdict"]
            rule = (f"{row['chunks_viral']} of {row['chunks_scored']} scored chunks viral"
                    + (f", {'>=' if verdict == 'virus' else '<'} {results.threshold}" if verdict != "unscored" else ""))
            ax.set_title(f"{row['sequence_id']}: {verdict} ({rule})", fontsize=10, loc="left",
                         color=VIRUS if verdict == "virus" else "#222222",
                         parse_math=False)  # an id is text: `$` in it is not mathtext
            ax.spines["top"].set_visible(False)
            ax.spines["right"].set_visible(False)
            ax.ticklabel_format(style="plain", axis="x", useOffset=False)
        axes[-1, 0].set_xlabel("position (bp)")
        fig.tight_layout()
        images.append((
            "Chunks along sequences",
            f"Each chunk along the first {len(shown)} sequences, as the original's drew_fig.py drew it: the bar is the "
            "chunk's best virus score (score2), the dotted line its best other score (score1). A chunk is viral (red) "
            "when its bar is at or above its dotted line, others (dark blue) below it; grey chunks had no stop-free "
            "frame. The sequence's verdict counts the red bars (see How to read this report).",
            _png(fig),
        ))
    return images


def _table(header, rows):
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; } th { background: #f4f4f4; }
td.virus { color: #c0392b; font-weight: bold; } img { max-width: 100%; } .note { color: #666; font-size: 0.9em; }
.banner { background: #fdecea; border: 2px solid #c0392b; color: #7b1d12; padding: 0.8em 1em; font-size: 1.1em; margin: 1em 0; }
.rules { background: #f7f9fb; border-left: 4px solid #2c3e50; padding: 0.4em 1em; }
"""


def _rules(threshold):
    """How to read the tables and the verdict, in words (the page explains itself)."""
    t = html.escape(str(threshold))
    return f"""<div class='rules'>
<p><b>Frames</b> ({PREDICTIONS}, as the original wrote it): the classifier scores each stop-free
reading frame of a chunk; <b>score1</b> is its softmax probability of class <i>others</i>, <b>score2</b> of
class <i>virus</i> (they sum to 1); Prediction is virus when score2 &gt; score1.</p>
<p><b>Chunks</b> ({HIGHESTSCORE}, the original's rule): a chunk is <b>viral</b>
(Is_Virus True) when its best score2 over its frames is at or above its best score1 over its frames.
A chunk without a stop-free frame gets no score.</p>
<p><b>Sequences</b> ({SUMMARY}, <i>this project's aggregation</i>; the original stops at chunks):
viral_fraction = chunks_viral / chunks_scored, and the verdict is <b>virus</b> when viral_fraction &gt;= {t}
(--threshold), <b>others</b> below it, <b>unscored</b> when no chunk was scored. So counting the red bars of a
sequence's chunk track gives its verdict. mean_virus_score, the mean of the chunks' best score2, is shown
for information and decides nothing.</p></div>"""


def _banner(settings, test_classifier):
    """A prominent warning when the run used virnucpro-make-test-models' random models (as recorded)."""
    used = [m for m in str(settings.get("test_models", "none")).split(", ") if m and m != "none"]
    if test_classifier and "classifier" not in used:
        used.append("classifier")
    if not used:
        return []
    return [f"<div class='banner'><b>Test models: these scores mean nothing.</b> This run used the random test "
            f"model(s) of virnucpro-make-test-models ({html.escape(', '.join(used))}). Real answers need the published "
            "classifier (300_model.pth / 500_model.pth) and the real DNABERT-S and ESM-2 models.</div>"]


def write_report(path, results, settings, times, chunk_size, started=None, test_classifier=False):
    """Write the self-contained report.html atomically; returns its path. `times`: stage -> seconds
    (or text); `started`: when the report stage began (perf_counter), to show its own time too."""
    from ..outputs import atomic_paths

    counts = results.counts()
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>VirNucPro report: {html.escape(settings.get('input_name', ''))}</title><style>{STYLE}</style></head><body>",
        f"<h1>VirNucPro report: {html.escape(settings.get('input_name', ''))}</h1>",
        *_banner(settings, test_classifier),
        f"<p class='note'>virnucpro {html.escape(__version__)}, written {datetime.datetime.now().isoformat(timespec='seconds')}.</p>",
        "<h2>How to read this report</h2>",
        _rules(results.threshold),
        "<h2>Counts</h2>",
        _table(["", "count"], [
            ("sequences", counts["sequences"]),
            ("chunks", counts["chunks"]),
            ("chunks without a stop-free frame (no score)", counts["chunks_unscored"]),
            ("frames scored", counts["frames"]),
            ("frames predicted virus", counts["frames_virus"]),
            ("chunks called viral (of scored chunks)", f"{counts['chunks_viral']} of {counts['chunks_scored']}"),
            *[(f"sequences: {v}", counts["verdicts"].get(v, 0)) for v in ("virus", "others", "unscored")],
        ]),
    ]
    for title, caption, uri in _plots(results, chunk_size):
        parts += [f"<h2>{html.escape(title)}</h2><p class='note'>{html.escape(caption)}</p>", f"<img alt='{html.escape(title)}' src='{uri}'>"]
    header = SUMMARY_COLUMNS
    rows = results.summary_rows[:TABLE_ROWS]
    body = "".join(
        "<tr>" + "".join(
            f"<td class='{'virus' if key == 'verdict' and row[key] == 'virus' else ''}'>{html.escape(row.get(key, ''))}</td>"
            for key in header
        ) + "</tr>"
        for row in rows
    )
    stage_times = [(stage, seconds if isinstance(seconds, str) else f"{seconds:.1f}") for stage, seconds in times.items()]
    if times and started is not None:
        stage_times.append((REPORT_STAGE, f"{time.perf_counter() - started:.1f} (until this page was written)"))
    parts += [
        "<h2>Per-sequence verdicts</h2>",
        f"<p class='note'>This project's aggregation: verdict virus when viral_fraction (chunks_viral / chunks_scored) "
        f"&gt;= {html.escape(str(results.threshold))}. Full table: {SUMMARY}"
        + (f" (first {TABLE_ROWS} of {len(results.summary_rows)} shown)" if len(results.summary_rows) > TABLE_ROWS else "")
        + ".</p>",
        "<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in header) + f"</tr></thead><tbody>{body}</tbody></table>",
        *(["<h2>Stage times</h2>", _table(["stage", "seconds"], stage_times)] if stage_times else []),
        "<h2>Run settings</h2>",
        _table(["setting", "value"], sorted((k, v) for k, v in settings.items())),
        "</body></html>",
    ]
    with atomic_paths([path]) as (tmp,):
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write("\n".join(parts))
    return path


def _check_tables_fit_chunk_size(results, chunk_size, path):
    """The chunk tracks need the run's chunk size; a wrong one would draw misplaced chunks."""
    for row in results.summary_rows:
        if row["length"] != "NA" and int(row["length"]) <= 0:
            raise UserError(f"{path}: sequence '{row['sequence_id']}' has length {row['length']}")
        if row["length"] != "NA" and len(chunk_bounds(int(row["length"]), chunk_size)) != int(row["chunks"]):
            raise UserError(f"{path}: sequence '{row['sequence_id']}' of {row['length']} bp has {row['chunks']} chunks, "
                            f"not what --chunk_size {chunk_size} gives; pass the run's --chunk_size")


def _warn_if_other_threshold(results, path):
    """Warn when the verdicts were made with another threshold than the one the report draws."""
    disagree = [r["sequence_id"] for r in results.summary_rows if r["verdict"] != "unscored" and
                is_viral_sequence(int(r["chunks_viral"]), int(r["chunks_scored"]), results.threshold) != (r["verdict"] == "virus")]
    if disagree:
        log.warning("%s: %d verdict(s) (e.g. '%s') were made with another threshold than %s; pass the run's --threshold",
                    path, len(disagree), disagree[0], results.threshold)


def make_report(predictions, summary, outdir, chunk_size=None, threshold=None, name=None, settings=None,
                times=None, results=None, overwrite=False, redo=False, started=None):
    """Write outdir/report.html for the tables `predictions` and `summary`; returns its path.

    `chunk_size` and `threshold` default to those classify recorded for this summary
    (classify.json beside it), else 500 and 0.5. `outdir/report.json` records what the report was
    made from: a report made the same way is kept; one made differently is refused (one line)
    unless `overwrite`, or made again with `redo` (for a caller that owns the folder).
    `settings`/`times`/`started` (predict's) are shown in the report; `results`, when the caller
    has read the tables already. The test-model banner shows when settings or classify's record say
    a test model was used.
    """
    from ..outputs import input_identity, make_once

    predictions, summary, outdir = str(predictions), str(summary), str(outdir)
    recorded = read_classify_record(summary) or {}
    if chunk_size is None:
        chunk_size = recorded.get("chunk_size") or 500
    if threshold is None:
        threshold = recorded.get("threshold", DEFAULT_THRESHOLD)
    chunk_size = check_chunk_size(chunk_size, any_chunk_size=True, warn=True)  # classify matched it to the classifier
    threshold = check_threshold(threshold)
    name = str(name) if name is not None else os.path.basename(os.path.dirname(os.path.abspath(summary)))
    settings = settings or dict(input_name=name, chunk_size=chunk_size, threshold=threshold,
                                predictions=os.path.basename(predictions), summary=os.path.basename(summary))
    record = dict(settings, chunk_size=chunk_size, threshold=threshold,
                  tables={"predictions": input_identity(predictions), "summary": input_identity(summary)})
    path = os.path.join(outdir, REPORT)
    record_path = os.path.join(outdir, REPORT_RECORD)

    def check_tables():  # read only when the report is made, not when it is kept
        nonlocal results
        if results is None:
            results = read_results(dict(predictions=predictions, summary=summary), threshold)
        _check_tables_fit_chunk_size(results, chunk_size, summary)
        _warn_if_other_threshold(results, summary)

    def write():
        write_report(path, results, settings, times or {}, chunk_size, started=started,
                     test_classifier=bool(recorded.get("test_classifier")))
        return results.counts()

    counts = make_once([path], record, write, what="report", lock=path, lock_what=f"report {path}",
                       record_path=record_path, check_first=check_tables,
                       record=lambda _, digests: {"made_from": record, "sha256": digests}, overwrite=overwrite, redo=redo)
    if counts:  # made now, not kept
        log.info("wrote %s: %d sequences, %d frames scored", path, counts["sequences"], counts["frames"])
    return path


def report(predictions, summary, outdir, chunk_size=None, threshold=None, name=None, overwrite=False, verbose=False):
    """Write DIR/report.html for the tables of a prediction run (virnucpro-classify or -predict).

    Usage: virnucpro-report --predictions prediction_results.tsv --summary sequence_summary.tsv --outdir DIR
             [--chunk_size 300|500] [--threshold X] [--name NAME] [--overwrite]
    One self-contained HTML file (plots embedded, no external links), written atomically, with
    DIR/report.json recording what it was made from; an existing report made the same way is
    kept, one made differently is refused unless --overwrite.

    Args:
      predictions: prediction_results.tsv (one row per scored frame).
      summary: sequence_summary.tsv (one row per sequence).
      outdir: folder for report.html (created if needed).
      chunk_size: the run's chunk size, to draw chunks along the sequences (default: the one classify recorded in classify.json beside the summary, else 500).
      threshold: the run's verdict threshold on the fraction of viral chunks, drawn on its plot (default: the one classify recorded, else 0.5).
      name: what the report is about, in its title (default: the summary's folder name).
      overwrite: replace an existing report made differently.
      verbose: debug logging.
    """
    make_report(predictions, summary, outdir, chunk_size=chunk_size, threshold=threshold, name=name,
                overwrite=overwrite)
