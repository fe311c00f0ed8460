"""A model on its devices: padded batches in, pooled float32 vectors out, in batch order.

One device runs in this process. Several (`--gpus N`, CPU `--workers N`) run one spawned process
each (a single-process pool per device, `parallel.start_pool`), which loads the model once and
serves every file until the `BatchEmbedder` is closed; each batch goes to the least busy device and the
results come back in order (`parallel.ordered_map`). A batch that runs out of device memory is split
in two and retried (`pooling.OomSplitter`); the smallest size that ran out is kept (`oom_split`)
so later batches are split up front, here and in every worker.
"""

from ..errors import UserError
from ..parallel import ordered_map, result, start_pool


def load_model(kind, folder, device, precision):
    """The checkpoint in `folder` as an eval-mode module on `device` in `precision`."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    if kind == "dnabert":
        from ..models.dnabert import load_dnabert

        return load_dnabert(folder, device, dtype)
    from ..models.esm import load_esm

    return load_esm(folder, device, dtype)


class Runner:
    """A model on one device: a padded batch in, pooled float32 embeddings [batch, D] out (on the device).

    A batch that runs out of device memory is split in two and retried (`pooling.OomSplitter`)."""

    def __init__(self, kind, model, device, compile=False):
        if kind == "dnabert":
            from ..models.dnabert import pooled
        else:
            from ..models.esm import pooled
        from .pooling import CompiledOrEager, OomSplitter

        if compile:  # one graph for every shape; eager with one warning if compiling fails
            model = CompiledOrEager(model)

        self.kind, self.model, self.pooled, self.device = kind, model, pooled, device
        self.forward = OomSplitter(lambda ids, mask: self.pooled(self.model, ids, mask), device)

    def __call__(self, ids, mask):
        import torch

        with torch.inference_mode():
            ids, mask = ids.to(self.device, non_blocking=True), mask.to(self.device, non_blocking=True)
            try:
                return self.forward(ids, mask)
            except torch.OutOfMemoryError:
                raise UserError(f"out of memory on {self.device} for a single sequence of {ids.shape[1]} tokens"
                                + ("; lower --max_residues" if self.kind == "esm" else "")) from None


def load_runner(kind, folder, device, precision, compile=False):
    """The model of `kind` on `device`, ready to embed batches (benchmarks swap in other models here)."""
    return Runner(kind, load_model(kind, folder, device, precision), device, compile)


#: The model of a device's worker process (`_load_in_worker`), used by its later tasks.
_RUNNER = {}


def _load_in_worker(kind, folder, device, precision, compile, threads):
    """The first task of a device's worker process: load its model (an error reaches the parent as this task's)."""
    from .pooling import fix_cpu_threads

    fix_cpu_threads(threads)
    _RUNNER["runner"] = load_runner(kind, folder, device, precision, compile)


def _embed_in_worker(task):
    """(pooled embeddings as numpy float32, out-of-memory split size) of one padded batch, in the
    worker's model; the task carries the smallest split size known to the parent."""
    import torch

    ids, mask, oom_split = task
    runner = _RUNNER["runner"]
    runner.forward.too_big = smaller(runner.forward.too_big, oom_split)
    vectors = runner(torch.from_numpy(ids), torch.from_numpy(mask)).cpu().numpy()
    return vectors, runner.forward.too_big


def smaller(a, b):
    """The smaller of two optional sizes (None: unknown)."""
    return b if a is None else a if b is None else min(a, b)


class BatchEmbedder:
    """The model of `kind` in `folder` on the devices of `plan` (`devices.plan`), loaded on first use.

    `vectors(batches)` yields (batch, result) in batch order: a result is a numpy array, or on a GPU
    in this process (pinned host tensor, CUDA event) for the writer to wait on."""

    def __init__(self, kind, folder, plan, threads):
        self.kind, self.folder, self.plan, self.threads = kind, folder, plan, threads
        self.runner = self.pools = None
        #: Smallest padded batch size that ran out of device memory (`pooling.OomSplitter`), kept in the partial file.
        self.oom_split = None

    def close(self, clean=True):
        """Free the model (and its GPU memory), and end the worker processes (`clean`: not after an
        error or a signal, see `parallel.Pool.close`)."""
        self.runner = None
        pools, self.pools = self.pools, None
        for pool in pools or ():
            pool.close(clean)

    def vectors(self, batches):
        if len(self.plan.devices) == 1:
            yield from self._here(batches)
        else:
            yield from self._in_workers(batches)

    def _here(self, batches):
        """On this process's device."""
        import torch

        from .pooling import fix_cpu_threads

        fix_cpu_threads(self.threads)
        if self.runner is None:
            self.runner = load_runner(self.kind, self.folder, self.plan.devices[0], self.plan.precision,
                                      self.plan.compile)
        splitter = self.runner.forward
        for batch in batches:
            splitter.too_big = smaller(splitter.too_big, self.oom_split)
            vectors = self.runner(batch.ids, batch.mask)
            self.oom_split = batch.oom_split = splitter.too_big
            if vectors.device.type == "cuda":  # copy back without blocking; the writer waits for it
                host = torch.empty(vectors.shape, dtype=vectors.dtype, pin_memory=True)
                host.copy_(vectors, non_blocking=True)
                event = torch.cuda.Event(blocking=True)
                event.record()
                yield batch, (host, event)
            else:
                yield batch, vectors.numpy()

    def _in_workers(self, batches):
        """On one worker process per device, each batch to the least busy one, results in order."""
        import collections

        devices = self.plan.devices
        if self.pools is None:
            threads = max(1, self.threads // len(devices)) if self.plan.type == "cpu" else self.threads
            pools = [start_pool(1) for _ in devices]
            try:  # each device's first task: a failed load is raised here, as the worker raised it
                loads = [pool.submit(_load_in_worker, self.kind, self.folder, device, self.plan.precision,
                                     self.plan.compile, threads) for pool, device in zip(pools, devices)]
                for load, pool in zip(loads, pools):
                    result(load, pool)
            except BaseException:
                for pool in pools:
                    pool.close(clean=False)
                raise
            self.pools = pools
        pending = collections.deque()

        def tasks():
            for batch in batches:
                pending.append(batch)
                yield batch.ids.numpy(), batch.mask.numpy(), self.oom_split

        for vectors, oom_split in ordered_map(_embed_in_worker, tasks(), len(devices), max_in_flight=2 * len(devices),
                                              pools=self.pools):
            self.oom_split = smaller(self.oom_split, oom_split)
            batch = pending.popleft()
            batch.oom_split = self.oom_split
            yield batch, vectors
