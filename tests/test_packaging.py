"""Packaging: the license, the console-script entry points (one per bin/ wrapper, all through
virnucpro.tools), the package metadata, the conda recipe and the sdist's contents."""

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile

import pytest
import yaml
from packaging.requirements import Requirement

import virnucpro
import virnucpro.tools

from helpers import BIN, REPO, run_tool
from nextflow_source import blocks

BIN_TOOLS = sorted(name for name in os.listdir(BIN) if name.startswith("virnucpro-"))
RECIPE = os.path.join(REPO, "recipes", "virnucpro", "meta.yaml")
#: PyPI name -> conda-forge name, where they differ.
CONDA_NAMES = {"torch": "pytorch", "matplotlib": "matplotlib-base"}


def home_page():
    """manifest.homePage of nextflow.config: the project's one stated URL."""
    config = open(os.path.join(REPO, "nextflow.config")).read()
    ((_, manifest),) = blocks(config, r"\bmanifest")
    return re.search(r"homePage\s*=\s*'([^']+)'", manifest).group(1)


def recipe():
    """meta.yaml with its Jinja rendered the simple way: `set` lines applied, `{{ x }}` filled in."""
    text = open(RECIPE).read()
    values = dict(re.findall(r'{%\s*set\s+(\w+)\s*=\s*"([^"]*)"\s*%}', text))
    text = re.sub(r"{%.*?%}", "", text)
    text = re.sub(r"{{\s*(\w+)\s*}}", lambda m: values.get(m.group(1), m.group(1)), text)
    text = re.sub(r"{{.*?}}", "JINJA", text)
    return yaml.safe_load(text)


def test_license_is_mit_in_the_repository_and_the_metadata():
    text = open(os.path.join(REPO, "LICENSE")).read()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 The virnucpro authors" in text
    assert "THE SOFTWARE IS PROVIDED \"AS IS\"" in text
    metadata = importlib.metadata.metadata("virnucpro")
    assert metadata["License-Expression"] == "MIT", "installed metadata is stale: pip install -e '.[test]'"
    assert metadata["Requires-Python"] == ">=3.10"
    assert "Topic :: Scientific/Engineering :: Bio-Informatics" in metadata.get_all("Classifier")
    assert not any(c.startswith("License ::") for c in metadata.get_all("Classifier")), "PEP 639: the expression only"
    urls = [entry.split(", ", 1)[1] for entry in metadata.get_all("Project-URL")]
    assert home_page() in urls and all(url.startswith(home_page()) for url in urls)


def test_every_bin_wrapper_is_a_tool_in_the_table_and_stays_thin():
    assert BIN_TOOLS == sorted(virnucpro.tools.TOOLS)
    for tool in BIN_TOOLS:
        tree = ast.parse(open(os.path.join(BIN, tool)).read())
        imports = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
        assert [(node.module, [a.name for a in node.names]) for node in imports] == [("virnucpro.tools", ["main"])], tool
        assert len(tree.body) == 3, f"{tool}: docstring, import, `if __name__ == '__main__': main()` only"
        assert callable(virnucpro.tools.component(tool))


def test_installed_console_scripts_are_the_bin_tools_through_one_table():
    setup = open(os.path.join(REPO, "setup.py")).read()
    assert "scripts=" not in setup, "scripts= makes a conda package non-noarch; use entry points"
    scripts = {e.name: e.value for e in importlib.metadata.distribution("virnucpro").entry_points
               if e.group == "console_scripts"}
    assert scripts == {tool: "virnucpro.tools:main" for tool in BIN_TOOLS}, \
        "reinstall (pip install -e '.[test]') after adding a bin/ tool"


def test_console_script_runs_the_same_tool_as_the_bin_wrapper():
    script = os.path.join(os.path.dirname(sys.executable), "virnucpro-translate")
    if not os.path.exists(script):
        pytest.skip("package not installed beside this interpreter")
    installed = subprocess.run([script, "--help"], capture_output=True, text=True)
    wrapper = run_tool("virnucpro-translate", "--help")
    assert installed.returncode == 0, installed.stderr
    assert installed.stdout == wrapper.stdout
    assert installed.stdout.startswith("NAME\n    virnucpro-translate - ")


def test_a_copied_wrapper_with_another_name_says_so_in_one_line(tmp_path):
    copy = tmp_path / "virnucpro-nosuch"
    shutil.copy(os.path.join(BIN, "virnucpro-translate"), copy)
    result = subprocess.run([sys.executable, str(copy), "--help"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("virnucpro-nosuch: error: not a virnucpro tool; the tools are virnucpro-")


@pytest.mark.parametrize("preset", [None, "3"])
def test_merge_starts_openblas_single_threaded_unless_the_environment_says_otherwise(preset):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if preset:
        env["OPENBLAS_NUM_THREADS"] = preset
    code = ("import os, sys, virnucpro.tools; virnucpro.tools.component('virnucpro-merge');"
            "print(os.environ['OPENBLAS_NUM_THREADS'], 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == [preset or "1", "True"]


def test_conda_recipe_is_noarch_with_every_tool_and_the_package_requirements():
    meta = recipe()
    assert meta["package"] == {"name": "virnucpro", "version": virnucpro.__version__}
    assert meta["build"]["noarch"] == "python"
    assert meta["build"]["entry_points"] == [f"{tool} = virnucpro.tools:main" for tool in virnucpro.tools.TOOLS]
    assert sorted(virnucpro.tools.TOOLS) == BIN_TOOLS
    commands = meta["test"]["commands"]
    for tool in BIN_TOOLS:
        assert f"{tool} --help" in commands, f"recipe test does not run {tool} --help"
    run = dict(line.split(" ", 1) for line in meta["requirements"]["run"])
    for needed in map(Requirement, importlib.metadata.requires("virnucpro")):
        if needed.marker:  # extras (test)
            continue
        name = CONDA_NAMES.get(needed.name, needed.name)
        assert run.get(name) == str(needed.specifier), f"recipe run requirement {name}: {run.get(name)} != {needed.specifier}"
    assert meta["about"]["license"] == "MIT" and os.path.exists(os.path.join(REPO, meta["about"]["license_file"]))
    assert meta["about"]["home"] == home_page()


@pytest.mark.slow
def test_sdist_holds_every_tracked_file_the_tests_read(tmp_path):
    """The sdist (MANIFEST.in) is a clone without .git: tests/data, the example, the pipeline."""
    if shutil.which("git") is None or not os.path.isdir(os.path.join(REPO, ".git")):
        pytest.skip("not a git clone")
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    tracked = [path for path in tracked if os.path.exists(os.path.join(REPO, path))]
    subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path), "sdist",
                    "--dist-dir", str(tmp_path)], cwd=REPO, capture_output=True, check=True)
    (archive,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        packed = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    missing = [path for path in tracked if path not in packed and path != ".gitignore"]
    assert not missing, f"not in the sdist (MANIFEST.in): {missing}"
    for needed in ("tests/data", "examples/metagenome_scaffolds.fa", "LICENSE", "main.nf", "assets/schema_input.json"):
        assert any(name == needed or name.startswith(needed + "/") for name in packed), needed
