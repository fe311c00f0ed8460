"""Tiny deterministic random models in the real on-disk formats, for tests and examples.

- `DIR/dnabert`: a DNABERT-S-format folder (config.json with the real keys, `pytorch_model.bin`
  with unprefixed keys plus the unused pooler, as the authors' `save_pretrained` wrote it, and a
  BPE `tokenizer.json` laid out like DNABERT-2's). Hidden size 768 and 12 heads as the real model;
  2 layers and a small MLP so it runs fast on CPU.
- `DIR/esm`: what `EsmForMaskedLM.save_pretrained` writes (plus the ESM tokenizer files), hidden
  size 2560 as ESM-2 3B, one layer and a small MLP.
- `DIR/classifier.pth` (500 bp chunks) and `DIR/classifier_300.pth` (300 bp): a 3328->512->2 MLP
  pickled whole (`torch.save(model)`) from a script whose `__main__` defines `MLPClassifier`, as the
  original training script saved `500_model.pth`; its BatchNorm running statistics are random so a
  loader that ignores them gives different scores. Unlike the published files, each records
  `virnucpro = {chunk_size, test_model}` (read by `classifier.load_classifier`); the model folders
  record `test_model` in their `virnucpro_model.json`.

Weights are random (fixed seeds): the models compute nothing meaningful, only in the right shapes.
"""

import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile

log = logging.getLogger(__name__)

DNABERT_SEED = 20240611
ESM_SEED = 20240612
CLASSIFIER_SEED = 20240613

DNABERT_CONFIG = {
    "_name_or_path": "virnucpro-test-dnabert",
    "alibi_starting_size": 512,
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.0,
    "auto_map": {"AutoConfig": "configuration_bert.BertConfig", "AutoModel": "bert_layers.BertModel"},
    "classifier_dropout": None,
    "gradient_checkpointing": False,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 256,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 2,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "torch_dtype": "float32",
    "transformers_version": "4.28.0",
    "type_vocab_size": 2,
    "use_cache": True,
    "vocab_size": None,  # set from the tokenizer
}

ESM_VOCAB = ["<cls>", "<pad>", "<eos>", "<unk>", "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q",
             "N", "F", "Y", "M", "H", "W", "C", "X", "B", "U", "Z", "O", ".", "-", "<null_1>", "<mask>"]

_CLASSIFIER_SCRIPT = r'''
import sys
import torch
import torch.nn as nn
import torch.nn.functional as F


class MLPClassifier(nn.Module):
    def __init__(self, input_dim, hidden_dim, num_class):
        super(MLPClassifier, self).__init__()
        self.hidden_layer = nn.Linear(input_dim, hidden_dim)
        self.bn1 = nn.BatchNorm1d(hidden_dim)
        self.output_layer = nn.Linear(hidden_dim, num_class)
        self.dropout = nn.Dropout(0.5)
        nn.init.xavier_uniform_(self.hidden_layer.weight)
        nn.init.xavier_uniform_(self.output_layer.weight)

    def forward(self, x):
        x = F.relu(self.bn1(self.hidden_layer(x)))
        x = self.dropout(x)
        return self.output_layer(x)


path, seed, chunk_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(seed)
model = MLPClassifier(3328, 512, 2)
model.virnucpro = {"chunk_size": chunk_size, "test_model": True}  # what the loader reads as its metadata
with torch.no_grad():
    model.bn1.running_mean.normal_(0.0, 0.5)
    model.bn1.running_var.uniform_(0.25, 4.0)
    model.bn1.weight.normal_(1.0, 0.3)
    model.bn1.bias.normal_(0.0, 0.3)
    model.bn1.num_batches_tracked.fill_(1000)
torch.save(model, path)
'''


