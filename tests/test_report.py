"""virnucpro-report: report.html from the tables of a tiny run, self-contained, resumable, one-line errors."""

import html
import os
import re

import pytest

from helpers import DATA, files_in, run_tool
from virnucpro.fasta import format_record, read_fasta

TABLES = ("prediction_results.tsv", "sequence_summary.tsv")
SEQUENCES = ("ssDNA-linear", "RNA-linear")


@pytest.fixture(scope="module")
def tiny_run(test_models, tmp_path_factory):
    """The classify tables of a virnucpro-predict run on two genomes of 8seq.fa, with the tiny models."""
    from virnucpro.stages.predict import predict_run

    records = dict(read_fasta(os.path.join(DATA, "virsorter2", "8seq.fa")))
    fasta = tmp_path_factory.mktemp("input") / "tiny.fa"
    fasta.write_text("".join(format_record(name, records[name]) for name in SEQUENCES))
    outdir = tmp_path_factory.mktemp("run") / "tiny"
    predict_run(str(fasta), str(outdir), chunk_size=500, classifier=test_models["classifier"],
                dnabert_model=test_models["dnabert"], esm_model=test_models["esm"], device="cpu", workers=1)
    return {name: str(outdir / name) for name in TABLES}


def report_args(tables, outdir, *extra):
    return ["--predictions", tables["prediction_results.tsv"], "--summary", tables["sequence_summary.tsv"],
            "--outdir", outdir, *extra]


def read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def test_report_from_the_tables_is_self_contained(tiny_run, tmp_path):
    result = run_tool("virnucpro-report", *report_args(tiny_run, tmp_path / "out", "--name", "my sample"))
    assert result.stdout == ""
    assert files_in(tmp_path / "out") == ["report.html", "report.json"]  # no temporaries left
    page = read(tmp_path / "out" / "report.html")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    images = re.findall(r"<img [^>]*src='([^']*)'", page)
    assert len(images) >= 4 and all(src.startswith("data:image/png;base64,") for src in images)
    # Nothing fetched from elsewhere: no scripts, stylesheets, frames or links to other places.
    assert not re.search(r"<(script|link|iframe|object|embed)\b", page, re.I)
    assert not re.search(r"""\b(src|href)\s*=\s*(?!['"]?data:)""", page, re.I)
    assert "url(" not in page and "@import" not in page
    assert "VirNucPro report: my sample" in page
    for name in SEQUENCES:
        assert name in page
    frames = len(read(tiny_run["prediction_results.tsv"]).splitlines()) - 1
    assert f"<td>frames scored</td><td>{frames}</td>" in page


def test_report_of_predict_and_of_the_tool_show_the_same_counts(tiny_run, tmp_path):
    """The tool reads the tables with the library predict uses: same counts table."""
    run_tool("virnucpro-report", *report_args(tiny_run, tmp_path))
    counts = re.compile(r"<h2>Counts</h2>\s*(<table>.*?</table>)", re.S)
    ours = counts.search(read(tmp_path / "report.html")).group(1)
    predicts = counts.search(read(os.path.join(os.path.dirname(tiny_run["sequence_summary.tsv"]), "report.html"))).group(1)
    assert ours == predicts
    assert "<td>tiny</td>" in read(tmp_path / "report.html")  # default name: the tables' folder


def test_complete_report_is_kept_unless_overwrite(tiny_run, tmp_path):
    run_tool("virnucpro-report", *report_args(tiny_run, tmp_path))
    path = tmp_path / "report.html"
    os.utime(path, (1, 1))
    result = run_tool("virnucpro-report", *report_args(tiny_run, tmp_path))
    assert os.stat(path).st_mtime == 1 and "already complete" in result.stderr
    path.write_text("edited")  # an output that differs from its record is never reused
    result = run_tool("virnucpro-report", *report_args(tiny_run, tmp_path))
    assert read(path).startswith("<!DOCTYPE html>") and "vouches for" in result.stderr
    os.utime(path, (1, 1))
    run_tool("virnucpro-report", *report_args(tiny_run, tmp_path, "--overwrite"))
    assert os.stat(path).st_mtime > 1 and read(path).startswith("<!DOCTYPE html>")


