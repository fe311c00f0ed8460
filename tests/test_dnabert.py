"""The native DNABERT-S module against embeddings computed by the upstream model code."""

import json
import os
import shutil

import h5py
import numpy as np
import pytest
import torch

from virnucpro.errors import UserError
from virnucpro.models.dnabert import DnabertTokenizer, alibi_bias, alibi_slopes, embed_batch, load_dnabert, read_state_dict
from virnucpro.fasta import read_fasta

from helpers import DATA

REFERENCE = os.path.join(DATA, "dnabert_reference")
FOLDERS = {"heads4": REFERENCE, "heads12": os.path.join(REFERENCE, "heads12")}
ATOL = 1e-5
MIN_COSINE = 0.99999


def cosines(a, b):
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def assert_close(actual, expected, min_cosine=MIN_COSINE, atol=ATOL):
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=0)
    assert cosines(actual, expected).min() >= min_cosine


def records(name):
    return list(read_fasta(os.path.join(REFERENCE, name)))


@pytest.fixture(scope="module", params=sorted(FOLDERS))
def reference(request):
    folder = FOLDERS[request.param]
    with h5py.File(os.path.join(folder, "expected.h5")) as handle:
        expected = {key: handle[key][:] for key in handle}
    return folder, load_dnabert(folder), DnabertTokenizer(folder), expected


def test_alibi_slopes_match_upstream_for_4_and_12_heads():
    assert alibi_slopes(4) == [1 / 4, 1 / 16, 1 / 64, 1 / 256]
    twelve = [2.0**-k for k in range(1, 9)] + [2.0**-0.5, 2.0**-1.5, 2.0**-2.5, 2.0**-3.5]
    np.testing.assert_allclose(alibi_slopes(12), twelve, rtol=1e-12)
    bias = alibi_bias(4, 5)
    assert bias.shape == (1, 4, 5, 5) and bias.dtype == torch.float32
    assert bias[0, 0, 0, 3] == bias[0, 0, 3, 0] == -3 / 4


def test_tokenizer_gives_upstream_ids(reference):
    _, _, tokenizer, expected = reference
    recs = records("sequences.fa")
    assert [record_id for record_id, _ in recs] == [value.decode() for value in expected["ids"]]
    tokens = tokenizer.encode([seq for _, seq in recs])
    for ours, theirs in zip(tokens, expected["input_ids"]):
        np.testing.assert_array_equal(ours, theirs)
    assert tokenizer.pad_id == 3  # the tokenizer's [PAD], not config.pad_token_id (0)


def test_unbatched_matches_upstream(reference):
    _, model, tokenizer, expected = reference
    tokens = tokenizer.encode([seq for _, seq in records("sequences.fa")])
    ours = np.stack([embed_batch(model, [t], tokenizer.pad_id, "cpu")[0] for t in tokens])
    assert_close(ours, expected["embeddings"])
    with torch.no_grad():
        for i in range(3):
            hidden = model(torch.from_numpy(tokens[i].astype(np.int64))[None])[0].numpy()
            np.testing.assert_allclose(hidden, expected[f"last_hidden_{i}"], atol=ATOL, rtol=0)


def test_batched_matches_upstream_and_unbatched(reference):
    _, model, tokenizer, expected = reference
    tokens = tokenizer.encode([seq for _, seq in records("sequences.fa")])
    whole = embed_batch(model, tokens, tokenizer.pad_id, "cpu")
    assert_close(whole, expected["embeddings"])
    assert_close(whole, expected["embeddings_batched"])
    order = np.random.default_rng(7).permutation(len(tokens))
    shuffled = np.empty_like(whole)
    for start in range(0, len(order), 8):
        part = order[start : start + 8]
        shuffled[part] = embed_batch(model, [tokens[i] for i in part], tokenizer.pad_id, "cpu")
    assert_close(shuffled, expected["embeddings"])


def test_inputs_longer_than_alibi_size_grow_the_bias(reference):
    _, model, tokenizer, expected = reference
    long_tokens = tokenizer.encode([seq for _, seq in records("long_sequences.fa")])
    np.testing.assert_array_equal([len(t) for t in long_tokens], expected["long_n_tokens"])
    assert max(len(t) for t in long_tokens) > model.config.alibi_starting_size
    alone = np.stack([embed_batch(model, [t], tokenizer.pad_id, "cpu")[0] for t in long_tokens])
    assert_close(alone, expected["long_embeddings"])
    together = embed_batch(model, long_tokens, tokenizer.pad_id, "cpu")
    assert_close(together, expected["long_embeddings"])
    # Shorter inputs give the same results once the bias has grown.
    short = tokenizer.encode([seq for _, seq in records("sequences.fa")[:4]])
    assert_close(embed_batch(model, short, tokenizer.pad_id, "cpu"), expected["embeddings"][:4])


def test_n_and_lowercase_become_one_unk_per_letter():
    tokenizer = DnabertTokenizer(REFERENCE)
    ids = tokenizer.encode(["NNNacgt"])[0]
    assert ids[0] == 1 and ids[-1] == 2
    assert list(ids[1:8]) == [0] * 7


