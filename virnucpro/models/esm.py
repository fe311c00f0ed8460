"""ESM-2 protein embeddings through `transformers`' EsmModel (SPEC 1.4).

Tokens are `<cls> protein <eos>`; the embedding is the mean of the final layer's hidden states
(after the final LayerNorm) over residue positions only, never `<cls>`/`<eos>`/padding.
As in the original, the whole protein goes through the model and only the mean stops at residue
1024 (fair-esm's batch converter did not truncate). Proteins longer than `max_residues` (default
`DEFAULT_MAX_RESIDUES`, far beyond the proteins of 300/500 bp chunks) are cut to that length
before the model, with a log line saying how many, so one giant protein cannot exhaust memory. Letters are upper-cased; a letter ESM's alphabet lacks (e.g. J,
or the stop `*`) is mapped to `X` (unknown residue), one token per letter, with a warning.
"""

import logging
import os

import numpy as np
import torch

from ..errors import UserError
from ..engine.pooling import masked_mean, pad_batch

log = logging.getLogger(__name__)

#: The mean covers at most this many residues (the original's `truncation_seq_length`).
MAX_RESIDUES = 1024
#: Longer proteins are cut to this many residues before the model (attention memory grows with length^2).
DEFAULT_MAX_RESIDUES = 4096


class EsmTokens:
    """Residue-per-token encoding with the checkpoint's own vocabulary (`vocab.txt` via EsmTokenizer)."""

    def __init__(self, folder, max_residues=DEFAULT_MAX_RESIDUES):
        from transformers import EsmTokenizer

        self.max_residues = int(max_residues)

        if not os.path.isfile(os.path.join(folder, "vocab.txt")):
            raise UserError(f"{folder}: no vocab.txt (not an ESM model folder)")
        tokenizer = EsmTokenizer.from_pretrained(folder)
        vocab = tokenizer.get_vocab()
        self.cls_id = tokenizer.cls_token_id
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id
        unknown = vocab["X"]
        # One lookup table byte -> id: single-letter tokens of the vocabulary; anything else is X.
        self.table = np.full(256, unknown, dtype=np.int32)
        self.known = np.zeros(256, dtype=bool)
        for token, index in vocab.items():
            if len(token) == 1:
                self.table[ord(token)] = index
                self.known[ord(token)] = True

    def encode(self, sequences):
        """Token ids (int32 arrays) `<cls> residues <eos>` per protein (at most `max_residues` residues)."""
        encoded = []
        mapped = truncated = 0
        for seq in sequences:
            letters = np.frombuffer(seq.upper().encode("ascii"), dtype=np.uint8)
            if len(letters) > self.max_residues:
                letters = letters[: self.max_residues]
                truncated += 1
            mapped += int((~self.known[letters]).sum())
            encoded.append(np.concatenate(([self.cls_id], self.table[letters], [self.eos_id])).astype(np.int32))
        if mapped:
            log.warning("%d residue letters outside ESM's alphabet were embedded as X", mapped)
        if truncated:
            log.warning("%d proteins longer than %d residues were cut to their first %d before ESM-2 "
                        "(raise --max_residues to embed them whole)", truncated, self.max_residues, self.max_residues)
        return encoded


def load_esm(folder, device="cpu", dtype=torch.float32):
    """EsmModel (no pooler) from a `save_pretrained` folder (EsmModel or EsmForMaskedLM weights),
    built on the meta device and filled one weight at a time straight on `device` in `dtype`: the
    host never holds the model in the checkpoint's dtype (a 3B fp32 checkpoint in bf16 on the CPU
    peaks near the bf16 size, not three times it). A weight the model needs but the checkpoint lacks
    is an error naming it (transformers would fill it with random numbers and only warn); the
    checkpoint's extra tensors (the MLM and contact heads) are ignored."""
    from transformers import EsmConfig, EsmModel

    from .hub import weight_files
    from .weights import assign_weights, read_tensors

    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise UserError(f"{folder}: no config.json (not an ESM model folder)")
    config = EsmConfig.from_pretrained(folder)
    config._attn_implementation = "sdpa"
    with torch.device("meta"):
        model = EsmModel(config, add_pooling_layer=False)
    tensors = ((_module_key(key), value) for key, value in read_tensors(weight_files(folder), device, dtype))
    assign_weights(model, tensors, folder, "ESM-2", ignore=lambda key: True,
                   rebuilt=lambda key: key.endswith(("inv_freq", "position_ids")))
    for name, buffer in list(model.named_buffers()):  # rebuilt in float32, as transformers computes them
        owner_name, _, attr = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        if attr == "inv_freq":
            setattr(owner, attr, owner.compute_default_rope_parameters(config)[0].to(device))
        elif attr == "position_ids":
            setattr(owner, attr, torch.arange(buffer.shape[-1], device=device).expand(1, -1))
        elif buffer.is_meta:
            raise UserError(f"{folder}: this transformers version's EsmModel has a buffer {name} virnucpro cannot rebuild")
    return model.eval()


def _module_key(key):
    """EsmModel's name for a checkpoint key: no `esm.` prefix (EsmForMaskedLM files), and LayerNorm
    `gamma`/`beta` as `weight`/`bias` (the legacy names transformers also renames on loading)."""
    key = key[len("esm."):] if key.startswith("esm.") else key
    return key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")


def residue_mask(mask):
    """1 at residue positions 1..min(n, 1024) of each row (never <cls>, <eos> or padding)."""
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = torch.clamp(mask.sum(1, keepdim=True) - 2, max=MAX_RESIDUES)  # residues counted
    return ((positions >= 1) & (positions <= last)).to(mask.dtype)


def pooled(model, ids, mask):
    """ESM-2 embeddings [batch, hidden] float32 on the model's device: mean of the final layer over
    residues 1..1024 only (SPEC 1.4); `ids`/`mask` are a padded batch already on that device."""
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    return masked_mean(hidden, residue_mask(mask))


@torch.inference_mode()
def embed_batch(model, token_lists, pad_id, device):
    """ESM-2 embeddings [batch, hidden] float32 of token lists, as a numpy array."""
    ids, mask = pad_batch(token_lists, pad_id)
    return pooled(model, ids.to(device), mask.to(device)).cpu().numpy()