def test_threshold_and_chunk_size_reach_the_report(tiny_run, tmp_path):
    run_tool("virnucpro-report", *report_args(tiny_run, tmp_path, "--threshold", "0.25"))
    page = read(tmp_path / "report.html")
    assert "<td>threshold</td><td>0.25</td>" in page and "viral_fraction &gt;= 0.25" in page
    wrong = run_tool("virnucpro-report", *report_args(tiny_run, tmp_path / "other", "--chunk_size", 300), check=False)
    assert wrong.returncode == 1 and "pass the run's --chunk_size" in wrong.stderr.strip().splitlines()[-1]
    assert not os.path.exists(tmp_path / "other")


def test_chunk_size_and_threshold_are_checked_as_in_every_tool(tiny_run, tmp_path):
    from virnucpro.errors import UserError
    from virnucpro.stages.report import make_report

    for setting, says in (({"threshold": 1.5}, "--threshold must be between 0 and 1"),
                          ({"chunk_size": 2}, "--chunk_size must be a whole number of at least 3")):
        with pytest.raises(UserError, match=says):
            make_report(tiny_run["prediction_results.tsv"], tiny_run["sequence_summary.tsv"], str(tmp_path / "out"),
                        **setting)
    assert not os.path.exists(tmp_path / "out")


def test_empty_run_gives_a_report(tmp_path):
    """No sequence had a stop-free frame: the tables hold headers only (plus unscored rows)."""
    from virnucpro.stages.classify import SUMMARY_COLUMNS

    (tmp_path / "prediction_results.tsv").write_text("Sequence_ID\tPrediction\tscore1\tscore2\n")
    (tmp_path / "sequence_summary.tsv").write_text("\t".join(SUMMARY_COLUMNS) + "\nshort\t40\t1\t0\t0\tNA\tNA\tunscored\n")
    tables = {name: str(tmp_path / name) for name in TABLES}
    run_tool("virnucpro-report", *report_args(tables, tmp_path / "out"))
    page = read(tmp_path / "out" / "report.html")
    assert "<td>frames scored</td><td>0</td>" in page and "<td>sequences: unscored</td><td>1</td>" in page


