"""Torch helpers shared by the DNABERT-S and ESM-2 modules: padding a batch, masked means, OOM splitting."""

import logging

import numpy as np
import torch

log = logging.getLogger(__name__)

#: Padded lengths are rounded up to a multiple of this: shapes repeat (few torch.compile
#: recompiles) and attention kernels get aligned sizes.
LENGTH_MULTIPLE = 8


def pad_batch(token_lists, pad_id, multiple=1, pin=False):
    """Right-padded ids and attention mask, both int64 [batch, longest rounded up to `multiple`];
    `pin` puts them in page-locked memory so a copy to the GPU need not block."""
    length = max(len(tokens) for tokens in token_lists)
    length = -(-length // multiple) * multiple
    ids = np.full((len(token_lists), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(token_lists), length), dtype=np.int64)
    for row, tokens in enumerate(token_lists):
        ids[row, : len(tokens)] = tokens
        mask[row, : len(tokens)] = 1
    ids, mask = torch.from_numpy(ids), torch.from_numpy(mask)
    if pin:
        ids, mask = ids.pin_memory(), mask.pin_memory()
    return ids, mask


def masked_mean(hidden, mask):
    """Mean over the positions where mask is 1, in float32 (padding never counts)."""
    mask = mask.to(hidden.device, torch.float32).unsqueeze(-1)
    return (hidden.float() * mask).sum(1) / mask.sum(1)


class OomSplitter:
    """forward(ids, mask) for a batch; if the device runs out of memory, the batch is split in two
    and each half retried (recursively) instead of stopping the run. A single sequence that does
    not fit is re-raised. The smallest padded size that failed is remembered, so later batches as
    large are split up front instead of failing (and being logged) again."""

    def __init__(self, forward, device):
        self.forward, self.device, self.too_big = forward, device, None

    def __call__(self, ids, mask):
        if self.too_big is not None and len(ids) > 1 and ids.numel() >= self.too_big:
            return self._halves(ids, mask)
        try:
            return self.forward(ids, mask)
        except torch.OutOfMemoryError:
            if len(ids) == 1:
                raise
        if str(self.device).startswith("cuda"):
            torch.cuda.empty_cache()
        self.too_big = min(self.too_big or ids.numel(), ids.numel())
        log.warning("out of memory on %s for a batch of %d x %d tokens: splitting it into %d + %d "
                    "(and every later batch of >= %d padded tokens)", self.device, len(ids), ids.shape[1],
                    len(ids) // 2, len(ids) - len(ids) // 2, self.too_big)
        return self._halves(ids, mask)

    def _halves(self, ids, mask):
        half = len(ids) // 2
        return torch.cat([self(ids[:half], mask[:half]), self(ids[half:], mask[half:])])
