"""`virnucpro-extract`: DNABERT-S or ESM-2 embeddings of a FASTA file, written to HDF5 (SPEC 1.3, 1.4, 2).

How the work is cut: all sequences are tokenized first, sorted by token count (longest first, so
an out-of-memory batch shows up at once) and grouped into batches whose padded size
(sequences x longest) stays within `batch_tokens`. Padding is masked, so a sequence's vector does
not depend on its batch. Consecutive batches form blocks of about `block_size` sequences; each
finished block is saved in `<output>.partial`, so a killed run resumes after its last block.

Devices: one process for one device; with several GPUs (`--gpus N`) or CPU workers
(`--workers N`), one spawned worker per device loads the model once and takes batches from the
pool's shared queue, and results are gathered in batch order.
"""

import collections
import concurrent.futures
import hashlib
import json
import logging
import multiprocessing
import numbers
import os
import re
import time

import numpy as np

from . import __version__
from .errors import UserError
from .embeddings_h5 import IDENTITY_ATTRS, PartialEmbeddings, partial_path, read_attrs
from .fasta import read_fasta
from .parallel import available_cpus

log = logging.getLogger(__name__)

KINDS = ("dnabert", "esm")
DEFAULT_MODELS = {"dnabert": "zhihan1996/DNABERT-S", "esm": "facebook/esm2_t36_3B_UR50D"}
POOLING = {
    "dnabert": "mean of the last layer over all tokens, [CLS] and [SEP] included",
    "esm": "mean of the final layer over residues only (no <cls>/<eos>), first 1024 residues",
}
#: Padded tokens per batch when --batch_tokens is not given, by (kind, device type).
DEFAULT_BATCH_TOKENS = {("dnabert", "cpu"): 8192, ("esm", "cpu"): 4096, ("dnabert", "cuda"): 65536, ("esm", "cuda"): 32768}
#: Sequences per resumable block (a kill loses at most one block of work).
DEFAULT_BLOCK_SIZE = 4096
PRECISIONS = ("fp32", "bf16", "fp16")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SNAPSHOT = re.compile(r"/snapshots/([0-9a-f]{40})/?$")


# ---------------------------------------------------------------- models


def resolve_model(kind, model=None):
    """(local folder, revision) for a hub id or a folder. A folder is used as it is, offline; a
    hub id is fetched (or found in the cache) with huggingface_hub. The revision is the hub
    commit, or for other folders a SHA-256 of the weight files."""
    model = str(model or DEFAULT_MODELS[kind])
    if os.path.isdir(model):
        folder = os.path.abspath(model)
    elif _HUB_ID.match(model) and not os.path.exists(model):
        folder = _download(model)
    else:
        raise UserError(f"--model {model}: no such model folder")
    match = _SNAPSHOT.search(folder)
    if match:
        return folder, match.group(1)
    return folder, fetched_commit(folder) or weights_digest(folder)


def fetched_commit(folder):
    """The hub commit recorded by virnucpro-fetch-model in the folder, if it made it (saves
    hashing 11 GB of ESM-2 weights in every extraction task)."""
    from .fetch_model import RECORD

    try:
        with open(os.path.join(folder, RECORD)) as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return None
    commit = record.get("commit") if isinstance(record, dict) else None
    return commit or None  # the same form as a hub cache folder's revision: the same weights, the same key


def _download(repo_id):
    """Fetch the files a model needs (config, tokenizer, one weight format) from the hub or its cache."""
    from huggingface_hub import snapshot_download

    from .dnabert import weight_files

    try:
        folder = snapshot_download(repo_id, allow_patterns=["*.json", "*.txt", "*.safetensors"])
        try:
            weight_files(folder)
        except UserError:  # no safetensors on the hub: take the pickle (read with weights_only)
            folder = snapshot_download(repo_id, allow_patterns=["*.json", "*.txt", "pytorch_model*.bin"])
    except Exception as err:  # network, offline mode without cache, unknown repository...
        raise UserError(f"--model {repo_id}: cannot get it from the Hugging Face hub or its cache: {err}") from None
    return folder


