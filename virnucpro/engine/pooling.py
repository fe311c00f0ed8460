"""Torch helpers shared by the DNABERT-S and ESM-2 modules: padding a batch, masked means, OOM
splitting, and torch.compile that steps aside when it cannot compile."""

import logging
import os
import tempfile

import numpy as np
import torch

log = logging.getLogger(__name__)

#: Padded lengths are rounded up to a multiple of this: shapes repeat (few torch.compile
#: recompiles) and attention kernels get aligned sizes.
LENGTH_MULTIPLE = 8


def fix_cpu_threads(threads):
    """Use exactly `threads` CPU threads for the model, set before every file, never left to what
    the machine or another stage set: the split of a matrix product over threads sets its rounding,
    so the same command must always run with the same count (SPEC 2 reproducibility)."""
    torch.set_num_threads(int(threads))


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


def writable_compile_caches():
    """Point the Inductor and Triton caches at a writable folder when they are not set and their
    default place is not writable (a container run as `-u uid:gid` has HOME=/): a cache that
    cannot be written would stop compiling. Variables the user set are left alone."""
    fallback = os.path.join(tempfile.gettempdir(), f"virnucpro-compile-cache-{os.getuid()}")
    inductor = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if inductor is None:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        if not _can_write(default_cache_dir()):
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(fallback, "inductor")
    if os.environ.get("TRITON_CACHE_DIR") is None:
        home = os.environ.get("TRITON_HOME") or os.path.expanduser("~")
        if not _can_write(os.path.join(home, ".triton", "cache")):
            os.environ["TRITON_CACHE_DIR"] = os.path.join(fallback, "triton")


def _can_write(folder):
    """Whether `folder` exists writable or could be made (its nearest existing parent is writable)."""
    folder = os.path.abspath(folder)
    while not os.path.exists(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            return False
        folder = parent
    return os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)


class CompiledOrEager:
    """`model(...)` through one torch.compile graph for every batch size and length (dynamic shapes,
    size 1 included), or eagerly if compiling fails for any reason: when torch.compile is set up,
    or at a call, which is when Inductor/Triton really compile (no C compiler, unwritable cache,
    an Inductor bug). One warning line, then the same model runs eager for the rest of the process,
    so results are those of the model itself. Out of memory is not a compile failure: it is raised
    (for `OomSplitter`)."""

    def __init__(self, model, backend="inductor"):
        self.model, self.compiled = model, None
        try:
            writable_compile_caches()
            self.compiled = torch.compile(model, dynamic=True, backend=backend)
        except Exception as err:
            self._step_aside(err)

    def __call__(self, *args, **kwargs):
        if self.compiled is not None:
            from torch.fx.experimental import _config as shape_config

            # The batch size is a size like any other, one included: dynamo would otherwise give
            # sizes 0 and 1 graphs of their own (and FlexAttention guards on batch >= 2).
            for value in (*args, *kwargs.values()):
                if isinstance(value, torch.Tensor) and value.dim():
                    torch._dynamo.decorators.mark_unbacked(value, 0)
            try:
                with shape_config.patch(backed_size_oblivious=True):
                    return self.compiled(*args, **kwargs)
            except torch.OutOfMemoryError:
                raise
            except Exception as err:
                self._step_aside(err)
        return self.model(*args, **kwargs)

    def _step_aside(self, err):
        self.compiled = None
        while getattr(err, "inner_exception", None) or err.__cause__:  # dynamo wraps the compiler's own error
            err = getattr(err, "inner_exception", None) or err.__cause__
        reason = (str(err).strip().splitlines() or [""])[0][:200]
        log.warning("torch.compile failed (%s: %s): running eager instead", type(err).__name__, reason)
