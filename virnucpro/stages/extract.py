"""`virnucpro-extract`: DNABERT-S or ESM-2 embeddings of a FASTA file, written to HDF5 (SPEC 1.3, 1.4, 2).

The tool: its options, and the flow of one file (lock, skip or resume, embed, publish). The engine
it drives lives in `engine/`: `devices` decides devices, precision and compile; `streaming` reads,
tokenizes, batches and writes with flat memory; `embedder` runs the model on one or several devices.

How a file flows (memory stays flat whatever the input size, beyond one id per sequence):
- a first pass over the FASTA checks it and keeps only the ids and a digest (for resume and skip checks);
- the FASTA is read again in windows of `block_size` sequences, tokenized and cut into padded
  batches ahead of the device (`streaming`); the second pass repeats none of the first pass's
  warnings and must read what the first read (its digest is compared);
- the device embeds each batch (`embedder.BatchEmbedder`);
- a writer thread puts each window back in input order and writes it as one contiguous slab to
  `.<output name>.virnucpro-partial`, then marks the window done: a killed run resumes after its
  last complete window.

What is reproducible (README, Reproducibility): padding is masked, so a vector does not depend on
its batch beyond rounding. Bit for bit: the same command on the same input, CPU, fp32, resumed or
not: windows and batches follow from the input and the settings alone (never from how far a
thread got), the thread count is fixed before every file (`pooling.fix_cpu_threads`) and the
out-of-memory split size is saved with the partial file. Within a tolerance only: other
--batch_tokens, --block_size, --threads, workers or shards (other rounding), a GPU, bf16/fp16.

`Embedder` loads a model once and embeds any number of files (what `virnucpro-predict` needs).
"""

import contextlib
import hashlib
import json
import logging
import math
import numbers
import os
import time

from .. import __version__
from ..engine import devices
from ..engine.embedder import BatchEmbedder, smaller
from ..engine.streaming import PREFETCH_BATCHES, PREFETCH_WINDOWS, Writer, padded_batches, prefetch, read_records, windows
from ..errors import UserError
from ..embeddings_h5 import IDENTITY_ATTRS, PartialEmbeddings, content_matches, partial_path, read_attrs
from ..models.hub import model_folder
from ..outputs import make_once
from ..parallel import available_cpus, cap_workers, model_worker_memory

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
#: Changes whenever the partial file's block layout changes (an old partial is then started over).
PARTIAL_LAYOUT = "windows-1"


def resolve_model(kind, model=None):
    """(local folder, revision) of `model` (default: the published model of `kind`): `hub.model_folder`."""
    return model_folder(model or DEFAULT_MODELS[kind])


def model_dim(kind, folder):
    """Embedding size, from config.json (so an empty input needs no model load)."""
    with open(os.path.join(folder, "config.json")) as handle:
        return int(json.load(handle)["hidden_size"])


def scan_input(kind, path):
    """(ids, digest) of the input, checked, without keeping its sequences (they are read again in windows)."""
    ids = []
    digest = hashlib.sha256()
    all_dna_letters = True
    for record_id, seq in read_records(kind, path):
        if kind == "esm" and all_dna_letters:
            all_dna_letters = set(seq.upper()) <= set("ACGTN")
        ids.append(record_id)
        digest.update(f"{record_id}\n{seq}\n".encode())
    if kind == "esm" and ids and all_dna_letters:
        log.warning("%s: every sequence uses only A, C, G, T, N: is this DNA given to ESM-2 "
                    "(use the .protein.fa file)?", path)
    return ids, digest.hexdigest()


