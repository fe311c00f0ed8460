"""DNABERT-S / DNABERT-2 (MosaicBERT) as a native PyTorch module: no remote code (SPEC 1.3).

The upstream model code (`bert_layers.py`, loaded with `trust_remote_code`) is replaced by this
module, which loads the checkpoint's own files strictly: `config.json`, the weights
(`model.safetensors` or `pytorch_model.bin`, read with `weights_only`, sharded or not) and
`tokenizer.json`. Facts it relies on are in `tests/data/dnabert_reference/README.md`:
post-LN layers, fused `Wqkv` laid out `(t h d)`, symmetric ALiBi with upstream's slopes (also for
12 heads), gated-linear-unit MLP with GELU on the first half, no position embeddings.

Attention never builds a per-batch [batch, heads, length, length] bias (ALiBi + padding):
- compiled (`torch.compile`, e.g. on a GPU): FlexAttention with the ALiBi slope and the padding
  as a score modifier, one fused kernel for any batch and length;
- eager: `scaled_dot_product_attention` on each run of rows of equal length, unpadded, with the
  shared ALiBi bias [1, heads, n, n] as a broadcast view: the padding needs no mask at all and
  every sequence's attention is exactly the one it gets alone (as the original ran it).
Nothing is truncated: inputs longer than the ALiBi size (`alibi_starting_size`) get a larger bias,
as upstream does.
"""

import json
import logging
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .hub import weight_files
from ..engine.pooling import masked_mean, pad_batch
from .weights import assign_weights, read_tensors

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

    def forward(self, x, attend):
        batch, length, hidden = x.shape
        # Wqkv rows are laid out (t h d): Q, K, V blocks, each split into heads.
        qkv = self.self.Wqkv(x).view(batch, length, 3, self.heads, hidden // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        context = attend(q, k, v)
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

    def forward(self, x, attend):
        return self.mlp(self.attention(x, attend))


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
        # ALiBi slopes, and the eager path's shared bias [1, heads, size, size] in the model's dtype
        # (grown on demand); rebuilt, never saved.
        self.register_buffer("alibi_slopes", torch.tensor(alibi_slopes(config.num_attention_heads)), persistent=False)
        self.register_buffer("alibi", alibi_bias(config.num_attention_heads, config.alibi_starting_size), persistent=False)

    def forward(self, input_ids, attention_mask=None):
        """Final-layer hidden states [batch, length, hidden]; padded positions hold junk (mask them)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x = self.embeddings(input_ids)
        lengths = attention_mask.sum(1)
        attend = self._attention(lengths, x.dtype)
        for layer in self.encoder.layer:
            x = layer(x, attend)
        return x

    def _attention(self, lengths, dtype):
        """FlexAttention inside a compiled graph; unpadded runs of equal length in eager."""
        return self._flex(lengths) if torch.compiler.is_compiling() else self._unpadded(lengths, dtype)

    def _flex(self, lengths):
        """Attention for compiled graphs: FlexAttention, ALiBi and padding applied to each score."""
        from torch.nn.attention.flex_attention import flex_attention

        slopes = self.alibi_slopes

        def alibi_and_padding(score, b, h, q, kv):
            return torch.where(kv < lengths[b], score - slopes[h] * (q - kv).abs(), -float("inf"))

        return lambda q, k, v: flex_attention(q, k, v, score_mod=alibi_and_padding)

    def _unpadded(self, lengths, dtype):
        """Eager attention: each run of rows of equal length n attends over its first n positions only
        (no padding to mask), with the shared ALiBi bias; positions past n get zeros (junk, masked later)."""
        lengths = lengths.tolist()
        longest = max(lengths)
        if self.alibi.shape[-1] < longest:
            log.debug("increasing ALiBi size from %d to %d", self.alibi.shape[-1], longest)
            self.alibi = alibi_bias(self.config.num_attention_heads, longest, self.alibi.device)
        if self.alibi.dtype != dtype:
            self.alibi = self.alibi.to(dtype)
        runs = []  # (first row, end row, length)
        for row, length in enumerate(lengths):
            if runs and runs[-1][2] == length:
                runs[-1][1] = row + 1
            else:
                runs.append([row, row + 1, length])

        def attend(q, k, v):
            if len(runs) == 1 and runs[0][2] == q.shape[2]:  # no padding at all
                return F.scaled_dot_product_attention(q, k, v, attn_mask=self.alibi[:, :, :longest, :longest])
            context = torch.zeros_like(q)
            for first, end, n in runs:
                context[first:end, :, :n] = F.scaled_dot_product_attention(
                    q[first:end, :, :n], k[first:end, :, :n], v[first:end, :, :n], attn_mask=self.alibi[:, :, :n, :n])
            return context

        return attend


def read_state_dict(folder):
    """All tensors of the checkpoint as they are stored, read without executing pickled code."""
    return dict(read_tensors(weight_files(folder)))


def checkpoint_to_module_keys(tensors):
    """(name, tensor) pairs under this module's keys: `bert.` dropped (DNABERT-2 MLM checkpoints)."""
    for key, value in tensors:
        yield (key[len("bert."):] if key.startswith("bert.") else key), value


def load_dnabert(folder, device="cpu", dtype=torch.float32):
    """Build the native module from a DNABERT-S/DNABERT-2 folder, each weight read straight to `device`
    in `dtype`; a missing or unexpected weight is an error naming it (the unused keys of
    IGNORED_KEY_PREFIXES excepted)."""
    config = DnabertConfig.from_folder(folder)
    with torch.device("meta"):
        model = DnabertModel(config)
    tensors = checkpoint_to_module_keys(read_tensors(weight_files(folder), device, dtype))
    assign_weights(model, tensors, folder, "DNABERT-S", ignore=lambda key: key.startswith(IGNORED_KEY_PREFIXES))
    model.alibi_slopes = torch.tensor(alibi_slopes(config.num_attention_heads), device=device)
    model.alibi = alibi_bias(config.num_attention_heads, config.alibi_starting_size, device).to(dtype)
    return model.eval()


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
