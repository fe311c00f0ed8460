"""`virnucpro-extract`: DNABERT-S or ESM-2 embeddings of a FASTA file, written to HDF5 (SPEC 1.3, 1.4, 2).

How the work flows (memory stays flat whatever the input size, beyond one id per sequence):
- a first pass over the FASTA keeps only the ids and a digest (for resume and skip checks);
- a reader thread streams the FASTA again in windows of `block_size` sequences and tokenizes
  each window, up to two windows ahead (the Rust DNA tokenizer works on all cores, outside the
  GIL, while the model runs); a second thread sorts each window by token count (longest first:
  an out-of-memory batch shows up at once), cuts it into batches whose padded size (sequences x
  longest, rounded up to a multiple of 8) stays within `batch_tokens`, and pads them ahead of
  time (into pinned memory on a GPU);
- the calling thread feeds the device: copies without blocking, the forward pass and the pooled mean;
  results are copied back asynchronously;
- a writer thread checks every vector is finite, puts each window back in input order and writes
  it as one contiguous slab to `.<output name>.virnucpro-partial`, then marks the window done: a killed run
  resumes after its last complete window.

What is reproducible (README, Reproducibility): padding is masked, so a vector does not depend on
its batch beyond rounding. Bit for bit: the same command on the same input, CPU, fp32, resumed or
not: windows and batches follow from the input and the settings alone (never from how far a
thread got), the thread count is fixed before every file (`pooling.fix_cpu_threads`) and the
out-of-memory split size is saved with the partial file. Within a tolerance only: other
--batch_tokens, --block_size, --threads, workers or shards (other rounding), a GPU, bf16/fp16.

Devices: one device in this process; with several GPUs (`--gpus N`) or CPU workers
(`--workers N`), one spawned worker per device loads the model once (`parallel.ordered_map`).
`Embedder` loads a model once and embeds any number of files (what `virnucpro-predict` needs).
"""

import contextlib
import hashlib
import json
import logging
import math
import numbers
import os
import queue
import re
import threading
import time

import numpy as np

from .. import __version__
from ..errors import UserError
from ..embeddings_h5 import IDENTITY_ATTRS, PartialEmbeddings, content_matches, partial_path, read_attrs
from ..fasta import read_fasta
from ..models.hub import model_folder
from ..outputs import exclusive
from ..parallel import available_cpus, cap_workers, end_pool, model_worker_memory, ordered_map, start_pool

log = logging.getLogger(__name__)

KINDS = ("dnabert", "esm")
DEFAULT_MODELS = {"dnabert": "zhihan1996/DNABERT-S", "esm": "facebook/esm2_t36_3B_UR50D"}
POOLING = {
    "dnabert": "mean of the last layer over all tokens, [CLS] and [SEP] included",
    "esm": "mean of the final layer over residues only (no <cls>/<eos>), first 1024 residues, whole protein "
           "through the model (proteins over {max_residues} residues cut to {max_residues})",
}
#: Padded tokens per batch when --batch_tokens is not given, by (kind, device type).
DEFAULT_BATCH_TOKENS = {("dnabert", "cpu"): 8192, ("esm", "cpu"): 4096, ("dnabert", "cuda"): 65536, ("esm", "cuda"): 32768}
#: Sequences per window = resumable block (a kill loses at most one block of work).
DEFAULT_BLOCK_SIZE = 4096
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPILE = ("auto", "on", "off")
#: Batches prepared ahead of the device, and results waiting for the writer.
PREFETCH_BATCHES = 4
#: Tokenized windows read ahead of the padding stage.
PREFETCH_WINDOWS = 2
#: Changes whenever the partial file's block layout changes (an old partial is then started over).
PARTIAL_LAYOUT = "windows-1"


# ---------------------------------------------------------------- models


def resolve_model(kind, model=None):
    """(local folder, revision) of `model` (default: the published model of `kind`): `hub.model_folder`."""
    return model_folder(model or DEFAULT_MODELS[kind])


def model_dim(kind, folder):
    """Embedding size, from config.json (so an empty input needs no model load)."""
    with open(os.path.join(folder, "config.json")) as handle:
        return int(json.load(handle)["hidden_size"])


# ---------------------------------------------------------------- devices and models


_WARNED = set()


