"""virnucpro-make-test-models: real on-disk formats, the sizes the classifier needs, deterministic."""

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import torch

from virnucpro.models.dnabert import DnabertTokenizer, read_state_dict

from helpers import run_tool

LOAD_CLASSIFIER = textwrap.dedent("""
    import sys
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class MLPClassifier(nn.Module):  # the class the training script defined in __main__
        def forward(self, x):
            x = F.relu(self.bn1(self.hidden_layer(x)))
            return self.output_layer(self.dropout(x))

    model = torch.load(sys.argv[1], weights_only=False).eval()
    print(type(model.hidden_layer).__name__, tuple(model.hidden_layer.weight.shape), type(model.bn1).__name__,
          tuple(model.output_layer.weight.shape), model.dropout.p)
    print(float(model.bn1.running_mean.abs().mean()), float((model.bn1.running_var - 1).abs().mean()))
""")


def test_folders_hold_the_real_formats(test_models):
    dnabert, esm = test_models["dnabert"], test_models["esm"]
    assert {"config.json", "pytorch_model.bin", "tokenizer.json", "tokenizer_config.json"} <= set(os.listdir(dnabert))
    with open(os.path.join(dnabert, "config.json")) as handle:
        config = json.load(handle)
    assert (config["hidden_size"], config["num_attention_heads"], config["model_type"]) == (768, 12, "bert")
    keys = set(read_state_dict(dnabert))
    assert "encoder.layer.0.attention.self.Wqkv.weight" in keys and "pooler.dense.weight" in keys
    tokenizer = DnabertTokenizer(dnabert)
    ids = tokenizer.encode(["ACGTACGTNA"])[0]
    assert ids[0] == 1 and ids[-1] == 2 and 0 in ids  # [CLS] ... [UNK] for N ... [SEP]
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"} <= set(os.listdir(esm))
    with open(os.path.join(esm, "config.json")) as handle:
        config = json.load(handle)
    assert (config["hidden_size"], config["model_type"], config["architectures"]) == (2560, "esm", ["EsmForMaskedLM"])


def test_classifier_is_a_whole_module_pickled_from_main(test_models):
    path = test_models["classifier"]
    with zipfile.ZipFile(path) as archive:
        pickle = archive.read(next(name for name in archive.namelist() if name.endswith("data.pkl")))
    assert b"__main__\nMLPClassifier" in pickle
    result = subprocess.run([sys.executable, "-c", LOAD_CLASSIFIER, path], capture_output=True, text=True, check=True)
    shapes, stats = result.stdout.splitlines()
    assert shapes == "Linear (512, 3328) BatchNorm1d (2, 512) 0.5"
    mean_offset, var_offset = map(float, stats.split())
    assert mean_offset > 0.1 and var_offset > 0.1  # running statistics are not the defaults (0, 1)


def test_cli_writes_all_three_and_the_same_every_time(tmp_path, test_models):
    """A second build (through the tool) equals the session's build, tensor for tensor."""
    from safetensors.numpy import load_file

    outdir = tmp_path / "models"
    run_tool("virnucpro-make-test-models", "--outdir", outdir)
    assert sorted(os.listdir(outdir)) == ["classifier.pth", "classifier_300.pth", "dnabert", "esm"]
    first, again = read_state_dict(test_models["dnabert"]), read_state_dict(str(outdir / "dnabert"))
    assert first.keys() == again.keys() and all(torch.equal(first[key], again[key]) for key in first)
    for name in ("tokenizer.json", "config.json"):
        with open(outdir / "dnabert" / name) as mine, open(os.path.join(test_models["dnabert"], name)) as theirs:
            assert mine.read() == theirs.read()
    first = load_file(os.path.join(test_models["esm"], "model.safetensors"))
    again = load_file(str(outdir / "esm" / "model.safetensors"))
    assert first.keys() == again.keys() and all(np.array_equal(first[key], again[key]) for key in first)
    for classifier in ("classifier", "classifier_300"):
        with zipfile.ZipFile(outdir / f"{classifier}.pth") as mine, zipfile.ZipFile(test_models[classifier]) as theirs:
            assert sorted(mine.namelist()) == sorted(theirs.namelist())
            for name in mine.namelist():
                assert mine.read(name) == theirs.read(name), name


def test_a_failed_build_leaves_no_partial_model_and_a_rebuild_drops_old_files(tmp_path, monkeypatch):
    """SPEC 2: nothing partial under a final name; and a rebuild over an earlier folder must not
    keep its files (an old model.safetensors would be loaded instead of the new .bin)."""
    import pytest

    from virnucpro.models import make_test_models as module

    outdir = tmp_path / "models"
    (outdir / "dnabert").mkdir(parents=True)
    (outdir / "dnabert" / "model.safetensors").write_text("an earlier model's weights")

    def killed(path, seed=0):
        with open(path, "wb") as handle:
            handle.write(b"half a pickle")
        raise RuntimeError("killed while writing the classifier")

    monkeypatch.setattr(module, "make_classifier", killed)
    with pytest.raises(RuntimeError, match="killed"):
        module.make_test_models(str(outdir))
    assert sorted(os.listdir(outdir)) == ["dnabert", "esm"]  # no classifier files, no temporaries
    assert "model.safetensors" not in os.listdir(outdir / "dnabert")
    assert len(read_state_dict(str(outdir / "dnabert"))) > 0


def test_each_test_classifier_records_its_chunk_size_and_that_it_is_a_test_model(test_models):
    """What predict, classify and the report read: the chunk size it was made for and the test flag;
    the model folders say they are test models in their virnucpro_model.json."""
    from virnucpro.models.classifier import load_classifier, trained_chunk_size
    from virnucpro.names import MODEL_RECORD

    for name, size in (("classifier", 500), ("classifier_300", 300)):
        model = load_classifier(test_models[name])
        assert model.virnucpro == {"chunk_size": size, "test_model": True}
        assert trained_chunk_size(test_models[name], model) == (size, "its recorded metadata")
    for kind in ("dnabert", "esm"):
        with open(os.path.join(test_models[kind], MODEL_RECORD)) as handle:
            assert json.load(handle)["test_model"] is True
