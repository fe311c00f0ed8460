"""`report.html` of a prediction run: one self-contained file (plots embedded as PNG data URIs).

It shows what the original's plotting script (`drew_fig.py`) drew, chunk scores along the first
sequences, and more: score distributions of frames and sequences, verdict counts, the
per-sequence table, counts, stage times and the run's settings.
"""

import base64
import collections
import datetime
import html
import io
import logging
import os

import numpy as np

from . import __version__
from .errors import UserError
from .names import PREDICTION_COLUMNS, REPORT, REPORT_RECORD, SUMMARY_COLUMNS
from .results import DEFAULT_THRESHOLD, chunk_bounds, chunk_id, read_classify_record, update_chunk_best

log = logging.getLogger(__name__)

#: Sequences drawn as chunk tracks (the original drew 5), and rows in the HTML verdict table.
TRACKS = 12
TABLE_ROWS = 2000
#: Numeric columns of sequence_summary.tsv: (name, type, may be NA).
SUMMARY_NUMBERS = (("length", int, True), ("chunks", int, False), ("chunks_scored", int, False),
                   ("chunks_viral", int, False), ("score", float, True))


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
    try:
        handle = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file (the {what} of virnucpro-classify)") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read it ({err.strerror})") from None
    with handle:
        try:
            header = handle.readline().rstrip("\n").split("\t")
            if header[: len(columns)] != list(columns):
                raise UserError(f"{path}: not a {what} (its header should start with {' '.join(columns)})")
            for number, line in enumerate(handle, start=2):
                yield number, line.rstrip("\n").split("\t")
        except UnicodeDecodeError:
            raise UserError(f"{path}: not a text file, so not a {what}") from None


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

    sequence_scores = [float(r["score"]) for r in results.summary_rows if r["score"] != "NA"]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.hist(sequence_scores, bins=bins, color="#2c3e50", edgecolor="white")
    ax.axvline(results.threshold, color="#c0392b", linestyle="--", label=f"threshold {results.threshold}")
    ax.set_xlabel("sequence score (mean best virus score of its scored chunks)")
    ax.set_ylabel("sequences")
    ax.set_title("Sequence scores")
    ax.legend(frameon=False)
    images.append(("Sequence scores", "Each sequence's score; at or above the threshold it is called virus.", _png(fig)))

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
            starts, ends, heights, colors = [], [], [], []
            for number, (start, end) in enumerate(chunk_bounds(int(row["length"]), chunk_size), 1):
                best = results.chunk_best.get(chunk_id(row["sequence_id"], number))
                starts.append(start)
                ends.append(end)
                heights.append(0 if best is None else best[1])
                colors.append("#bdc3c7" if best is None else "#c0392b" if best[1] >= best[0] else "#2c3e50")
            ax.hlines(heights, starts, ends, colors=colors, linewidth=2)  # one artist per track, not per chunk
            ax.axhline(0.5, color="#95a5a6", linewidth=0.5, linestyle=":")
            ax.set_ylim(-0.05, 1.05)
            ax.set_title(f"{row['sequence_id']}  ({row['verdict']}, score {row['score']})", fontsize=10, loc="left",
                         parse_math=False)  # an id is text: `$` in it is not mathtext
            ax.spines["top"].set_visible(False)
            ax.spines["right"].set_visible(False)
            ax.ticklabel_format(style="plain", axis="x", useOffset=False)
        axes[-1, 0].set_xlabel("position (bp)")
        fig.tight_layout()
        images.append((
            "Chunks along sequences",
            f"Best virus score of each chunk along the first {len(shown)} sequences, as the original's drew_fig.py "
            "drew them: red chunks are called viral, dark blue others, grey ones had no stop-free frame.",
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
"""


def write_report(path, results, settings, times, chunk_size):
    """Write the self-contained report.html atomically; returns its path."""
    from .outputs import atomic_paths

    counts = results.counts()
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>VirNucPro report: {html.escape(settings.get('input_name', ''))}</title><style>{STYLE}</style></head><body>",
        f"<h1>VirNucPro report: {html.escape(settings.get('input_name', ''))}</h1>",
        f"<p class='note'>virnucpro {html.escape(__version__)}, written {datetime.datetime.now().isoformat(timespec='seconds')}.</p>",
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
    parts += [
        "<h2>Per-sequence verdicts</h2>",
        f"<p class='note'>score = mean over a sequence's scored chunks of the chunk's best virus score; verdict virus when "
        f"score &gt;= {html.escape(str(results.threshold))}. Full table: sequence_summary.tsv"
        + (f" (first {TABLE_ROWS} of {len(results.summary_rows)} shown)" if len(results.summary_rows) > TABLE_ROWS else "")
        + ".</p>",
        "<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in header) + f"</tr></thead><tbody>{body}</tbody></table>",
        *(["<h2>Stage times</h2>", _table(["stage", "seconds"], [(stage, f"{seconds:.1f}") for stage, seconds in times.items()])]
          if times else []),
        "<h2>Run settings</h2>",
        _table(["setting", "value"], sorted((k, v) for k, v in settings.items())),
        "<p class='note'>A run made with the random test models of virnucpro-make-test-models gives meaningless scores; "
        "real answers need the published classifier and the real DNABERT-S and ESM-2 models.</p>",
        "</body></html>",
    ]
    with atomic_paths([path]) as (tmp,):
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write("\n".join(parts))
    return path


def _check_chunk_size(results, chunk_size, path):
    """The chunk tracks need the run's chunk size; a wrong one would draw misplaced chunks."""
    for row in results.summary_rows:
        if row["length"] != "NA" and int(row["length"]) <= 0:
            raise UserError(f"{path}: sequence '{row['sequence_id']}' has length {row['length']}")
        if row["length"] != "NA" and len(chunk_bounds(int(row["length"]), chunk_size)) != int(row["chunks"]):
            raise UserError(f"{path}: sequence '{row['sequence_id']}' of {row['length']} bp has {row['chunks']} chunks, "
                            f"not what --chunk_size {chunk_size} gives; pass the run's --chunk_size")


def _check_threshold(results, path):
    """Warn when the verdicts were made with another threshold than the one the report draws."""
    threshold = np.float32(results.threshold)
    disagree = [r["sequence_id"] for r in results.summary_rows
                if r["score"] != "NA" and (np.float32(r["score"]) >= threshold) != (r["verdict"] == "virus")]
    if disagree:
        log.warning("%s: %d verdict(s) (e.g. '%s') were made with another threshold than %s; pass the run's --threshold",
                    path, len(disagree), disagree[0], results.threshold)


def make_report(predictions, summary, outdir, chunk_size=None, threshold=None, name=None, settings=None,
                times=None, results=None, overwrite=False, redo=False):
    """Write outdir/report.html for the tables `predictions` and `summary`; returns its path.

    `chunk_size` and `threshold` default to those classify recorded for this summary
    (classify.json beside it), else 500 and 0.5. `outdir/report.json` records what the report was
    made from: a report made the same way is kept; one made differently is refused (one line)
    unless `overwrite`, or made again with `redo` (for a caller that owns the folder).
    `settings`/`times` (predict's) are shown in the report; `results`, when the caller has read
    the tables already.
    """
    from .outputs import exclusive, input_identity, remove_own_temps, reuse_existing, write_record, read_record

    predictions, summary, outdir = str(predictions), str(summary), str(outdir)
    recorded = read_classify_record(summary) or {}
    if chunk_size is None:
        chunk_size = recorded.get("chunk_size") or 500
    if threshold is None:
        threshold = recorded.get("threshold", DEFAULT_THRESHOLD)
    if str(chunk_size) not in ("300", "500"):
        log.warning("--chunk_size %s: the published classifiers were trained on 300 or 500", chunk_size)
    try:
        chunk_size = int(chunk_size)
        threshold = float(threshold)
    except ValueError:
        raise UserError(f"--chunk_size must be a whole number and --threshold a number, got {chunk_size!r}, {threshold!r}") from None
    if chunk_size <= 0:
        raise UserError(f"--chunk_size must be positive, got {chunk_size}")
    name = str(name) if name is not None else os.path.basename(os.path.dirname(os.path.abspath(summary)))
    settings = settings or dict(input_name=name, chunk_size=chunk_size, threshold=threshold,
                                predictions=os.path.basename(predictions), summary=os.path.basename(summary))
    record = dict(settings, chunk_size=chunk_size, threshold=threshold,
                  tables={"predictions": input_identity(predictions), "summary": input_identity(summary)})
    path = os.path.join(outdir, REPORT)
    record_path = os.path.join(outdir, REPORT_RECORD)
    with exclusive(path, f"report {path}"):
        if reuse_existing([path], (read_record(record_path) or {}).get("made_from"), record, overwrite, redo, "report"):
            return path
        if results is None:
            results = read_results(dict(predictions=predictions, summary=summary), threshold)
        _check_chunk_size(results, chunk_size, summary)
        _check_threshold(results, summary)
        for temp_of in (path, record_path):
            remove_own_temps(temp_of)
        if os.path.exists(record_path):  # an earlier record must not vouch for the report replaced now
            os.remove(record_path)
        write_report(path, results, settings, times or {}, chunk_size)
        write_record(record_path, {"made_from": record})
    counts = results.counts()
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
      threshold: the run's verdict threshold, drawn on the score plot (default: the one classify recorded, else 0.5).
      name: what the report is about, in its title (default: the summary's folder name).
      overwrite: replace an existing report made differently.
      verbose: debug logging.
    """
    make_report(predictions, summary, outdir, chunk_size=chunk_size, threshold=threshold, name=name,
                overwrite=overwrite)
