"""Every tool's --help: a clean man-style page made from the function's signature and docstring (no fire
leftovers), every option once with its real default, switches as switches, long options only."""

import glob
import inspect
import os
import re
import subprocess
import sys
import time

import pytest

import virnucpro.tools
from helpers import BIN, run_tool

TOOLS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(BIN, "virnucpro-*")))


def entry_function(tool):
    """The function a tool hands to cli.run (virnucpro.tools' table, which bin/ and entry points use)."""
    return virnucpro.tools.component(tool)


def sections(text):
    """{'NAME': [lines], 'SYNOPSIS': [lines], 'OPTIONS': [lines], ...} of a help page."""
    found, current = {}, None
    for line in text.splitlines():
        if line and not line.startswith(" "):
            current = line.strip()
            found[current] = []
        elif current:
            found[current].append(line)
    return found


def option_entries(page):
    """{'--name' or 'REST ...': its description as one string} from the OPTIONS section."""
    entries, current = {}, None
    for line in sections(page)["OPTIONS"]:
        if line.startswith("    ") and not line.startswith("        "):
            current = line.strip().split(" ")[0] if not line.strip().endswith("...") else line.strip()
            entries[current] = ""
        elif current:
            entries[current] += " " + line.strip()
    return {name: text.strip() for name, text in entries.items()}


def options_of(tool):
    """(options, bare-word parameter or None, *args parameter or None) of a tool's function."""
    function = entry_function(tool)
    subcommand = getattr(function, "subcommand", None)
    parameters = inspect.signature(function).parameters.values()
    rest = next((p for p in parameters if p.kind == p.VAR_POSITIONAL), None)
    options = [p for p in parameters if p.kind != p.VAR_POSITIONAL and (not subcommand or p.name != subcommand[0])]
    return options, subcommand, rest


@pytest.fixture(scope="module", params=TOOLS)
def help_page(request):
    tool = request.param
    start = time.perf_counter()
    result = run_tool(tool, "--help")
    seconds = time.perf_counter() - start
    print(f"{tool} --help: {seconds:.2f} s")  # reported, not asserted (shared machine)
    return tool, result


def test_help_is_a_clean_man_page(help_page):
    tool, result = help_page
    assert result.returncode == 0, result.stderr
    page = result.stdout
    assert result.stderr == ""
    assert list(sections(page))[:2] == ["NAME", "SYNOPSIS"] and "OPTIONS" in sections(page)
    assert sections(page)["NAME"][0].strip().startswith(f"{tool} - ")
    # fire's leftovers: positional usage, its NOTES, `--flag=FLAG` forms, Optional[] and Default: None.
    for leftover in ("POSITIONAL ARGUMENTS", "<flags>", "flags syntax", "NOTES", "FLAGS", "Optional[", "Default: None",
                     "INFO", "Type:"):
        assert leftover not in page, (tool, leftover)
    assert not re.search(r"--\w+=", page), "options are shown as `--name VALUE`, never `--name=NAME`"
    assert not re.search(r"(?m)^\s+-\w\b", page), "short flags are not accepted, so not shown"
    synopsis = " ".join(sections(page)["SYNOPSIS"])
    assert synopsis.split()[0] == tool
    assert not re.search(r"\s[A-Z_]{3,}\s+[A-Z_]{3,}\s", f" {synopsis} "), "no bare positional arguments"


def test_every_option_is_described_once_with_its_real_default(help_page):
    tool, result = help_page
    entries = option_entries(result.stdout)
    options, subcommand, rest = options_of(tool)
    synopsis = " ".join(" ".join(sections(result.stdout)["SYNOPSIS"]).split())
    for parameter in options:
        name = f"--{parameter.name}"
        assert name in entries, f"{tool}: {name} missing"
        text = entries[name]
        assert len(text) > 20, f"{tool}: {name} has no description"
        assert len(re.findall(r"\bdefault\b", text, re.I)) <= 1, f"{tool}: {name}: its default is stated twice: {text}"
        if isinstance(parameter.default, bool):
            assert "A switch" in text, f"{tool}: {name} is a switch"
            assert f"[{name}]" in synopsis  # shown bare: --overwrite, not --overwrite OVERWRITE
        elif parameter.default is parameter.empty:
            assert text.endswith("Required."), f"{tool}: {name}"
            assert f"[{name} " not in synopsis and f"{name} " in synopsis, f"{tool}: required {name} shown optional"
        elif parameter.default is not None:
            assert text.endswith(f"Default: {parameter.default}."), f"{tool}: {name}: {text}"
    assert len(entries) == len(options) + (rest is not None), f"{tool}: an option listed twice or one too many"
    if subcommand:
        assert synopsis.split()[1] == "|".join(subcommand[1])


def test_predict_help_states_the_chunk_size_rule_and_the_verdict_rule():
    page = run_tool("virnucpro-predict", "--help").stdout
    entries = option_entries(page)
    assert "--classifier PTH" in " ".join(sections(page)["SYNOPSIS"])
    assert "must agree with it" in entries["--chunk_size"] and "300_model.pth" in entries["--chunk_size"]
    assert "fraction of its scored chunks is viral" in entries["--threshold"]
    assert "A switch" in entries["--any_chunk_size"]


def test_short_flags_are_refused_with_one_line(tmp_path):
    # fire would read `-o` as --output or --overwrite depending on the signature: never guess.
    result = run_tool("virnucpro-extract", "dnabert", "-o", tmp_path / "x.h5", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "virnucpro-extract: error: short option -o is not accepted; use the long option (see --help)"]
    assert os.listdir(tmp_path) == []


def test_help_after_other_arguments_is_still_the_help_page():
    result = run_tool("virnucpro-translate", "--input", "x.fa", "--help")
    assert result.returncode == 0 and result.stdout.startswith("NAME") and result.stderr == ""
