"""Every tool's --help: exit 0, no fire INFO line, every option listed and described, no short flags."""

import glob
import inspect
import importlib
import os
import re
import subprocess
import sys
import time

import pytest

from helpers import BIN, run_tool

TOOLS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(BIN, "virnucpro-*")))


def entry_function(tool):
    """The function a bin/ script hands to cli.run (read from the script's import line)."""
    with open(os.path.join(BIN, tool)) as handle:
        module, name = re.findall(r"from (virnucpro\.\w+) import (\w+)", handle.read())[-1]
    return getattr(importlib.import_module(module), name)


def sections(text):
    """{'FLAGS': [lines], 'POSITIONAL ARGUMENTS': [lines], ...} of a fire help page."""
    found, current = {}, None
    for line in text.splitlines():
        if line and not line.startswith(" "):
            current = line.strip()
            found[current] = []
        elif current:
            found[current].append(line)
    return found


def described(lines, label):
    """True when the item `label` in a help section has a line of its own words (not Type/Default)."""
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(label))
    body = []
    for line in lines[start + 1:]:
        if len(line) - len(line.lstrip()) <= 4:
            break
        body.append(line.strip())
    return any(line and not line.startswith(("Default:", "Type:")) for line in body)


@pytest.fixture(scope="module", params=TOOLS)
def help_page(request):
    tool = request.param
    start = time.perf_counter()
    result = run_tool(tool, "--help")
    seconds = time.perf_counter() - start
    print(f"{tool} --help: {seconds:.2f} s")  # reported, not asserted (shared machine)
    return tool, result


def test_help_is_clean(help_page):
    tool, result = help_page
    assert result.returncode == 0, result.stderr
    page = result.stdout
    assert page.startswith("NAME"), page[:200]
    assert "INFO" not in page + result.stderr
    assert "Optional[" not in page and "Default: None" not in page
    assert not re.search(r"(?m)^\s+-\w, --", page), "short flags are not accepted, so not shown"


def test_help_lists_every_argument_with_its_real_default(help_page):
    tool, result = help_page
    spec = inspect.signature(entry_function(tool))
    page = result.stdout
    for name, parameter in spec.parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.POSITIONAL_OR_KEYWORD) and \
                parameter.default is parameter.empty:
            assert re.search(rf"(?m)^    {name.upper()}$", page), f"{tool}: positional {name} missing"
        else:
            assert f"--{name}=" in page, f"{tool}: --{name} missing"
        if parameter.default not in (parameter.empty, None):
            flag_lines = sections(page)["FLAGS"]
            at = next(i for i, line in enumerate(flag_lines) if line.strip().startswith(f"--{name}="))
            assert flag_lines[at + 1].strip() == f"Default: {parameter.default!r}", f"{tool}: --{name}"


def test_help_describes_every_argument(help_page):
    tool, result = help_page
    found = sections(result.stdout)
    spec = inspect.signature(entry_function(tool))
    for name, parameter in spec.parameters.items():
        if f"--{name}=" in "\n".join(found.get("FLAGS", [])):
            assert described(found["FLAGS"], f"--{name}="), f"{tool}: --{name} has no description"
        else:
            positional = found.get("POSITIONAL ARGUMENTS", found.get("ARGUMENTS", []))
            assert described(positional, name.upper()), f"{tool}: {name.upper()} has no description"


def test_predict_help_shows_chunk_size_optional_with_its_default():
    page = run_tool("virnucpro-predict", "--help").stdout
    assert "--chunk_size 300|500 " not in page  # the usage line brackets it: it has a default
    assert "[--chunk_size 300|500]" in page


def test_short_flags_are_refused_with_one_line(tmp_path):
    # fire would read `-o` as --output or --overwrite depending on the signature: never guess.
    result = run_tool("virnucpro-extract", "dnabert", "-o", tmp_path / "x.h5", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "virnucpro-extract: error: short option -o is not accepted; use the long option (see --help)"]
    assert os.listdir(tmp_path) == []


def test_help_after_other_arguments_is_still_the_help_page():
    result = run_tool("virnucpro-translate", "--input", "x.fa", "--help")
    assert result.returncode == 0 and result.stdout.startswith("NAME") and "INFO" not in result.stderr