def warn_if_gpu_unused():
    """--device auto falling back to the CPU on a machine with an NVIDIA GPU (its driver in /proc,
    or nvidia-smi on PATH) because this torch is a CPU-only build: one warning line, once."""
    import shutil

    import torch

    if "gpu" in _WARNED or torch.version.cuda is not None:
        return
    if os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi"):
        _WARNED.add("gpu")
        log.warning("this machine has an NVIDIA GPU but torch %s is a CPU-only build, so --device auto runs on "
                    "the CPU; install torch's CUDA build to use the GPU (README, Quick start)", torch.__version__)


def plan_devices(device="auto", gpus=None, workers=1):
    """Device names, one per worker: CPU workers, every visible GPU (or --gpus N), or one named GPU."""
    import torch

    device = str(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            warn_if_gpu_unused()
    if device == "cpu":
        return ["cpu"] * max(1, int(workers or 1))
    if not re.fullmatch(r"cuda(:\d+)?", device):
        raise UserError(f"--device {device}: use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU is visible")
    visible = torch.cuda.device_count()
    if ":" in device:
        if int(device.split(":")[1]) >= visible:
            raise UserError(f"--device {device}: only {visible} GPU(s) visible")
        return [device]
    count = int(gpus or visible)
    if not 1 <= count <= visible:
        raise UserError(f"--gpus {gpus}: {visible} GPU(s) visible")
    return [f"cuda:{index}" for index in range(count)]


def resolve_precision(precision, device_type):
    """auto: bf16 on a GPU (tensor cores; cosine >= 0.999 to fp32), fp32 on a CPU (exact)."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device_type == "cuda" else "fp32"
    return precision


def resolve_compile(compile, device_type):
    """auto: torch.compile the model on a GPU (fused kernels pay there; on a CPU compiling costs more than it saves)."""
    value = {True: "on", False: "off"}.get(compile, compile)
    if value not in COMPILE:
        raise UserError(f"--compile {compile}: use one of {', '.join(COMPILE)}")
    return device_type == "cuda" if value == "auto" else value == "on"


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
        from ..engine.pooling import CompiledOrEager, OomSplitter

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


_WORKER = {}


def _init_pool_worker(kind, folder, devices, precision, compile, threads):
    """Load the model once per worker process; `devices` is a queue of device names, one per worker.
    A failure (bad checkpoint, CUDA error) is kept and raised by the worker's first task, so the
    parent gets the error itself; an initializer that raises only breaks the pool."""
    try:
        from ..engine.pooling import fix_cpu_threads

        fix_cpu_threads(threads)
        _WORKER["runner"] = load_runner(kind, folder, devices.get(), precision, compile)
    except Exception as err:
        _WORKER["error"] = err


def _embed_in_worker(task):
    """(pooled embeddings as numpy float32, out-of-memory split size) of one padded batch, in a pool
    worker's model; the task carries the smallest split size known to the parent."""
    import torch

    if "error" in _WORKER:
        raise _WORKER["error"]
    ids, mask, oom_split = task
    runner = _WORKER["runner"]
    runner.forward.too_big = _smaller(runner.forward.too_big, oom_split)
    vectors = runner(torch.from_numpy(ids), torch.from_numpy(mask)).cpu().numpy()
    return vectors, runner.forward.too_big


def _smaller(a, b):
    """The smaller of two optional sizes (None: unknown)."""
    return b if a is None else a if b is None else min(a, b)


# ---------------------------------------------------------------- planning


def plan_batches(lengths, batch_tokens, multiple=1):
    """Input positions per batch: longest first, each batch's padded size (longest rounded up to
    `multiple`, times the batch size) <= batch_tokens, or one sequence alone."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    batches, current, longest = [], [], 0
    for index in order:
        longest = longest or -(-int(lengths[index]) // multiple) * multiple
        if current and (len(current) + 1) * longest > batch_tokens:
            batches.append(np.array(current))
            current, longest = [], -(-int(lengths[index]) // multiple) * multiple
        current.append(index)
    if current:
        batches.append(np.array(current))
    return batches


def scan_input(kind, path):
    """(ids, digest) of the input, without keeping its sequences (they are read again in windows)."""
    ids = []
    digest = hashlib.sha256()
    all_dna_letters = True
    for record_id, seq in _records(kind, path):
        if kind == "esm" and all_dna_letters:
            all_dna_letters = set(seq.upper()) <= set("ACGTN")
        ids.append(record_id)
        digest.update(f"{record_id}\n{seq}\n".encode())
    if kind == "esm" and ids and all_dna_letters:
        log.warning("%s: every sequence uses only A, C, G, T, N: is this DNA given to ESM-2 "
                    "(use the .protein.fa file)?", path)
    return ids, digest.hexdigest()


def _records(kind, path, check=True):
    """(id, sequence) of the input; DNA is upper-cased (DNABERT maps lower case to [UNK]). The
    second pass (`check=False`) keeps no id set and repeats none of the first pass's warnings."""
    alphabet = "nucleotide" if kind == "dnabert" else "protein"
    fasta_log = logging.getLogger(read_fasta.__module__)
    if not check:
        fasta_log.addFilter(_quiet)
    try:
        for record_id, seq in read_fasta(str(path), alphabet=alphabet, allow_empty_file=True, check_duplicates=check):
            yield record_id, (seq.upper() if kind == "dnabert" else seq)
    finally:
        fasta_log.removeFilter(_quiet)


def _quiet(record):
    return False


class _Batch:
    """One padded batch of one window: `rows` are positions within the window starting at `start`."""

    __slots__ = ("start", "count", "rows", "last", "ids", "mask", "tokens", "oom_split")

    def __init__(self, start, count, rows, last, ids, mask, tokens):
        self.start, self.count, self.rows, self.last = start, count, rows, last
        self.ids, self.mask, self.tokens = ids, mask, tokens
        self.oom_split = None  # the out-of-memory split size known once this batch was embedded


def _prefetch(iterable, depth):
    """Iterate `iterable` in a background thread, at most `depth` items ahead; its errors are
    raised here, and closing this generator stops the thread."""
    items, stop, done = queue.Queue(depth), threading.Event(), object()

    def put(item):
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def fill():
        try:
            for item in iterable:
                if not put(item):
                    return
            put(done)
        except BaseException as err:  # handed to the consumer
            put(_Failure(err))

    thread = threading.Thread(target=fill, name="virnucpro-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


class _Failure:
    def __init__(self, error):
        self.error = error


class _Writer:
    """Writer thread: waits for each result's copy to the host, refuses non-finite vectors (naming
    the sequences), assembles each window in input order and writes it as one contiguous block."""

    def __init__(self, partial, ids, dim):
        self.partial, self.ids, self.dim = partial, ids, dim
        self.items = queue.Queue(PREFETCH_BATCHES)
        self.error = None
        self.thread = threading.Thread(target=self._run, name="virnucpro-writer", daemon=True)
        self.thread.start()

    def put(self, batch, result):
        """Queue one batch's result: a numpy array, or (pinned host tensor, CUDA event)."""
        self._put((batch, result))

    def _put(self, item):
        """Queue `item`, but never block on a full queue once the writer has failed (it no longer reads)."""
        while self.error is None:
            try:
                self.items.put(item, timeout=0.1)
                return
            except queue.Full:
                pass
        raise self.error

    def close(self):
        """Wait until everything queued is written; raise the writer's error, if any."""
        self._put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def abandon(self):
        self.error = self.error or RuntimeError("stopped")
        self.thread.join()

    def _run(self):
        window = None
        try:
            while self.error is None:
                try:
                    item = self.items.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is None:
                    return
                batch, result = item
                if isinstance(result, tuple):
                    host, event = result
                    event.synchronize()  # a blocking event: this thread sleeps, it does not spin a core
                    result = host.numpy()
                finite = np.isfinite(result).all(axis=1)
                if not finite.all():
                    bad = [self.ids[batch.start + row] for row in batch.rows[~finite]]
                    raise UserError(f"embeddings with NaN or Inf for {len(bad)} sequence(s) "
                                    f"({', '.join(bad[:10])}{', ...' if len(bad) > 10 else ''}); nothing was written for "
                                    "them (fp16 overflows: use --precision bf16 or fp32)")
                if window is None:
                    window = np.empty((batch.count, self.dim), dtype=np.float32)
                window[batch.rows] = result
                if batch.last:
                    if batch.oom_split is not None:  # as it was when this window was done: a resumed run goes on from there
                        self.partial.remember_oom_split(batch.oom_split)
                    self.partial.write_block(batch.start, window)
                    window = None
        except BaseException as err:
            self.error = err


# ---------------------------------------------------------------- the engine


class Embedder:
    """A DNABERT-S or ESM-2 model, loaded once, that embeds any number of FASTA files.

        with Embedder("esm", model="facebook/esm2_t36_3B_UR50D", device="cuda") as embedder:
            for fasta, h5 in pairs:
                embedder.embed(fasta, h5)

    The model is loaded on the first file that has sequences (an all-empty run loads nothing).
    With several devices (`gpus`/`workers` > 1) one worker process per device loads it, and the
    workers serve every `embed` call until the Embedder is closed.
    """

    def __init__(self, kind, model=None, device="auto", precision="auto", batch_tokens=None, compile="auto",
                 threads=None, workers=1, gpus=None, max_residues=None):
        if kind not in KINDS:
            raise UserError(f"first argument must be one of {', '.join(KINDS)}, not {kind!r}")
        for name, value in (("batch_tokens", batch_tokens), ("workers", workers), ("gpus", gpus),
                            ("threads", threads), ("max_residues", max_residues)):
            _check_positive(name, value)
        self.kind = kind
        self.devices = plan_devices(device, gpus, workers)
        self.device_type = "cuda" if self.devices[0].startswith("cuda") else "cpu"
        self.precision = resolve_precision(precision, self.device_type)
        self.compile = resolve_compile(compile, self.device_type)
        self.model_name = str(model or DEFAULT_MODELS[kind])
        self.folder, self.revision = resolve_model(kind, model)
        if self.device_type == "cpu" and len(self.devices) > 1:  # each CPU worker holds its own model
            self.devices = self.devices[: cap_workers(len(self.devices), model_worker_memory(self.folder), f"{kind} worker")]
        self.batch_tokens = int(batch_tokens or DEFAULT_BATCH_TOKENS[kind, self.device_type])
        self.threads = int(threads or available_cpus())
        if kind == "esm":
            from ..models.esm import DEFAULT_MAX_RESIDUES, EsmTokens

            self.tokenizer = EsmTokens(self.folder, max_residues or DEFAULT_MAX_RESIDUES)
        else:
            from ..models.dnabert import DnabertTokenizer

            self.tokenizer = DnabertTokenizer(self.folder)
        self.dim = model_dim(kind, self.folder)
        self.runner = self.pool = None
        #: Smallest padded batch size that ran out of device memory (`pooling.OomSplitter`), kept in the partial file.
        self.oom_split = None

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        self.close(clean=kind is None)

    def close(self, clean=True):
        """Free the model (and its GPU memory), and end the worker processes (`clean`: not after an
        error or a signal, see `parallel.end_pool`)."""
        self.runner = None
        if self.pool is not None:
            end_pool(self.pool, clean)
            self.pool = None

    def attrs(self, input_digest):
        pooling = POOLING[self.kind].format(max_residues=getattr(self.tokenizer, "max_residues", None))
        return dict(model=self.model_name, model_revision=self.revision, kind=self.kind, pooling=pooling,
                    precision=self.precision, input_digest=input_digest, virnucpro_version=__version__)

    def embed(self, input, output, overwrite=False, block_size=DEFAULT_BLOCK_SIZE, redo=False):
        """Embed every sequence of `input` into the HDF5 file `output`; returns its path. Skips a
        complete output made the same way; resumes a killed run from its hidden `.virnucpro-partial` file. An output
        made differently is refused, or with `redo` (a caller that owns the folder) made again.
        Holds an exclusive lock on `output` throughout: a second run on it stops at once."""
        _check_positive("block_size", block_size)
        output, block_size = str(output), int(block_size)
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        with exclusive(output, what=output):
            ids, digest = scan_input(self.kind, input)
            attrs = self.attrs(digest)
            if os.path.exists(output) and not overwrite:
                existing = read_attrs(output)
                differs = [key for key in IDENTITY_ATTRS if existing is None or existing.get(key) != attrs[key]]
                if not differs and content_matches(output, "embeddings"):
                    log.info("%s already complete, skipping (use --overwrite to redo)", output)
                    return output
                if not differs:  # its record proves it is ours, its content says it was damaged or edited since
                    log.warning("%s differs from what its record vouches for (edited or damaged since it was made): "
                                "making it again", output)
                elif redo:
                    log.info("%s was made differently (%s differ): making it again", output, ", ".join(differs))
                else:
                    raise UserError(f"{output} exists but was made differently ({', '.join(differs)} differ); "
                                    "use --overwrite to replace it")
            if overwrite and os.path.exists(partial_path(output)):
                os.remove(partial_path(output))
            key_fields = dict({key: attrs[key] for key in IDENTITY_ATTRS}, batch_tokens=self.batch_tokens,
                              block_size=block_size, layout=PARTIAL_LAYOUT)
            resume_key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()
            partial = PartialEmbeddings(output, ids, self.dim, attrs, resume_key)
            self.oom_split = _smaller(self.oom_split, partial.oom_split_tokens)  # a resumed run splits the same way
            try:
                self._fill(input, ids, partial, block_size)
                windows = math.ceil(len(ids) / block_size)
                if partial.blocks_done != windows:  # never publish an incomplete file
                    raise UserError(f"{output}: only {partial.blocks_done} of {windows} blocks were embedded")
                partial.finish()
            finally:
                partial.close()
        log.info("wrote %s", output)
        return output

    def _windows(self, input, block_size, skip):
        """(start, size, tokens) of each window of `block_size` sequences after the first `skip` windows."""
        start, index = 0, 0
        records = _records(self.kind, input, check=False)
        while True:
            window = [seq for _, seq in _take(records, block_size)]
            if not window:
                return
            if index >= skip:
                yield start, len(window), self.tokenizer.encode(window)
            start += len(window)
            index += 1

    def _batches(self, windows):
        """Padded batches of each tokenized window, longest first within the window."""
        from ..engine.pooling import LENGTH_MULTIPLE, pad_batch

        pin = self.device_type == "cuda" and len(self.devices) == 1  # pool workers get pickled numpy, not pinned pages
        for start, size, tokens in windows:
            lengths = np.array([len(t) for t in tokens], dtype=np.int64)
            batches = plan_batches(lengths, self.batch_tokens, LENGTH_MULTIPLE)
            for number, rows in enumerate(batches):
                ids, mask = pad_batch([tokens[i] for i in rows], self.tokenizer.pad_id, LENGTH_MULTIPLE, pin)
                yield _Batch(start, size, rows, number == len(batches) - 1, ids, mask, int(lengths[rows].sum()))

    def _results(self, batches):
        """(batch, result) in batch order: on this process's device, or through a worker pool."""
        import torch

        if len(self.devices) == 1:
            from ..engine.pooling import fix_cpu_threads

            fix_cpu_threads(self.threads)
            if self.runner is None:
                self.runner = load_runner(self.kind, self.folder, self.devices[0], self.precision, self.compile)
            splitter = self.runner.forward
            for batch in batches:
                splitter.too_big = _smaller(splitter.too_big, self.oom_split)
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
            return
        if self.pool is None:
            import multiprocessing

            devices = multiprocessing.get_context("spawn").Queue()
            for device in self.devices:
                devices.put(device)
            threads = max(1, self.threads // len(self.devices)) if self.device_type == "cpu" else self.threads
            self.pool = start_pool(len(self.devices), _init_pool_worker,
                                   (self.kind, self.folder, devices, self.precision, self.compile, threads))
        pending = queue.SimpleQueue()

        def tasks():
            for batch in batches:
                pending.put(batch)
                yield batch.ids.numpy(), batch.mask.numpy(), self.oom_split

        results = ordered_map(_embed_in_worker, tasks(), len(self.devices), max_in_flight=2 * len(self.devices),
                              pool=self.pool)
        for vectors, oom_split in results:
            self.oom_split = _smaller(self.oom_split, oom_split)
            batch = pending.get()
            batch.oom_split = self.oom_split
            yield batch, vectors

    def _fill(self, input, ids, partial, block_size):
        """Embed the windows not yet in `partial`, overlapping reading, the device and writing."""
        from tqdm import tqdm

        done = min(partial.blocks_done * block_size, len(ids))
        if done == len(ids):
            return
        log.info("%s: %d sequences (%d done); %s on %s, %s%s; batches of <= %d padded tokens, windows of %d",
                 self.kind, len(ids), done, os.path.basename(self.folder), ", ".join(self.devices), self.precision,
                 ", compiled" if self.compile else "", self.batch_tokens, block_size)
        started, tokens = time.monotonic(), 0
        with tqdm(total=len(ids), initial=done, unit="seq", desc=f"embedding ({self.kind})", dynamic_ncols=True) as bar:
            writer = _Writer(partial, ids, self.dim)
            # Two stages ahead of the device: tokenizing the next windows (a window's tokens come all
            # at once, so one window of batches queued would leave the device waiting) and padding.
            windows = _prefetch(self._windows(input, block_size, partial.blocks_done), PREFETCH_WINDOWS)
            batches = _prefetch(self._batches(windows), PREFETCH_BATCHES)
            results = self._results(batches)
            try:
                for batch, result in results:
                    writer.put(batch, result)
                    tokens += batch.tokens
                    bar.update(len(batch.rows))
                    bar.set_postfix(tokens_per_s=f"{tokens / max(time.monotonic() - started, 1e-9):.0f}", refresh=False)
                writer.close()
            except BaseException:
                writer.abandon()
                raise
            finally:
                for stage in (results, batches, windows):
                    with contextlib.suppress(ValueError):  # a pool's feeder thread may be inside it: it ends with the pool
                        stage.close()


def _take(iterator, count):
    """Up to `count` next items of `iterator`."""
    for _, item in zip(range(count), iterator):
        yield item


def _check_positive(name, value):
    if value is not None and (not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1):
        raise UserError(f"--{name} {value}: must be a positive whole number")


def extract_embeddings(kind, input, output, model=None, device="auto", precision="auto", batch_tokens=None,
                       gpus=None, workers=1, overwrite=False, block_size=DEFAULT_BLOCK_SIZE, compile="auto",
                       threads=None, max_residues=None):
    """Embed every sequence of `input` with DNABERT-S (`kind='dnabert'`) or ESM-2 (`'esm'`) into
    the HDF5 file `output` (one model load; for many files use `Embedder`); returns its path."""
    _check_positive("block_size", block_size)
    with Embedder(kind, model=model, device=device, precision=precision, batch_tokens=batch_tokens, compile=compile,
                  threads=threads, workers=workers, gpus=gpus, max_residues=max_residues) as embedder:
        return embedder.embed(input, output, overwrite=overwrite, block_size=block_size)


def extract(kind, input, output, model=None, device="auto", precision="auto", batch_tokens=None, compile="auto",
            threads=None, workers=1, gpus=None, max_residues=None, block_size=DEFAULT_BLOCK_SIZE, overwrite=False,
            verbose=False):
    """Embed sequences with DNABERT-S or ESM-2 into an HDF5 file.

    Usage: virnucpro-extract dnabert|esm --input FASTA --output H5 [flags]
    A complete output made the same way is skipped; a killed run resumes from .<output name>.virnucpro-partial;
    a second run on the same --output stops at once.

    Args:
      kind: dnabert (DNABERT-S on nucleotide frames) or esm (ESM-2 on proteins).
      input: FASTA file of sequences (plain or .gz).
      output: HDF5 embeddings file to write.
      model: hub id or local model folder. Default: zhihan1996/DNABERT-S or facebook/esm2_t36_3B_UR50D.
      device: auto (a GPU if there is one), cpu, cuda (every visible GPU, or --gpus N) or cuda:N.
      precision: auto, fp32, bf16 or fp16; auto = bf16 on a GPU, fp32 (exact) on a CPU.
      batch_tokens: padded tokens per batch. Default: 65536 (dnabert) / 32768 (esm) on a GPU, 8192 / 4096 on a CPU.
      compile: auto, on or off: torch.compile the model (eager, with one warning, if compiling fails); auto = on for a GPU.
      threads: torch threads. Default: the CPUs this process may use (split among --workers).
      workers: CPU worker processes, each with its own model.
      gpus: how many GPUs to use with --device cuda. Default: all visible.
      max_residues: ESM-2 only: longer proteins are cut to this many residues, with a warning. Default: 4096.
      block_size: sequences per window, the unit of resume after a kill.
      overwrite: redo a complete output.
      verbose: debug logging.
    """
    extract_embeddings(kind, input, output, model=model, device=device, precision=precision, batch_tokens=batch_tokens,
                       gpus=gpus, workers=workers, overwrite=overwrite, block_size=block_size, compile=compile,
                       threads=threads, max_residues=max_residues)


#: `virnucpro-extract dnabert|esm ...`: the first bare word is --kind (cli checks it with the options).
extract.subcommand = ("kind", ("dnabert", "esm"))