def read_again(kind, path, digest):
    """The input's records, read a second time (no checks or warnings: `scan_input` gave them): one
    line if they are not what the first pass read (the file changed in between)."""
    again = hashlib.sha256()
    for record_id, seq in read_records(kind, path, first_pass=False):
        again.update(f"{record_id}\n{seq}\n".encode())
        yield record_id, seq
    if again.hexdigest() != digest:
        raise UserError(f"{path}: changed while it was read (its records differ between two readings); "
                        "nothing was written: rerun once the file is complete")


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
        plan = devices.plan(device, gpus, workers, precision, compile)
        self.model_name = str(model or DEFAULT_MODELS[kind])
        self.folder, self.revision = resolve_model(kind, model)
        if plan.type == "cpu" and len(plan.devices) > 1:  # each CPU worker holds its own model
            plan = plan._replace(devices=plan.devices[: cap_workers(len(plan.devices), model_worker_memory(self.folder),
                                                                    f"{kind} worker")])
        self.plan = plan
        self.batch_tokens = int(batch_tokens or DEFAULT_BATCH_TOKENS[kind, plan.type])
        self.threads = int(threads or available_cpus())
        if kind == "esm":
            from ..models.esm import DEFAULT_MAX_RESIDUES, EsmTokens

            self.tokenizer = EsmTokens(self.folder, max_residues or DEFAULT_MAX_RESIDUES)
        else:
            from ..models.dnabert import DnabertTokenizer

            self.tokenizer = DnabertTokenizer(self.folder)
        self.dim = model_dim(kind, self.folder)
        self.engine = BatchEmbedder(kind, self.folder, plan, self.threads)

    @property
    def precision(self):
        return self.plan.precision

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        self.close(clean=kind is None)

    def close(self, clean=True):
        """Free the model and end its worker processes (`BatchEmbedder.close`)."""
        self.engine.close(clean)

    def attrs(self, input_digest):
        pooling = POOLING[self.kind].format(max_residues=getattr(self.tokenizer, "max_residues", None))
        return dict(model=self.model_name, model_revision=self.revision, kind=self.kind, pooling=pooling,
                    precision=self.precision, input_digest=input_digest, virnucpro_version=__version__)

    def embed(self, input, output, overwrite=False, block_size=DEFAULT_BLOCK_SIZE, redo=False):
        """Embed every sequence of `input` into the HDF5 file `output`; returns its path. Skips a
        complete output made the same way; resumes a killed run from its hidden `.virnucpro-partial` file. An output
        made differently is refused, or with `redo` (a caller that owns the folder) made again.
        Holds an exclusive lock on `output` throughout: a second run on it stops at once
        (`outputs.make_once`; the output's record is its own identity attributes)."""
        _check_positive("block_size", block_size)
        output, block_size = str(output), int(block_size)
        scanned = {}

        def identity():  # under the lock: the input's identity is what this run reads
            scanned["ids"], scanned["digest"] = scan_input(self.kind, input)
            attrs = self.attrs(scanned["digest"])
            return {key: attrs[key] for key in IDENTITY_ATTRS}

        def recorded(_):
            existing = read_attrs(output)
            return None if existing is None else {key: existing.get(key) for key in IDENTITY_ATTRS}

        def make():
            if overwrite and os.path.exists(partial_path(output)):
                os.remove(partial_path(output))
            self._make(input, output, scanned["ids"], scanned["digest"], block_size)
            log.info("wrote %s", output)

        make_once([output], identity, make, what=f"embeddings {output}", lock=output, lock_what=output,
                  recorded=recorded,
                  changed=lambda _, paths: [] if content_matches(output, "embeddings") else [os.path.basename(output)],
                  overwrite=overwrite, redo=redo)
        return output

    def _make(self, input, output, ids, digest, block_size):
        """Embed `input` into `output` through its partial file, resuming it when it was made the same way."""
        attrs = self.attrs(digest)
        key_fields = dict({key: attrs[key] for key in IDENTITY_ATTRS}, batch_tokens=self.batch_tokens,
                          block_size=block_size, layout=PARTIAL_LAYOUT)
        resume_key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()
        partial = PartialEmbeddings(output, ids, self.dim, attrs, resume_key)
        self.engine.oom_split = smaller(self.engine.oom_split, partial.oom_split_tokens)  # a resumed run splits the same way
        try:
            self._fill(input, ids, digest, partial, block_size)
            blocks = math.ceil(len(ids) / block_size)
            if partial.blocks_done != blocks:  # never publish an incomplete file
                raise UserError(f"{output}: only {partial.blocks_done} of {blocks} blocks were embedded")
            partial.finish()
        finally:
            partial.close()

    def _fill(self, input, ids, digest, partial, block_size):
        """Embed the windows not yet in `partial`, overlapping reading, the device and writing."""
        from tqdm import tqdm

        done = min(partial.blocks_done * block_size, len(ids))
        if done == len(ids):
            return
        log.info("%s: %d sequences (%d done); %s on %s, %s%s; batches of <= %d padded tokens, windows of %d",
                 self.kind, len(ids), done, os.path.basename(self.folder), ", ".join(self.plan.devices), self.precision,
                 ", compiled" if self.plan.compile else "", self.batch_tokens, block_size)
        started, tokens = time.monotonic(), 0
        with tqdm(total=len(ids), initial=done, unit="seq", desc=f"embedding ({self.kind})", dynamic_ncols=True) as bar:
            writer = Writer(partial, ids, self.dim)
            # Two stages ahead of the device: tokenizing the next windows (a window's tokens come all
            # at once, so one window of batches queued would leave the device waiting) and padding.
            tokenized = prefetch(windows(read_again(self.kind, input, digest), self.tokenizer, block_size,
                                         partial.blocks_done), PREFETCH_WINDOWS)
            pin = self.plan.type == "cuda" and len(self.plan.devices) == 1  # workers get pickled numpy, not pinned pages
            batches = prefetch(padded_batches(tokenized, self.tokenizer.pad_id, self.batch_tokens, pin), PREFETCH_BATCHES)
            results = self.engine.vectors(batches)
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
                for stage in (results, batches, tokenized):
                    with contextlib.suppress(ValueError):  # already running (a generator cannot close itself)
                        stage.close()


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