def _copy_model(tmp_path, name="model"):
    folder = tmp_path / name
    shutil.copytree(REFERENCE, folder, ignore=shutil.ignore_patterns("heads12", "*.h5", "*.fa", "README.md"))
    return folder


def test_dnabert2_masked_lm_checkpoint_in_pytorch_bin_loads(tmp_path):
    """DNABERT-2-117M's file: a `.bin` pickle, keys prefixed `bert.`, an MLM head, no pooler."""
    state = read_state_dict(REFERENCE)
    converted = {f"bert.{key}": value for key, value in state.items() if not key.startswith("pooler.")}
    hidden = state["embeddings.word_embeddings.weight"].shape[1]
    converted["cls.predictions.transform.dense.weight"] = torch.zeros(hidden, hidden)
    converted["cls.predictions.decoder.bias"] = torch.zeros(256)
    folder = _copy_model(tmp_path)
    os.remove(folder / "model.safetensors")
    torch.save(converted, folder / "pytorch_model.bin")
    ours = load_dnabert(str(folder))
    original = load_dnabert(REFERENCE)
    for key, value in original.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key


@pytest.mark.parametrize("change, message", [
    ("drop", "missing weights: encoder.layer.1.mlp.wo.bias"),
    ("extra", "unexpected weights: encoder.layer.0.attention.self.rotary.weight"),
    ("shape", "weight embeddings.token_type_embeddings.weight has shape"),
])
def test_loader_is_strict_and_names_the_weight(tmp_path, change, message):
    from safetensors.torch import save_file

    state = read_state_dict(REFERENCE)
    if change == "drop":
        del state["encoder.layer.1.mlp.wo.bias"]
    elif change == "extra":
        state["encoder.layer.0.attention.self.rotary.weight"] = torch.zeros(3)
    else:
        state["embeddings.token_type_embeddings.weight"] = torch.zeros(3, 64)
    folder = _copy_model(tmp_path)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(UserError, match=message.replace(".", r"\.")):
        load_dnabert(str(folder))


def test_pickled_code_in_bin_is_refused(tmp_path):
    folder = _copy_model(tmp_path)
    os.remove(folder / "model.safetensors")
    torch.save({"embeddings.word_embeddings.weight": _Evil()}, folder / "pytorch_model.bin")
    with pytest.raises(UserError, match="cannot read weights safely"):
        load_dnabert(str(folder))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        load_dnabert(str(tmp_path))
    folder = _copy_model(tmp_path)
    os.remove(folder / "model.safetensors")
    with pytest.raises(UserError, match="no weights"):
        load_dnabert(str(folder))
    with open(folder / "config.json") as handle:
        assert "auto_map" in json.load(handle)  # present, and ignored: no remote code is run
    os.remove(folder / "tokenizer.json")
    with pytest.raises(UserError, match="no tokenizer.json"):
        DnabertTokenizer(str(folder))


def test_eager_attention_builds_no_per_batch_bias(reference, monkeypatch):
    """Eager, each run of equal-length rows attends unpadded with one shared ALiBi view [1, heads, n, n]:
    no [batch, heads, length, length] tensor, and still upstream's embeddings."""
    from virnucpro.models import dnabert

    _, model, tokenizer, expected = reference
    masks = []
    real = dnabert.F.scaled_dot_product_attention

    def recording(q, k, v, attn_mask=None, **kwargs):
        masks.append(tuple(attn_mask.shape))
        return real(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(dnabert.F, "scaled_dot_product_attention", recording)
    tokens = tokenizer.encode([seq for _, seq in records("sequences.fa")])
    assert_close(embed_batch(model, tokens, tokenizer.pad_id, "cpu"), expected["embeddings"])
    assert masks and all(shape[0] == 1 for shape in masks)


def test_the_compiled_path_flex_attention_matches_upstream(reference, monkeypatch):
    """What a compiled graph runs (FlexAttention, ALiBi and padding as a score modifier), here eager
    on the CPU: upstream's embeddings, batched as unbatched."""
    import warnings

    _, model, tokenizer, expected = reference
    # On this model only: patching torch.compiler.is_compiling itself would leak into modules that
    # torch imports meanwhile and break later compiles in the same process.
    monkeypatch.setattr(model, "_attention", lambda lengths, dtype: model._flex(lengths))
    tokens = tokenizer.encode([seq for _, seq in records("sequences.fa")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FlexAttention warns when it runs uncompiled
        together = embed_batch(model, tokens, tokenizer.pad_id, "cpu")
    assert_close(together, expected["embeddings"])


def test_loading_in_bf16_casts_each_weight_as_read(reference):
    folder, model, _, _ = reference
    half = load_dnabert(folder, dtype=torch.bfloat16)
    assert not any(t.is_meta for t in [*half.parameters(), *half.buffers()])
    full, cast = model.state_dict(), half.state_dict()
    assert full.keys() == cast.keys()
    assert all(cast[key].dtype == torch.bfloat16 and torch.equal(cast[key], full[key].to(torch.bfloat16)) for key in full)
    assert half.alibi_slopes.dtype == torch.float32  # slopes stay exact