def _dnabert_tokenizer():
    """A DNABERT-2-layout BPE tokenizer: specials, A C G T, all 2-mers then all 4-mers as merges."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    vocab = {token: index for index, token in enumerate(specials + list("ACGT"))}
    merges = []
    dimers = ["".join(pair) for pair in itertools.product("ACGT", repeat=2)]
    for dimer in dimers:
        merges.append((dimer[0], dimer[1]))
        vocab[dimer] = len(vocab)
    for left, right in itertools.product(dimers, repeat=2):
        merges.append((left, right))
        vocab[left + right] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="[UNK]", fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 1), ("[SEP]", 2)]
    )
    tokenizer.add_special_tokens(specials)
    return tokenizer


def make_dnabert(folder, seed=DNABERT_SEED):
    import torch

    from .dnabert import DnabertConfig, DnabertModel

    os.makedirs(folder, exist_ok=True)
    tokenizer = _dnabert_tokenizer()
    tokenizer.save(os.path.join(folder, "tokenizer.json"))
    special = {"unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "mask_token": "[MASK]"}
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as handle:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", **special}, handle, indent=2)
    with open(os.path.join(folder, "special_tokens_map.json"), "w") as handle:
        json.dump(special, handle, indent=2)
    config = dict(DNABERT_CONFIG, vocab_size=tokenizer.get_vocab_size())
    with open(os.path.join(folder, "config.json"), "w") as handle:
        json.dump(config, handle, indent=2, sort_keys=True)

    generator = torch.Generator().manual_seed(seed)
    model = DnabertModel(DnabertConfig(**config))
    state = {}
    for name, tensor in model.state_dict().items():
        noise = torch.randn(tensor.shape, generator=generator)
        is_norm_weight = "LayerNorm.weight" in name or "layernorm.weight" in name
        state[name] = 1.0 + 0.1 * noise if is_norm_weight else 0.02 * noise
    hidden = config["hidden_size"]
    state["pooler.dense.weight"] = 0.02 * torch.randn((hidden, hidden), generator=generator)
    state["pooler.dense.bias"] = torch.zeros(hidden)
    torch.save(state, os.path.join(folder, "pytorch_model.bin"))
    return folder


def make_esm(folder, seed=ESM_SEED):
    import torch
    from transformers import EsmConfig, EsmForMaskedLM, EsmTokenizer

    os.makedirs(folder, exist_ok=True)
    vocab_path = os.path.join(folder, "vocab.txt")
    with open(vocab_path, "w") as handle:
        handle.write("\n".join(ESM_VOCAB) + "\n")
    EsmTokenizer(vocab_path).save_pretrained(folder)
    config = EsmConfig(
        vocab_size=len(ESM_VOCAB), hidden_size=2560, num_hidden_layers=1, num_attention_heads=40,
        intermediate_size=64, max_position_embeddings=1026, position_embedding_type="rotary",
        token_dropout=True, emb_layer_norm_before=False, layer_norm_eps=1e-5, pad_token_id=1,
        mask_token_id=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        architectures=["EsmForMaskedLM"],
    )
    torch.manual_seed(seed)
    model = EsmForMaskedLM(config)
    with torch.no_grad():  # random LayerNorms too, so a wrong final norm would show
        generator = torch.Generator().manual_seed(seed)
        for name, parameter in model.named_parameters():
            if "layer_norm" in name.lower() or "LayerNorm" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                parameter.copy_(base + 0.1 * torch.randn(parameter.shape, generator=generator))
    import transformers

    transformers.logging.disable_progress_bar()
    try:
        model.save_pretrained(folder)
    finally:
        transformers.logging.enable_progress_bar()
    for name in os.listdir(folder):  # readable by other users (containers), like the other files
        os.chmod(os.path.join(folder, name), 0o644)
    return folder


def make_classifier(path, seed=CLASSIFIER_SEED, chunk_size=500):
    """Pickle the MLP from a fresh interpreter so its class is `__main__.MLPClassifier`, recording
    its chunk size and that it is a test model (the published files record nothing)."""
    subprocess.run([sys.executable, "-c", _CLASSIFIER_SCRIPT, path, str(seed), str(chunk_size)], check=True)
    return path


def make_classifier_300(path):
    """The test classifier for 300 bp chunks (other weights, like the published 300_model.pth)."""
    return make_classifier(path, seed=CLASSIFIER_SEED + 300, chunk_size=300)


def mark_test_model(folder):
    """Record in the model folder (MODEL_RECORD, as virnucpro-fetch-model records a hub model) that
    it is a random test model, so a run made with it says so on its report."""
    from ..names import MODEL_RECORD

    with open(os.path.join(folder, MODEL_RECORD), "w") as handle:
        json.dump({"model": f"virnucpro-test-{os.path.basename(folder)}", "test_model": True}, handle, indent=2)
    os.chmod(os.path.join(folder, MODEL_RECORD), 0o644)


def build_atomically(final, build):
    """Run `build(path)` on a temporary name beside `final`, then move it into place: a failed or
    killed build leaves nothing under the final name (SPEC 2), and a rebuild keeps no file of an
    earlier folder (an old model.safetensors would be loaded instead of a new .bin)."""
    parent, name = os.path.split(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    temp = tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=parent)
    try:
        build(os.path.join(temp, name))
        if os.path.isdir(final):
            shutil.rmtree(final)
        os.replace(os.path.join(temp, name), final)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return final


def make_test_models(outdir):
    """Build the test models under `outdir`; returns dict(dnabert=, esm=, classifier=, classifier_300=) paths."""
    from ..names import TEST_MODELS

    makers = dict(dnabert=lambda path: mark_test_model(make_dnabert(path)) or path,
                  esm=lambda path: mark_test_model(make_esm(path)) or path,
                  classifier=make_classifier, classifier_300=make_classifier_300)
    paths = {what: build_atomically(os.path.join(outdir, TEST_MODELS[what]), make) for what, make in makers.items()}
    log.info("test models written to %s", outdir)
    return paths


def main(outdir, verbose=False):
    """Write tiny random DNABERT-S, ESM-2 and classifier models (real formats) to --outdir.

    Usage: virnucpro-make-test-models --outdir DIR
    DIR/classifier.pth is for 500 bp chunks (--chunk_size 500), DIR/classifier_300.pth for 300;
    each records its chunk size and, like the two model folders, that it is a test model, so a
    run made with them says so on its report. Their scores mean nothing.

    Args:
      outdir: folder for DIR/dnabert, DIR/esm, DIR/classifier.pth and DIR/classifier_300.pth (created if needed).
      verbose: debug logging.
    """
    make_test_models(outdir)
