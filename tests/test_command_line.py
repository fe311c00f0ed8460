"""Every tool checks its whole command line before any work (cli.run -> options.command_line_problem):
a mistyped, missing, repeated or wrongly typed option, or a bare argument, is one line naming the
option, exit status 2, and nothing written. Run as a user runs the tools: real subprocesses."""

import glob
import inspect
import os

import pytest

import virnucpro.tools
from helpers import BIN, files_in, run_tool

TOOLS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(BIN, "virnucpro-*")))


def refused(result, tool, *words):
    """Exit 2, exactly one stderr line `<tool>: error: ...` holding every word, nothing on stdout."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith(f"{tool}: error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert result.stdout == ""
    return lines[0]


@pytest.fixture
def work(tmp_path):
    """An empty folder the tools run in and write to: it must stay empty."""
    folder = tmp_path / "work"
    folder.mkdir()
    yield folder
    assert files_in(folder) == [], "a refused command line wrote something"


def test_a_typo_in_predict_is_refused_before_any_stage(test_models, work):
    """The issue's case: `--chunksize 300` ran all six stages with 500, then complained."""
    result = run_tool("virnucpro-predict", "--input", os.path.join(BIN, "..", "examples", "metagenome_scaffolds.fa"),
                      "--outdir", work / "out", "--chunksize", 300, "--classifier", test_models["classifier"],
                      "--dnabert_model", test_models["dnabert"], "--esm_model", test_models["esm"], check=False, cwd=work)
    line = refused(result, "virnucpro-predict", "unknown option --chunksize", "did you mean --chunk_size?")
    assert "[1/6]" not in result.stderr and line.count("--") == 2


def test_a_typo_in_classify_names_the_closest_option(work):
    result = run_tool("virnucpro-classify", "--features", work / "a.h5", "--classifier", work / "c.pth",
                      "--outdir", work / "out", "--treshold", 0.9, check=False, cwd=work)
    refused(result, "virnucpro-classify", "--treshold", "did you mean --threshold?")


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_refuses_an_unknown_option_with_the_closest_one(tool, work):
    function = virnucpro.tools.component(tool)
    name = next(n for n, p in inspect.signature(function).parameters.items()
                if p.kind != p.VAR_POSITIONAL and n != getattr(function, "subcommand", ("",))[0])
    typo = name[:-1] + "x" + name[-1]  # one letter too many
    result = run_tool(tool, f"--{typo}", "value", check=False, cwd=work)
    refused(result, tool, f"unknown option --{typo}", f"did you mean --{name}?")


@pytest.mark.parametrize("args, words", [
    (["small.fa", "out"], ["unexpected argument 'small.fa'", "did you mean --input small.fa?"]),
    (["--input", "small.fa"], ["--outdir and --chunk_size are required"]),
    (["--outdir", "out"], ["--input and --chunk_size are required"]),
    (["--input", "small.fa", "--outdir", "out", "--chunk_size", "abc"], ["--chunk_size takes a whole number, got 'abc'"]),
    (["--input", "small.fa", "--outdir", "out", "--chunk_size=3.5"], ["--chunk_size takes a whole number, got '3.5'"]),
    (["--input", "small.fa", "--outdir", "out", "--workers", "two"], ["--workers takes a whole number"]),
    (["--input", "small.fa", "--outdir", "out", "--overwrite", "yes"], ["--overwrite is a switch", "--nooverwrite"]),
    (["--input", "small.fa", "--outdir", "out", "--overwrite=false"], ["--overwrite is a switch"]),
    (["--input", "small.fa", "--outdir", "out", "--input", "other.fa"], ["--input is given twice"]),
    (["--input", "small.fa", "--outdir"], ["--outdir needs a value"]),
    (["--input", "small.fa", "--outdir", "out", "--", "--trace"], ["'--' is not accepted"]),
    (["-input", "small.fa", "--outdir", "out"], ["-input: options are long only"]),
])
def test_translate_command_line_problems(args, words, work):
    result = run_tool("virnucpro-translate", *args, check=False, cwd=work)
    refused(result, "virnucpro-translate", *words)


def test_predict_requires_the_classifier_and_checks_numbers(work):
    result = run_tool("virnucpro-predict", "--input", "x.fa", "--outdir", "out", check=False, cwd=work)
    refused(result, "virnucpro-predict", "--classifier is required")
    result = run_tool("virnucpro-predict", "--input", "x.fa", "--outdir", "out", "--classifier", "c.pth",
                      "--threshold", "high", check=False, cwd=work)
    refused(result, "virnucpro-predict", "--threshold takes a number, got 'high'")


def test_extract_takes_its_kind_as_the_first_word_and_nothing_else_bare(work):
    result = run_tool("virnucpro-extract", "dnabrt", "--input", "x.fa", "--output", "x.h5", check=False, cwd=work)
    refused(result, "virnucpro-extract", "'dnabrt' is not one of dnabert, esm")
    result = run_tool("virnucpro-extract", "--input", "x.fa", "--output", "x.h5", check=False, cwd=work)
    refused(result, "virnucpro-extract", "dnabert|esm is required")
    result = run_tool("virnucpro-extract", "esm", "x.fa", "--output", "x.h5", check=False, cwd=work)
    refused(result, "virnucpro-extract", "unexpected argument 'x.fa'", "--input x.fa")


def test_accepted_forms_reach_the_tool(work):
    """`--opt=value`, `--opt-name`, `--noswitch` and classify's extra feature files are valid: the
    tool itself runs (and stops on the missing input, exit 1), not the command-line check."""
    result = run_tool("virnucpro-translate", "--input=missing.fa", "--outdir", "out", "--chunk-size", 300,
                      "--nooverwrite", check=False, cwd=work)
    assert result.returncode == 1 and "missing.fa" in result.stderr.strip().splitlines()[-1], result.stderr
    result = run_tool("virnucpro-classify", "--features", "a.h5", "b.h5", "--classifier", "missing.pth",
                      "--outdir", "out", check=False, cwd=work)
    assert result.returncode == 1 and "missing.pth" in result.stderr.strip().splitlines()[-1], result.stderr
