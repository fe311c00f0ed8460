"""Streaming a FASTA file through a model with flat memory: windows of sequences read and
tokenized ahead, cut into padded batches ahead, and a writer thread that puts each window back in
input order into the partial file (`embeddings_h5.PartialEmbeddings`).

Windows and batches follow from the input and the settings alone (never from how far a thread
got), so a run is reproducible and a killed one resumes after its last complete window.
"""

import queue
import threading

import numpy as np

from ..errors import UserError
from ..fasta import read_fasta

#: Batches prepared ahead of the device, and results waiting for the writer.
PREFETCH_BATCHES = 4
#: Tokenized windows read ahead of the padding stage.
PREFETCH_WINDOWS = 2


def read_records(kind, path, first_pass=True):
    """(id, sequence) of the input; DNA is upper-cased (DNABERT maps lower case to [UNK]). A second
    pass over a file (`first_pass=False`) repeats none of the first pass's checks and warnings."""
    alphabet = "nucleotide" if kind == "dnabert" else "protein"
    for record_id, seq in read_fasta(str(path), alphabet=alphabet, allow_empty_file=True, check_duplicates=first_pass,
                                     warn=first_pass):
        yield record_id, (seq.upper() if kind == "dnabert" else seq)


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


def windows(records, tokenizer, block_size, skip):
    """(start, size, tokens) of each window of `block_size` sequences of `records` after the first `skip` windows."""
    start, index = 0, 0
    while True:
        window = [seq for _, seq in take(records, block_size)]
        if not window:
            return
        if index >= skip:
            yield start, len(window), tokenizer.encode(window)
        start += len(window)
        index += 1


def padded_batches(windows, pad_id, batch_tokens, pin=False):
    """Padded `Batch`es of each tokenized window, longest first within the window (`pin`: in
    page-locked memory, for a copy to one GPU that need not block)."""
    from .pooling import LENGTH_MULTIPLE, pad_batch

    for start, size, tokens in windows:
        lengths = np.array([len(t) for t in tokens], dtype=np.int64)
        batches = plan_batches(lengths, batch_tokens, LENGTH_MULTIPLE)
        for number, rows in enumerate(batches):
            ids, mask = pad_batch([tokens[i] for i in rows], pad_id, LENGTH_MULTIPLE, pin)
            yield Batch(start, size, rows, number == len(batches) - 1, ids, mask, int(lengths[rows].sum()))


class Batch:
    """One padded batch of one window: `rows` are positions within the window starting at `start`."""

    __slots__ = ("start", "count", "rows", "last", "ids", "mask", "tokens", "oom_split")

    def __init__(self, start, count, rows, last, ids, mask, tokens):
        self.start, self.count, self.rows, self.last = start, count, rows, last
        self.ids, self.mask, self.tokens = ids, mask, tokens
        self.oom_split = None  # the out-of-memory split size known once this batch was embedded


def prefetch(iterable, depth):
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
            put(Failure(err))

    thread = threading.Thread(target=fill, name="virnucpro-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


class Failure:
    def __init__(self, error):
        self.error = error


class Writer:
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


def take(iterator, count):
    """Up to `count` next items of `iterator`."""
    for _, item in zip(range(count), iterator):
        yield item
