"""Shared fixtures. Tests never reach a model hub: everything loads from local folders."""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from helpers import DATA, SMALL_SUBSET

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


def cuda_available():
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` are skipped where no CUDA GPU is visible (their CPU twins still run)."""
    if cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def test_models(tmp_path_factory):
    """The tiny random models of `virnucpro-make-test-models`, built once per session:
    dict(dnabert=folder, esm=folder, classifier=path of classifier.pth)."""
    from virnucpro.models.make_test_models import make_test_models

    return make_test_models(str(tmp_path_factory.mktemp("test_models")))


@pytest.fixture(scope="session")
def small_fasta(tmp_path_factory):
    """Three short genomes of 8seq.fa (with chunks that have no stop-free frame)."""
    from virnucpro.fasta import format_record, read_fasta

    records = dict(read_fasta(os.path.join(DATA, "virsorter2", "8seq.fa")))
    path = tmp_path_factory.mktemp("input") / "small.fa"
    path.write_text("".join(format_record(name, records[name]) for name in SMALL_SUBSET))
    return str(path)


#: The uid (and gid) of the unprivileged user `as_nobody` runs tools as.
NOBODY = 65534


@pytest.fixture
def as_nobody():
    """(folder anyone may enter, command prefix): run a tool as an unprivileged user, because root
    ignores file permissions. Skips where that is impossible."""
    folder = tempfile.mkdtemp(prefix="virnucpro_perm_")
    os.chmod(folder, 0o755)
    prefix = []
    if os.geteuid() == 0:
        prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        try:
            works = subprocess.run([*prefix, sys.executable, "-c", "import virnucpro.cli"], capture_output=True,
                                   cwd=folder).returncode == 0
        except OSError:
            works = False
        if not works:
            shutil.rmtree(folder)
            pytest.skip("running as root, and this checkout cannot be run as an unprivileged user (setpriv)")
    yield folder, prefix
    shutil.rmtree(folder)
