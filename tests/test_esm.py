"""ESM-2 embeddings: equal to a direct `transformers` run, residues only, first 1024 residues."""

import os
import shutil

import numpy as np
import pytest
import torch

from virnucpro.errors import UserError
from virnucpro.models.esm import MAX_RESIDUES, EsmTokens, embed_batch, load_esm

PROTEINS = ["MKVLAAGIRSTW", "ACDEFGHIKLMNPQRSTVWY" * 4, "M", "MPQRSTVWYAC" * 7, "GGGGSGGGGS", "BZUOXMKLV"]


def cosines(a, b):
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def esm(test_models):
    folder = test_models["esm"]
    return folder, load_esm(folder), EsmTokens(folder)


def direct_transformers(folder, proteins):
    """What one would write with transformers alone: one protein at a time, mean of tokens 1..n."""
    from transformers import EsmModel, EsmTokenizer

    tokenizer = EsmTokenizer.from_pretrained(folder)
    model = EsmModel.from_pretrained(folder, add_pooling_layer=False).eval()
    rows = []
    with torch.no_grad():
        for protein in proteins:
            hidden = model(**tokenizer(protein, return_tensors="pt")).last_hidden_state[0]
            rows.append(hidden[1 : len(protein) + 1].mean(0).numpy())
    return np.stack(rows)


def test_tokens_match_the_esm_tokenizer(esm):
    from transformers import EsmTokenizer

    folder, _, tokens = esm
    tokenizer = EsmTokenizer.from_pretrained(folder)
    for protein, ids in zip(PROTEINS, tokens.encode(PROTEINS)):
        assert list(ids) == tokenizer(protein)["input_ids"]


def test_unknown_letters_become_x_and_lowercase_is_read(esm):
    _, _, tokens = esm
    lower, upper, mapped = tokens.encode(["mkv", "MKV", "MJ*"])
    assert list(lower) == list(upper)
    x = tokens.table[ord("X")]
    assert list(mapped[2:4]) == [x, x] and len(mapped) == 5


def test_unbatched_equals_direct_transformers_run(esm):
    folder, model, tokens = esm
    ours = np.stack([embed_batch(model, [ids], tokens.pad_id, "cpu")[0] for ids in tokens.encode(PROTEINS)])
    expected = direct_transformers(folder, PROTEINS)
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)
    assert cosines(ours, expected).min() >= 0.99999


def test_batched_equals_unbatched(esm):
    _, model, tokens = esm
    ids = tokens.encode(PROTEINS)
    alone = np.stack([embed_batch(model, [one], tokens.pad_id, "cpu")[0] for one in ids])
    together = embed_batch(model, ids, tokens.pad_id, "cpu")
    assert cosines(together, alone).min() >= 0.9999
    np.testing.assert_allclose(together, alone, atol=1e-4, rtol=0)


def test_long_protein_goes_whole_through_the_model_and_the_mean_stops_at_1024(esm):
    """As the original: the whole protein through ESM-2, the mean over residues 1..1024 only."""
    from transformers import EsmModel, EsmTokenizer

    folder, model, tokens = esm
    rng = np.random.default_rng(3)
    protein = "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size=MAX_RESIDUES + 76))
    long_ids = tokens.encode([protein])[0]
    assert len(long_ids) == len(protein) + 2
    both = embed_batch(model, [long_ids, tokens.encode(["MKV"])[0]], tokens.pad_id, "cpu")
    reference = EsmModel.from_pretrained(folder, add_pooling_layer=False).eval()
    with torch.no_grad():  # unbatched transformers run of the whole protein
        hidden = reference(**EsmTokenizer.from_pretrained(folder)(protein, return_tensors="pt")).last_hidden_state[0]
    expected = hidden[1 : MAX_RESIDUES + 1].mean(0).numpy()
    np.testing.assert_allclose(both[0], expected, atol=1e-5, rtol=0)
    truncated_first = embed_batch(model, tokens.encode([protein[:MAX_RESIDUES]]), tokens.pad_id, "cpu")[0]
    assert cosines(both[:1], truncated_first[None])[0] < cosines(both[:1], expected[None])[0]


def test_proteins_over_the_cap_are_cut_with_a_warning(esm, caplog):
    folder, _, _ = esm
    capped = EsmTokens(folder, max_residues=50)
    with caplog.at_level("WARNING"):
        cut, kept = capped.encode(["M" * 80, "M" * 50])
    assert len(cut) == len(kept) == 52
    assert "1 proteins longer than 50 residues were cut" in caplog.text


def test_missing_weights_are_an_error(tmp_path, test_models):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "esm"
    shutil.copytree(test_models["esm"], folder)
    state = load_file(str(folder / "model.safetensors"))
    dropped = next(key for key in state if "attention.self.query.weight" in key)
    del state[dropped]
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(UserError, match=r"checkpoint does not match ESM-2 \(missing weights: .*query\.weight"):
        load_esm(str(folder))
    with pytest.raises(UserError, match="no vocab.txt"):
        EsmTokens(str(tmp_path))
    assert not os.path.exists(tmp_path / "config.json")
    with pytest.raises(UserError, match="no config.json"):
        load_esm(str(tmp_path))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_loading_straight_in_the_compute_dtype_equals_transformers(test_models, dtype):
    """The meta-device loader (one tensor at a time, cast as read) gives transformers' own model:
    the same weights and buffers, the same hidden states, bit for bit."""
    from transformers import EsmModel

    ours = load_esm(test_models["esm"], dtype=dtype)
    theirs = EsmModel.from_pretrained(test_models["esm"], add_pooling_layer=False, dtype=dtype).eval()
    assert not any(t.is_meta for t in [*ours.parameters(), *ours.buffers()])
    mine, reference = ours.state_dict(), theirs.state_dict()
    assert mine.keys() == reference.keys()
    assert all(mine[key].dtype == reference[key].dtype and torch.equal(mine[key], reference[key]) for key in mine)
    ids = torch.tensor([[0, 5, 6, 7, 8, 2, 1, 1], [0, 9, 10, 11, 12, 13, 14, 2]])
    mask = (ids != 1).long()
    with torch.inference_mode():
        assert torch.equal(ours(input_ids=ids, attention_mask=mask).last_hidden_state,
                           theirs(input_ids=ids, attention_mask=mask).last_hidden_state)


def test_safetensors_are_read_without_mapping_the_file(test_models, monkeypatch):
    """A memory-mapped 11 GB checkpoint counts in resident memory until unmapped: plain reads only."""
    import mmap

    from virnucpro.models.weights import read_tensors

    def no_mmap(*args, **kwargs):
        raise AssertionError("the checkpoint was memory-mapped")

    monkeypatch.setattr(mmap, "mmap", no_mmap)
    import safetensors

    monkeypatch.setattr(safetensors, "safe_open", no_mmap)
    tensors = dict(read_tensors([os.path.join(test_models["esm"], "model.safetensors")], dtype=torch.bfloat16))
    assert tensors and all(t.dtype == torch.bfloat16 for t in tensors.values() if t.is_floating_point())


def test_a_truncated_safetensors_file_is_one_clear_error(tmp_path, test_models):
    folder = tmp_path / "esm"
    shutil.copytree(test_models["esm"], folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(UserError, match="not a readable safetensors file .*cut short"):
        load_esm(str(folder))
