"""The command-line tools in one table, so the package's console scripts (setup.py makes one per
bin/ wrapper) and the thin bin/ wrappers Nextflow puts on PATH run exactly the same code."""

import importlib
import os
import sys

#: Tool name -> (module, function): the fire component the tool runs through cli.run.
TOOLS = {
    "virnucpro-translate": ("virnucpro.stages.translate", "translate"),
    "virnucpro-extract": ("virnucpro.stages.extract", "extract"),
    "virnucpro-merge": ("virnucpro.stages.merge", "merge"),
    "virnucpro-classify": ("virnucpro.stages.classify", "classify"),
    "virnucpro-report": ("virnucpro.stages.report", "report"),
    "virnucpro-predict": ("virnucpro.stages.predict", "predict"),
    "virnucpro-fetch-model": ("virnucpro.models.fetch_model", "fetch_model"),
    "virnucpro-make-test-models": ("virnucpro.models.make_test_models", "main"),
    "virnucpro-check": ("virnucpro.check", "check"),
}

#: Environment a tool sets before its module is imported (a setting already made wins).
#: Merging does no linear algebra: skip OpenBLAS's thread-pool start-up (~60 ms of every process,
#: which adds up over thousands of shards).
ENVIRONMENT = {"virnucpro-merge": {"OPENBLAS_NUM_THREADS": "1"}}


def tool_name(path):
    """The tool a script path stands for: its file name, without a Windows launcher's `.exe`."""
    name = os.path.basename(path)
    return name[: -len(".exe")] if name.endswith(".exe") else name


def component(tool):
    """The function `tool` runs (its module imported after the tool's environment is set)."""
    for variable, value in ENVIRONMENT.get(tool, {}).items():
        os.environ.setdefault(variable, value)
    module, function = TOOLS[tool]
    return getattr(importlib.import_module(module), function)


def main():
    """Run the tool this process was started as: the console script's or bin/ wrapper's name."""
    from .cli import run

    tool = tool_name(sys.argv[0])
    if tool not in TOOLS:
        print(f"{tool}: error: not a virnucpro tool; the tools are {', '.join(sorted(TOOLS))}", file=sys.stderr)
        sys.exit(2)
    if sys.argv[1:] == ["--version"]:  # answered before the tool's module (and torch) is imported
        from . import __version__

        print(__version__)
        sys.exit(0)
    run(component(tool), tool)
