"""DNABERT-S / DNABERT-2 (MosaicBERT) as a native PyTorch module: no remote code (SPEC 1.3).

The upstream model code (`bert_layers.py`, loaded with `trust_remote_code`) is replaced by this
module, which loads the checkpoint's own files strictly: `config.json`, the weights
(`model.safetensors` or `pytorch_model.bin`, read with `weights_only`, sharded or not) and
`tokenizer.json`. Facts it relies on are in `tests/data/dnabert_reference/README.md`:
post-LN layers, fused `Wqkv` laid out `(t h d)`, symmetric ALiBi with upstream's slopes (also for
12 heads), gated-linear-unit MLP with GELU on the first half, no position embeddings.

Attention runs through `torch.nn.functional.scaled_dot_product_attention` with one additive float
mask (ALiBi + padding), so fused kernels apply on GPU. Nothing is truncated: inputs longer than
the ALiBi size (`alibi_starting_size`) get a larger bias, as upstream does.
"""

import json
import logging
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserError
from .hub import weight_files
from .pooling import masked_mean, pad_batch

log = logging.getLogger(__name__)

#: Checkpoint keys this module deliberately has no use for: the MLM head of DNABERT-2-117M's
#: `BertForMaskedLM` checkpoint, the pooler (not used for embeddings) and buffers that upstream
#: rebuilds (`alibi` is never saved by upstream, but may be present in converted files).
IGNORED_KEY_PREFIXES = (
    "cls.predictions.", "pooler.", "encoder.alibi", "embeddings.token_type_ids", "embeddings.position_ids",
)


def alibi_slopes(n_heads):
    """ALiBi slopes exactly as upstream computes them (non-powers of two borrow from the next power)."""

    def power_of_2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n_heads).is_integer():
        return power_of_2(n_heads)
    closest = 2 ** math.floor(math.log2(n_heads))
    return power_of_2(closest) + alibi_slopes(2 * closest)[0::2][: n_heads - closest]


def alibi_bias(n_heads, size, device=None):
    """Bias [1, heads, size, size] = -slope_h * |i - j| in float32, as upstream builds it."""
    position = torch.arange(size, device=device)
    distance = (position[None, :] - position[:, None]).abs().unsqueeze(0).expand(n_heads, -1, -1)
    slopes = torch.tensor(alibi_slopes(n_heads), dtype=torch.float32, device=device)
    return (slopes[:, None, None] * -distance).unsqueeze(0)


class DnabertConfig:
    """The few `config.json` fields the architecture needs."""

    def __init__(self, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size,
                 vocab_size, type_vocab_size=2, layer_norm_eps=1e-12, alibi_starting_size=512, **_):
        self.hidden_size = int(hidden_size)
        self.num_hidden_layers = int(num_hidden_layers)
        self.num_attention_heads = int(num_attention_heads)
        self.intermediate_size = int(intermediate_size)
        self.vocab_size = int(vocab_size)
        self.type_vocab_size = int(type_vocab_size)
        self.layer_norm_eps = float(layer_norm_eps)
        self.alibi_starting_size = int(alibi_starting_size)
        if self.hidden_size % self.num_attention_heads:
            raise UserError(f"config.json: hidden_size {hidden_size} is not a multiple of "
                            f"num_attention_heads {num_attention_heads}")

    @classmethod
    def from_folder(cls, folder):
        path = os.path.join(folder, "config.json")
        try:
            with open(path) as handle:
                values = json.load(handle)
            return cls(**values)
        except FileNotFoundError:
            raise UserError(f"{folder}: no config.json (not a DNABERT-S model folder)") from None
        except (json.JSONDecodeError, TypeError, ValueError) as err:
            raise UserError(f"{path}: not a usable DNABERT config: {err}") from None


class _Embeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids):
        # Upstream always passes token type 0; there are no position embeddings (ALiBi instead).
        return self.LayerNorm(self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0])


class _SelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)


class _AttentionOutput(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class _Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.heads = config.num_attention_heads
        self.self = _SelfAttention(config)
        self.output = _AttentionOutput(config)

    def forward(self, x, bias):
        batch, length, hidden = x.shape
        # Wqkv rows are laid out (t h d): Q, K, V blocks, each split into heads.
        qkv = self.self.Wqkv(x).view(batch, length, 3, self.heads, hidden // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        context = context.transpose(1, 2).reshape(batch, length, hidden)
        return self.output.LayerNorm(self.output.dense(context) + x)


class _GatedMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.intermediate = config.intermediate_size
        self.gated_layers = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.wo = nn.Linear(config.intermediate_size, config.hidden_size)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x):
        gated = self.gated_layers(x)
        # GELU (exact erf form) on the FIRST half, multiplying the second half.
        glu = F.gelu(gated[..., : self.intermediate]) * gated[..., self.intermediate :]
        return self.layernorm(self.wo(glu) + x)


class _Layer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attention = _Attention(config)
        self.mlp = _GatedMLP(config)

    def forward(self, x, bias):
        return self.mlp(self.attention(x, bias))


class _Encoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(config) for _ in range(config.num_hidden_layers))


