"""Shared fixtures. Tests never reach a model hub: everything loads from local folders."""

import os

import pytest

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