@pytest.mark.parametrize("broken, content, message", [
    ("prediction_results.tsv", None, "no such file"),
    ("sequence_summary.tsv", None, "no such file"),
    ("prediction_results.tsv", "", "not a prediction table"),
    ("prediction_results.tsv", "id\tlabel\n", "not a prediction table"),
    ("sequence_summary.tsv", "Sequence_ID\tPrediction\tscore1\tscore2\n", "not a sequence summary"),
    ("prediction_results.tsv", "Sequence_ID\tPrediction\tscore1\tscore2\nx_chunk_1F1\tvirus\t0.2\n", "line 2: expected 4"),
    ("prediction_results.tsv", "Sequence_ID\tPrediction\tscore1\tscore2\nx_chunk_1F1\tvirus\t0.2\thigh\n", "line 2: expected 4"),
    ("sequence_summary.tsv", "SUMMARY_HEADER\nx\t500\tone\t1\t1\t1.0\t0.9\tvirus\n", "line 2: expected 8"),
    ("sequence_summary.tsv", "SUMMARY_HEADER\nx\t0\t1\t0\t0\tNA\tNA\tunscored\n", "has length 0"),
    ("sequence_summary.tsv", b"\xff\xfe\x00binary", "not a text file"),
    ("prediction_results.tsv", "FOLDER", "is a folder"),
])
def test_bad_input_is_one_line_error_and_no_output(tiny_run, tmp_path, broken, content, message):
    from virnucpro.stages.classify import SUMMARY_COLUMNS

    tables = dict(tiny_run)
    path = tmp_path / broken
    tables[broken] = str(path)
    if content == "FOLDER":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content.replace("SUMMARY_HEADER", "\t".join(SUMMARY_COLUMNS)))
    out = tmp_path / "out"
    result = run_tool("virnucpro-report", *report_args(tables, out), check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("virnucpro-report: error: ") and message in lines[-1], result.stderr
    assert "Traceback" not in result.stderr
    assert files_in(out) == []


def test_sequence_ids_with_dollar_signs_and_unicode_are_drawn_as_written(tmp_path):
    """Ids are free text: matplotlib must not read `$...$` in one as mathtext (it crashed the report)."""
    from virnucpro.stages.classify import SUMMARY_COLUMNS
    from virnucpro.stages.report import report

    ids = ["a$^{x$_b", "vírus_α|β", "c_chunk_2"]
    predictions = "Sequence_ID\tPrediction\tscore1\tscore2\n" + "".join(
        f"{i}_chunk_1F1\tvirus\t0.25\t0.75\n" for i in ids)
    summary = "\t".join(SUMMARY_COLUMNS) + "\n" + "".join(f"{i}\t600\t2\t1\t1\t0.5\t0.75\tvirus\n" for i in ids)
    (tmp_path / "prediction_results.tsv").write_text(predictions, encoding="utf-8")
    (tmp_path / "sequence_summary.tsv").write_text(summary, encoding="utf-8")
    tables = {name: str(tmp_path / name) for name in TABLES}
    report(tables["prediction_results.tsv"], tables["sequence_summary.tsv"], str(tmp_path / "out"))
    page = read(tmp_path / "out" / "report.html")
    assert page.count("<img") == 4  # frame scores, sequence scores, verdicts, chunk tracks
    for i in ids:
        assert f">{html.escape(i)}</td>" in page


def test_threshold_and_chunk_size_default_to_what_classify_recorded(tiny_run, test_models, tmp_path):
    from virnucpro.stages.classify import classify_features

    run_dir = os.path.dirname(tiny_run["sequence_summary.tsv"])
    tables = classify_features(os.path.join(run_dir, "4_merge", "tiny.features.h5"), test_models["classifier"],
                               tmp_path / "c", sequences=os.path.join(run_dir, "1_translate", "tiny.sequences.tsv"),
                               threshold=0.25)
    args = ["--predictions", tables["predictions"], "--summary", tables["summary"]]
    result = run_tool("virnucpro-report", *args, "--outdir", tmp_path / "r")
    page = read(tmp_path / "r" / "report.html")
    assert "<td>threshold</td><td>0.25</td>" in page and "<td>chunk_size</td><td>500</td>" in page
    assert "another threshold" not in result.stderr
    # A summary the record does not vouch for (edited, or from elsewhere) gets the plain defaults.
    edited = tmp_path / "e" / "sequence_summary.tsv"
    edited.parent.mkdir()
    edited.write_text(read(tables["summary"]) + "extra\t10\t1\t0\t0\tNA\tNA\tunscored\n")
    (tmp_path / "e" / "classify.json").write_text(read(tmp_path / "c" / "classify.json").replace("0.25", "0.75"))
    run_tool("virnucpro-report", "--predictions", tables["predictions"], "--summary", edited, "--outdir", tmp_path / "e")
    assert "<td>threshold</td><td>0.5</td>" in read(tmp_path / "e" / "report.html")


def test_report_made_from_other_tables_is_refused_unless_overwrite(tiny_run, tmp_path):
    run_tool("virnucpro-report", *report_args(tiny_run, tmp_path))
    before = read(tmp_path / "report.html")
    other = dict(tiny_run)
    other["sequence_summary.tsv"] = str(tmp_path / "sequence_summary.tsv")
    with open(other["sequence_summary.tsv"], "w") as handle:
        handle.write(read(tiny_run["sequence_summary.tsv"]))
        handle.write("extra\t10\t1\t0\t0\tNA\tNA\tunscored\n")
    refused = run_tool("virnucpro-report", *report_args(other, tmp_path), check=False)
    assert refused.returncode == 1
    assert "report.html exists but was made differently (input_name, tables differ); use --overwrite" in refused.stderr
    changed = run_tool("virnucpro-report", *report_args(tiny_run, tmp_path, "--threshold", "0.3"), check=False)
    assert changed.returncode == 1 and "(threshold differ)" in changed.stderr
    assert read(tmp_path / "report.html") == before
    run_tool("virnucpro-report", *report_args(other, tmp_path, "--overwrite"))
    assert "extra" in read(tmp_path / "report.html")


def test_non_finite_scores_are_an_error(tmp_path):
    from virnucpro.stages.classify import SUMMARY_COLUMNS

    (tmp_path / "prediction_results.tsv").write_text("Sequence_ID\tPrediction\tscore1\tscore2\nx_chunk_1F1\tothers\tnan\t0.5\n")
    (tmp_path / "sequence_summary.tsv").write_text("\t".join(SUMMARY_COLUMNS) + "\nx\t500\t1\t1\t0\t0.0\t0.5\tothers\n")
    tables = {name: str(tmp_path / name) for name in TABLES}
    result = run_tool("virnucpro-report", *report_args(tables, tmp_path / "out"), check=False)
    assert result.returncode == 1 and "line 2: frame 'x_chunk_1F1' has a non-finite score" in result.stderr
    assert not os.path.exists(tmp_path / "out")


def test_the_page_explains_its_columns_and_rules(tiny_run, tmp_path):
    run_tool("virnucpro-report", *report_args(tiny_run, tmp_path))
    page = read(tmp_path / "report.html")
    rules = re.search(r"<h2>How to read this report</h2>(.*?)<h2>", page, re.S).group(1)
    assert "<b>score1</b> is its softmax probability of class <i>others</i>" in rules
    assert "<b>score2</b> of\nclass <i>virus</i>" in rules
    assert "best score2 over its frames is at or above its best score1" in rules  # the original's chunk rule
    assert "<i>this project's aggregation</i>" in rules and "viral_fraction &gt;= 0.5" in rules
    # The per-chunk tables are the original's, untouched: only the summary carries our columns.
    assert read(tiny_run["prediction_results.tsv"]).splitlines()[0] == "Sequence_ID\tPrediction\tscore1\tscore2"


def test_chunk_colours_and_verdicts_follow_the_chunk_calls(tiny_run):
    """The red bars of a sequence are its chunks_viral, and its verdict follows from their count."""
    from virnucpro.stages.report import VIRUS, chunk_colour, read_results
    from virnucpro.results import sequence_of

    results = read_results({"predictions": tiny_run["prediction_results.tsv"],
                            "summary": tiny_run["sequence_summary.tsv"]}, 0.5)
    red = {}
    for chunk, best in results.chunk_best.items():
        red[sequence_of(chunk)[0]] = red.get(sequence_of(chunk)[0], 0) + (chunk_colour(best) == VIRUS)
    assert results.summary_rows
    for row in results.summary_rows:
        assert red.get(row["sequence_id"], 0) == int(row["chunks_viral"])
        if row["verdict"] != "unscored":
            assert (row["verdict"] == "virus") == (int(row["chunks_viral"]) * 2 >= int(row["chunks_scored"]))


def test_banner_only_for_test_models(tiny_run, tmp_path):
    """tiny_run used the test models (their files say so): a banner. The same tables without
    classify's record (nothing says test model): no banner, nothing assumed."""
    run_tool("virnucpro-report", *report_args(tiny_run, tmp_path / "from_run"))
    assert "Test models: these scores mean nothing" in read(tmp_path / "from_run" / "report.html")
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in TABLES:
        (plain / name).write_text(read(tiny_run[name]))
    tables = {name: str(plain / name) for name in TABLES}
    run_tool("virnucpro-report", *report_args(tables, tmp_path / "out"))
    page = read(tmp_path / "out" / "report.html")
    assert "banner" not in page.split("</style>")[1] and "mean nothing" not in page