_DIGESTS = {}


def weights_digest(folder):
    """'sha256:<hex>' over the weight files (cached per file size and mtime)."""
    from .dnabert import weight_files

    combined = hashlib.sha256()
    for path in weight_files(folder):
        stat = os.stat(path)
        key = (path, stat.st_size, stat.st_mtime_ns)
        if key not in _DIGESTS:
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 24), b""):
                    digest.update(block)
            _DIGESTS[key] = digest.hexdigest()
        combined.update(_DIGESTS[key].encode())
    return "sha256:" + combined.hexdigest()


def load_tokenizer(kind, folder):
    if kind == "dnabert":
        from .dnabert import DnabertTokenizer

        return DnabertTokenizer(folder)
    from .esm import EsmTokens

    return EsmTokens(folder)


def model_dim(kind, folder):
    """Embedding size, from config.json (so an empty input needs no model load)."""
    with open(os.path.join(folder, "config.json")) as handle:
        return int(json.load(handle)["hidden_size"])


# ---------------------------------------------------------------- workers

_WORKER = {}


def _init_worker(kind, folder, device, precision, threads=None):
    """Load the model once per process; `device` is a name or a queue of names (one per worker)."""
    import torch

    if not isinstance(device, str):
        device = device.get()
    if threads:
        torch.set_num_threads(threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    if kind == "dnabert":
        from .dnabert import embed_batch, load_dnabert

        model = load_dnabert(folder, device, dtype)
    else:
        from .esm import embed_batch, load_esm

        model = load_esm(folder, device, dtype)
    pad_id = load_tokenizer(kind, folder).pad_id
    _WORKER.update(model=model, embed=embed_batch, pad_id=pad_id, device=device)


def _exit_with_parent():
    """A pool worker waits on a queue its parent feeds: if the parent is killed (SIGKILL, OOM
    killer) nothing wakes it, and it would hold its model (and GPU) forever. Exit instead."""
    import multiprocessing.connection
    import threading

    parent = multiprocessing.parent_process()
    if parent is not None:
        def watch():
            multiprocessing.connection.wait([parent.sentinel])
            os._exit(1)

        threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _init_pool_worker(*args):
    """Pool initializer: a failure (bad checkpoint, CUDA error) is kept and raised by the worker's
    first task, so the parent gets the error itself; an initializer that raises only breaks the pool."""
    _exit_with_parent()
    try:
        _init_worker(*args)
    except Exception as err:
        _WORKER["error"] = err


def _embed(token_lists):
    """Embeddings [batch, D] float32 of one batch, in the worker's model."""
    import torch

    if "error" in _WORKER:
        raise _WORKER["error"]
    try:
        return _WORKER["embed"](_WORKER["model"], token_lists, _WORKER["pad_id"], _WORKER["device"])
    except torch.OutOfMemoryError:
        padded = len(token_lists) * max(len(tokens) for tokens in token_lists)
        raise UserError(f"out of memory on {_WORKER['device']} for a batch of {padded} padded tokens; "
                        "lower --batch_tokens") from None


def embed_batches(kind, folder, devices, precision, batches, threads=None):
    """Yield each batch's embeddings in order: in this process for one device, else spawned workers."""
    if len(devices) == 1:
        _init_worker(kind, folder, devices[0], precision, threads)
        try:
            yield from map(_embed, batches)
        finally:
            _WORKER.clear()
        return
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    for device in devices:
        queue.put(device)
    window = 2 * len(devices)  # batches in flight: every worker busy, one more waiting each
    with concurrent.futures.ProcessPoolExecutor(
        len(devices), mp_context=ctx, initializer=_init_pool_worker, initargs=(kind, folder, queue, precision, threads)
    ) as pool:
        pending = collections.deque()
        try:
            for batch in batches:
                pending.append(pool.submit(_embed, batch))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def plan_devices(device="auto", gpus=None, workers=1):
    """Device names, one per worker: CPU workers, every visible GPU (or --gpus N), or one named GPU."""
    import torch

    device = str(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
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


# ---------------------------------------------------------------- planning


def plan_batches(lengths, batch_tokens):
    """Input positions per batch: longest first, each batch's padded size <= batch_tokens (or one sequence)."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    batches, current, longest = [], [], 0
    for index in order:
        longest = longest or lengths[index]
        if current and (len(current) + 1) * longest > batch_tokens:
            batches.append(np.array(current))
            current, longest = [], lengths[index]
        current.append(index)
    if current:
        batches.append(np.array(current))
    return batches


def plan_blocks(batches, block_size):
    """Consecutive batches grouped into blocks of at least `block_size` sequences (the last may be smaller)."""
    blocks, current, count = [], [], 0
    for batch in batches:
        current.append(batch)
        count += len(batch)
        if count >= block_size:
            blocks.append(current)
            current, count = [], 0
    if current:
        blocks.append(current)
    return blocks


def read_sequences(kind, path):
    """(ids, sequences, digest) of the input; DNA is upper-cased (DNABERT maps lower case to [UNK])."""
    ids, sequences = [], []
    digest = hashlib.sha256()
    alphabet = "nucleotide" if kind == "dnabert" else "protein"
    all_dna_letters = True
    for record_id, seq in read_fasta(str(path), alphabet=alphabet, allow_empty_file=True):
        if kind == "dnabert":
            seq = seq.upper()
        else:
            all_dna_letters = all_dna_letters and set(seq.upper()) <= set("ACGTN")
        ids.append(record_id)
        sequences.append(seq)
        digest.update(f"{record_id}\n{seq}\n".encode())
    if kind == "esm" and ids and all_dna_letters:
        log.warning("%s: every sequence uses only A, C, G, T, N: is this DNA given to ESM-2 "
                    "(use the .protein.fa file)?", path)
    return ids, sequences, digest.hexdigest()


# ---------------------------------------------------------------- the tool


def extract_embeddings(kind, input, output, model=None, device="auto", precision="fp32", batch_tokens=None,
                       gpus=None, workers=1, overwrite=False, block_size=DEFAULT_BLOCK_SIZE):
    """Embed every sequence of `input` with DNABERT-S (`kind='dnabert'`) or ESM-2 (`'esm'`) into
    the HDF5 file `output`; returns its path. Skips a complete output made the same way; resumes
    a killed run from `<output>.partial`."""
    if kind not in KINDS:
        raise UserError(f"first argument must be one of {', '.join(KINDS)}, not {kind!r}")
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision}: use one of {', '.join(PRECISIONS)}")
    for name, value in (("batch_tokens", batch_tokens), ("block_size", block_size), ("workers", workers), ("gpus", gpus)):
        if value is not None and (not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1):
            raise UserError(f"--{name} {value}: must be a positive whole number")
    output = str(output)
    devices = plan_devices(device, gpus, workers)
    folder, revision = resolve_model(kind, model)
    ids, sequences, input_digest = read_sequences(kind, input)
    attrs = dict(model=str(model or DEFAULT_MODELS[kind]), model_revision=revision, kind=kind,
                 pooling=POOLING[kind], precision=precision, input_digest=input_digest,
                 virnucpro_version=__version__)

    if os.path.exists(output) and not overwrite:
        existing = read_attrs(output)
        differs = [key for key in IDENTITY_ATTRS if existing is None or existing.get(key) != attrs[key]]
        if not differs:
            log.info("%s already complete, skipping (use --overwrite to redo)", output)
            return output
        raise UserError(f"{output} exists but was made differently ({', '.join(differs)} differ); "
                        "use --overwrite to replace it")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    if overwrite and os.path.exists(partial_path(output)):
        os.remove(partial_path(output))

    tokenizer = load_tokenizer(kind, folder)
    tokens = tokenizer.encode(sequences)
    del sequences
    lengths = np.array([len(t) for t in tokens], dtype=np.int64)
    device_type = "cuda" if devices[0].startswith("cuda") else "cpu"
    batch_tokens = int(batch_tokens or DEFAULT_BATCH_TOKENS[kind, device_type])
    block_size = int(block_size)
    batches = plan_batches(lengths, batch_tokens)
    blocks = plan_blocks(batches, block_size)
    key_fields = dict({key: attrs[key] for key in IDENTITY_ATTRS}, batch_tokens=batch_tokens, block_size=block_size)
    resume_key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()

    threads = None
    if device_type == "cpu" and len(devices) > 1:
        devices = devices[: max(1, len(batches))]
        threads = max(1, available_cpus() // len(devices))
    log.info("%s: %d sequences, %d tokens; %s on %s, %s; %d batches of <= %d padded tokens "
             "(%.1f sequences each on average)", kind, len(ids), int(lengths.sum()), os.path.basename(folder), ", ".join(devices), precision,
             len(batches), batch_tokens, len(ids) / max(len(batches), 1))

    partial = PartialEmbeddings(output, ids, model_dim(kind, folder), attrs, resume_key)
    try:
        todo = blocks[partial.blocks_done:]
        _run_blocks(kind, folder, devices, precision, threads, tokens, lengths, todo, partial, len(ids))
        partial.finish()
    finally:
        partial.close()
    log.info("wrote %s", output)
    return output


def _run_blocks(kind, folder, devices, precision, threads, tokens, lengths, blocks, partial, total):
    """Embed the remaining blocks, saving each as soon as its last batch is in."""
    remaining = sum(len(batch) for block in blocks for batch in block)
    if not remaining:
        return
    batches = [batch for block in blocks for batch in block]
    results = embed_batches(kind, folder, devices, precision, ([tokens[i] for i in batch] for batch in batches), threads)
    try:
        _fill_blocks(blocks, results, lengths, partial, total, remaining, kind)
    finally:
        results.close()


def _fill_blocks(blocks, results, lengths, partial, total, remaining, kind):
    from tqdm import tqdm

    started, done_tokens = time.monotonic(), 0
    with tqdm(total=total, initial=total - remaining, unit="seq", desc=f"embedding ({kind})", dynamic_ncols=True) as bar:
        for block in blocks:
            rows, vectors = [], []
            for batch in block:
                vectors.append(next(results))
                rows.append(batch)
                done_tokens += int(lengths[batch].sum())
                bar.update(len(batch))
                bar.set_postfix(tokens_per_s=f"{done_tokens / max(time.monotonic() - started, 1e-9):.0f}", refresh=False)
            partial.write_block(np.concatenate(rows), np.concatenate(vectors))


def extract(kind, input, output, model=None, device="auto", precision="fp32", batch_tokens=None, gpus=None,
            workers=1, block_size=DEFAULT_BLOCK_SIZE, overwrite=False, verbose=False):
    """Embed sequences with DNABERT-S or ESM-2 into an HDF5 file.

    Usage: virnucpro-extract dnabert|esm --input FASTA --output H5 [--model ID_OR_DIR]
      --model       hub id (default zhihan1996/DNABERT-S or facebook/esm2_t36_3B_UR50D) or a local folder
      --device      auto (a GPU if there is one), cpu, cuda (every visible GPU, or --gpus N) or cuda:N
      --precision   fp32 (default), bf16 or fp16 (GPU)
      --batch_tokens  padded tokens per batch (default by model and device)
      --workers     CPU worker processes (default 1)
      --block_size  sequences per resumable block (default 4096)
      --overwrite   redo a complete output
    """
    extract_embeddings(kind, input, output, model=model, device=device, precision=precision, batch_tokens=batch_tokens,
                       gpus=gpus, workers=workers, overwrite=overwrite, block_size=block_size)