class DnabertModel(nn.Module):
    """MosaicBERT encoder; parameter names match the upstream checkpoint's keys."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)
        self._alibi = None  # float32 [1, heads, size, size]; grown on demand, never saved

    def _bias(self, attention_mask, dtype):
        """ALiBi plus padding as one additive mask [batch, heads, length, length] in `dtype`."""
        length = attention_mask.shape[1]
        if self._alibi is None or self._alibi.shape[-1] < length or self._alibi.device != attention_mask.device:
            size = max(self.config.alibi_starting_size, length)
            if self._alibi is not None and length > self._alibi.shape[-1]:
                log.debug("increasing ALiBi size from %d to %d", self._alibi.shape[-1], size)
            self._alibi = alibi_bias(self.config.num_attention_heads, size, attention_mask.device)
        bias = self._alibi[:, :, :length, :length].to(dtype)
        padded_keys = ~attention_mask.bool()[:, None, None, :]
        return bias.masked_fill(padded_keys, torch.finfo(dtype).min)

    def forward(self, input_ids, attention_mask=None):
        """Final-layer hidden states [batch, length, hidden]; padded positions hold junk (mask them)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x = self.embeddings(input_ids)
        bias = self._bias(attention_mask, x.dtype)
        for layer in self.encoder.layer:
            x = layer(x, bias)
        return x


def read_state_dict(folder):
    """All tensors of the checkpoint, read without executing pickled code."""
    state = {}
    for path in weight_files(folder):
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state.update(load_file(path))
        else:
            try:
                state.update(torch.load(path, map_location="cpu", weights_only=True))
            except Exception as err:  # pickle errors come in many types
                raise UserError(f"{path}: cannot read weights safely: {err}") from None
    return state


def checkpoint_to_module_keys(state):
    """Map a checkpoint to this module's keys: drop `bert.` (DNABERT-2 MLM checkpoints) and the
    documented unused keys; everything else must match exactly."""
    if any(key.startswith("bert.") for key in state):
        state = {key[len("bert."):] if key.startswith("bert.") else key: value for key, value in state.items()}
    ignored = sorted(key for key in state if key.startswith(IGNORED_KEY_PREFIXES))
    if ignored:
        log.debug("ignoring %d checkpoint tensors not used for embeddings: %s", len(ignored), ", ".join(ignored))
    return {key: value for key, value in state.items() if key not in ignored}


def load_dnabert(folder, device="cpu", dtype=torch.float32):
    """Build the native module from a DNABERT-S/DNABERT-2 folder; a missing or unexpected weight is an error."""
    config = DnabertConfig.from_folder(folder)
    model = DnabertModel(config)
    state = checkpoint_to_module_keys(read_state_dict(folder))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append("missing weights: " + ", ".join(missing))
        if unexpected:
            parts.append("unexpected weights: " + ", ".join(unexpected))
        raise UserError(f"{folder}: checkpoint does not match DNABERT-S ({'; '.join(parts)})")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise UserError(f"{folder}: weight {key} has shape {tuple(value.shape)}, "
                            f"config.json implies {tuple(expected[key].shape)}")
    model.load_state_dict({key: value.float() for key, value in state.items()}, strict=True)
    return model.to(device=device, dtype=dtype).eval()


class DnabertTokenizer:
    """The checkpoint's `tokenizer.json` (BPE; adds [CLS] ... [SEP]); N and other letters become [UNK]."""

    def __init__(self, folder):
        from tokenizers import Tokenizer

        path = os.path.join(folder, "tokenizer.json")
        if not os.path.isfile(path):
            raise UserError(f"{folder}: no tokenizer.json")
        self.tokenizer = Tokenizer.from_file(path)
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.pad_id = self.tokenizer.token_to_id("[PAD]")
        if self.pad_id is None:
            raise UserError(f"{path}: no [PAD] token")

    def encode(self, sequences):
        """Token ids (int32 arrays) per sequence, [CLS]/[SEP] included; nothing truncated."""
        return [np.asarray(encoding.ids, dtype=np.int32) for encoding in self.tokenizer.encode_batch(list(sequences))]


def pooled(model, ids, mask):
    """DNABERT-S embeddings [batch, hidden] float32 on the model's device: mean over ALL tokens,
    [CLS]/[SEP] included (SPEC 1.3); `ids`/`mask` are a padded batch already on that device."""
    return masked_mean(model(ids, mask), mask)


@torch.inference_mode()
def embed_batch(model, token_lists, pad_id, device):
    """DNABERT-S embeddings [batch, hidden] float32 of token lists, as a numpy array."""
    ids, mask = pad_batch(token_lists, pad_id)
    return pooled(model, ids.to(device), mask.to(device)).cpu().numpy()
