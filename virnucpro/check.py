"""`virnucpro-check`: a one-minute self-check of a node before a long run (SPEC 3).

It runs what a pipeline task runs, through the same engine (`extract.Embedder`: model loading,
tokenizing, batching, the device, the writer, HDF5), and prints one line per finding on stdout:
versions (virnucpro, Python, torch and its CUDA build, the NVIDIA driver), the device (name,
memory, bf16), whether torch.compile works there, each model loading, a few dozen frames embedded
on the device and, one sequence at a time in fp32 on the CPU (the original's way), their cosine,
and a throughput estimate per model. The last line is the verdict: `verdict: OK` or
`verdict: FAIL: <reasons>`; a FAIL also exits non-zero, so a job script can stop before a long run.

Without --dnabert_model/--esm_model the tiny test models (`make_test_models`) are built in a
temporary folder: that checks the node, not the weights.
"""

import logging
import os
import platform
import shutil
import subprocess
import tempfile
import time

import numpy as np

from . import __version__
from .errors import UserError

#: Frames of 500 bp chunks are 496-499 bp (a fifth shorter: last chunks); proteins (len - 1) / 3.
FRAME_BP = (496, 500)
#: Lowest cosine between the device's vectors and the CPU's fp32 one-at-a-time vectors, by the
#: device's precision (fp32: SPEC 1.3/1.4's batched-vs-unbatched bound; bf16/fp16 rounding
#: moves pooled vectors by ~1e-3 relative, a cosine of ~0.999999).
MIN_COSINE = {"fp32": 0.9999, "bf16": 0.999, "fp16": 0.999}
AMINO = "ACDEFGHIKLMNPQRSTVWY"


def sample_frames(n, seed=1):
    """(dna, proteins): `n` random DNA frames shaped like `virnucpro-translate`'s output of 500 bp
    chunks, and their protein-sized counterparts (deterministic)."""
    rng = np.random.default_rng(seed)
    short = rng.random(n) < 0.2
    lengths = np.where(short, rng.integers(100, FRAME_BP[0], n), rng.integers(*FRAME_BP, n))
    dna = ["".join(rng.choice(list("ACGT"), size=int(length))) for length in lengths]
    proteins = ["".join(rng.choice(list(AMINO), size=int((length - 1) // 3))) for length in lengths]
    return dna, proteins


class Report:
    """Findings printed as they come (a hang shows where it hangs); failures and warnings kept for the verdict."""

    def __init__(self):
        self.failures, self.warnings = [], []

    def line(self, topic, text):
        print(f"{topic + ':':<12} {text}", flush=True)

    def fail(self, topic, reason):
        self.failures.append(f"{topic}: {reason}")
        self.line(topic, f"FAIL: {reason}")

    def warn(self, topic, text):
        self.warnings.append(f"{topic}: {text}")
        self.line(topic, f"WARNING: {text}")


def first_line(err):
    """An error in one line: a UserError's own message, else the type and the first line."""
    text = (str(err).strip().splitlines() or [""])[0]
    return text if isinstance(err, UserError) else f"{type(err).__name__}: {text}".strip()


def naming(label, text):
    """`text`, prefixed by `label` unless it names it already."""
    return text if label in text else f"{label}: {text}"


def driver_version():
    """(NVIDIA driver release from nvidia-smi or None, highest CUDA version the driver supports or None)."""
    import torch

    release = None
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            release = out.stdout.split("\n")[0].strip() or None
        except (OSError, subprocess.SubprocessError):
            pass
    supports = None
    try:
        number = torch._C._cuda_getDriverVersion()  # e.g. 13000; 0 without a driver
        supports = f"{number // 1000}.{number % 1000 // 10}" if number else None
    except (AttributeError, RuntimeError):
        pass
    return release, supports


def check_versions(report):
    import torch
    import transformers

    report.line("versions", f"virnucpro {__version__}, Python {platform.python_version()}, torch {torch.__version__}, "
                            f"transformers {transformers.__version__}")
    release, supports = driver_version()
    built = torch.version.cuda
    driver = f"driver {release or 'not found'}" + (f" (supports CUDA <= {supports})" if supports else "")
    report.line("cuda", f"torch built for CUDA {built}, {driver}" if built else f"torch built without CUDA (CPU build), {driver}")
    return release, supports, built


def check_device(device, report, release, supports, built):
    """The one device checked (the first of what `--device` names), described; None when unusable."""
    import torch

    from .engine.devices import plan_devices

    try:
        chosen = plan_devices(device)[0]
    except UserError as err:
        report.fail("device", str(err))
        return None
    if chosen == "cpu":
        capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")()
        report.line("device", f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                              f"SIMD {capability}, torch threads {torch.get_num_threads()}")
        if device == "auto" and release:
            why = ("torch is a CPU-only build" if not built else
                   f"torch is built for CUDA {built}, the driver supports CUDA <= {supports or 'unknown'}")
            report.warn("device", f"nvidia-smi sees a GPU but torch cannot use it ({why}): --device auto runs on the CPU")
        return chosen
    index = int(chosen.split(":")[1])
    props = torch.cuda.get_device_properties(index)
    bf16 = props.major >= 8  # tensor-core bf16 from Ampere on (older GPUs only emulate it)
    visible = torch.cuda.device_count()
    report.line("device", f"{chosen}: {props.name}, {props.total_memory / 2**30:.1f} GiB, compute capability "
                          f"{props.major}.{props.minor}, bf16 {'yes' if bf16 else 'emulated only'}"
                          + (f" ({visible} GPUs visible; checking this one)" if visible > 1 else ""))
    if not bf16:
        report.warn("device", "no native bf16 on this GPU (the default --precision auto picks it): "
                              "use --precision fp16 or fp32")
    return chosen


def check_compile(device, wanted, report):
    """Compile a small function on `device` as extraction compiles its model (`--compile auto`: on a
    GPU), and compare it to eager; where compiling fails, check that extraction's wrapper
    (`pooling.CompiledOrEager`) steps aside to eager. Neither: the node cannot run the pipeline."""
    import torch

    from .engine.devices import resolve_compile
    from .engine.pooling import CompiledOrEager, writable_compile_caches

    if not resolve_compile(wanted, device.split(":")[0]):
        report.line("compile", f"not used on {device} (extraction compiles on a GPU; --compile on to check it here)")
        return

    def gelu_scale(x):
        return torch.nn.functional.gelu(x) * 2.0 + 1.0

    x = torch.randn(64, 128, device=device)
    expected = gelu_scale(x)
    started = time.monotonic()
    try:
        writable_compile_caches()
        if not torch.allclose(torch.compile(gelu_scale, dynamic=True)(x), expected, atol=1e-5):
            raise RuntimeError("the compiled result differs from eager")
        report.line("compile", f"works (a small function, {time.monotonic() - started:.1f} s, cold)")
        return
    except Exception as err:  # noqa: BLE001 - any failure is the finding
        failure = first_line(err)[:200]
    try:
        fell_back = torch.equal(CompiledOrEager(gelu_scale)(x), expected)
    except Exception as err:  # noqa: BLE001
        fell_back, failure = False, f"{failure}; eager fallback: {first_line(err)[:200]}"
    if fell_back:
        report.warn("compile", f"fails ({failure}); extraction falls back to eager (slower, same results)")
    else:
        report.fail("compile", f"fails and extraction does not fall back to eager ({failure}); --compile off avoids it")


def write_fasta(path, prefix, seqs):
    with open(path, "w") as handle:
        handle.writelines(f">{prefix}{i}\n{seq}\n" for i, seq in enumerate(seqs))
    return path


def cosines(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def check_model(kind, model, label, device, precision, compile, frames, seconds, min_cosine, workdir, report):
    """Load `model` on `device`, embed `frames` sequences, compare them to the CPU's fp32 vectors made
    one sequence at a time, then time ever larger inputs until a run takes `seconds`."""
    import torch

    from .embeddings_h5 import read_embeddings
    from .stages.extract import Embedder

    dna, proteins = sample_frames(frames)
    seqs = dna if kind == "dnabert" else proteins
    fasta = write_fasta(os.path.join(workdir, f"{kind}.fa"), "frame", seqs)
    try:
        embedder = Embedder(kind, model=model, device=device, precision=precision, compile=compile)
    except Exception as err:  # noqa: BLE001
        report.fail(kind, naming(label, first_line(err)))
        return
    try:
        started = time.monotonic()
        try:  # one sequence first: the model load, timed on its own
            embedder.embed(write_fasta(os.path.join(workdir, f"{kind}.one.fa"), "frame", seqs[:1]),
                           os.path.join(workdir, f"{kind}.one.h5"))
            loaded = time.monotonic()
            if device.startswith("cuda"):  # peak memory of embedding, not of loading
                torch.cuda.reset_peak_memory_stats(device)
            embedder.embed(fasta, os.path.join(workdir, f"{kind}.device.h5"))
        except Exception as err:  # noqa: BLE001
            report.fail(kind, f"{label} does not load or embed on {device}: {first_line(err)}")
            return
        first = (len(seqs), time.monotonic() - loaded)
        on_device = read_embeddings(os.path.join(workdir, f"{kind}.device.h5"))[1]
        report.line(kind, f"{label}: loaded on {device} ({embedder.precision}{compiled(embedder)}) in "
                          f"{loaded - started:.1f} s, "
                          f"{frames} frames embedded in {first[1]:.1f} s")
        try:
            with Embedder(kind, model=model, device="cpu", precision="fp32", compile="off", batch_tokens=1) as cpu:
                cpu.embed(fasta, os.path.join(workdir, f"{kind}.cpu.h5"))
        except Exception as err:  # noqa: BLE001
            report.fail(kind, f"{label} does not load or embed on the CPU: {first_line(err)}")
            return
        worst = float(cosines(on_device, read_embeddings(os.path.join(workdir, f"{kind}.cpu.h5"))[1]).min())
        floor = min_cosine if min_cosine is not None else MIN_COSINE[embedder.precision]
        comparison = f"cosine {device} {embedder.precision} (batched) vs cpu fp32 (one at a time): min {worst:.7f}"
        if not worst >= floor:  # also catches NaN
            report.fail(kind, f"{comparison} < {floor}")
            return
        report.line(kind, f"{comparison} (>= {floor})")
        # A compiled model's first batch shapes compile during that run: it cannot count.
        throughput(kind, embedder, device, seqs, seconds, workdir, report, None if embedder.plan.compile else first)
    finally:
        embedder.close()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()


def compiled(embedder):
    """', compiled' / ', eager: compiling failed' for a compiled run (what `pooling.CompiledOrEager` did), else ''."""
    if not embedder.plan.compile:
        return ""
    wrapper = getattr(embedder.engine.runner, "model", None)
    return ", eager: compiling failed" if getattr(wrapper, "compiled", True) is None else ", compiled"


def throughput(kind, embedder, device, seqs, seconds, workdir, report, first=None, limit=1 << 17):
    """Tokens/s of `embedder` end to end (FASTA in, HDF5 out) on `seqs` replicated: the input grows
    until one run takes `seconds` (earlier runs warm up kernels and compiled shapes). `first`:
    (count, seconds) of a warm run of `seqs` already made, which counts when it is long enough."""
    import torch

    count, elapsed = first if first else (len(seqs), 0.0)
    if elapsed < seconds:
        if first:
            count *= 2 if elapsed * 4 >= seconds else 4
        while True:
            count = min(limit, count)
            batch = [seqs[i % len(seqs)] for i in range(count)]
            fasta = write_fasta(os.path.join(workdir, f"{kind}.speed.fa"), "s", batch)
            if device.startswith("cuda"):
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            started = time.monotonic()
            try:
                embedder.embed(fasta, os.path.join(workdir, f"{kind}.speed.h5"), overwrite=True)
            except Exception as err:  # noqa: BLE001
                report.fail(kind, f"timed run of {count} sequences failed: {first_line(err)}")
                return
            elapsed = time.monotonic() - started
            if elapsed >= seconds or count >= limit:
                break
            count *= 2 if elapsed * 4 >= seconds else 4
    lengths = [len(tokens) for tokens in embedder.tokenizer.encode(seqs)]
    tokens = sum(lengths[i % len(seqs)] for i in range(count))
    memory = (f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
              if device.startswith("cuda") else "")
    report.line(kind, f"throughput estimate {tokens / elapsed:,.0f} tokens/s end to end ({count} sequences, "
                      f"{tokens:,} tokens in {elapsed:.2f} s, batches of <= {embedder.batch_tokens} padded tokens"
                      f"{memory}; a short run: an estimate, not a benchmark)")


def check(device="auto", dnabert_model=None, esm_model=None, precision="auto", compile="auto", frames=24,
          seconds=2.0, min_cosine=None, verbose=False):
    """A one-minute self-check of this node before a long run; the last line is the verdict.

    Prints versions (torch, CUDA, driver), the device (name, memory, bf16), whether torch.compile
    works there, each model loading, a few dozen frames embedded on the device and on the CPU (fp32,
    one at a time) with their cosine, and a throughput estimate per model. Exits 1 with
    `verdict: FAIL: ...` when this node cannot run the pipeline as asked.

    Usage: virnucpro-check [--device DEVICE] [--dnabert_model ID_OR_DIR] [--esm_model ID_OR_DIR]

    Args:
      device: auto (a GPU if torch sees one), cpu, cuda (the first visible GPU) or cuda:N.
      dnabert_model: DNABERT-S hub id or local folder. Default: a tiny test model built in a temporary folder.
      esm_model: ESM-2 hub id or local folder. Default: a tiny test model built in a temporary folder.
      precision: auto, fp32, bf16 or fp16 on the device, as virnucpro-extract takes it (auto: bf16 on a GPU, fp32 on a CPU).
      compile: auto, on or off, as virnucpro-extract takes it (auto: compile the models on a GPU).
      frames: sequences compared between the device and the CPU.
      seconds: length of the timed run behind each throughput estimate.
      min_cosine: lowest cosine accepted between device and CPU vectors. Default: 0.9999 (fp32), 0.999 (bf16/fp16).
      verbose: the extraction engine's own log lines and progress bars too.
    """
    from .stages.extract import _check_positive

    _check_positive("frames", frames)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
        raise UserError(f"--seconds {seconds}: must be a positive number")
    if min_cosine is not None and (isinstance(min_cosine, bool) or not isinstance(min_cosine, (int, float))
                                   or not -1 <= min_cosine <= 1):
        raise UserError(f"--min_cosine {min_cosine}: must be a number from -1 to 1")
    report = Report()
    engine_log = logging.getLogger("virnucpro")
    quiet = {"level": engine_log.level, "tqdm": os.environ.get("TQDM_DISABLE")}
    if not verbose:
        engine_log.setLevel(logging.WARNING)
        os.environ["TQDM_DISABLE"] = "1"
    try:
        chosen = check_device(str(device), report, *check_versions(report))
        if chosen is not None:
            check_compile(chosen, compile, report)
            with tempfile.TemporaryDirectory(prefix="virnucpro-check.") as workdir:
                for kind, given in (("dnabert", dnabert_model), ("esm", esm_model)):
                    model, label = given, str(given)
                    if given is None:
                        model, label = _test_model(kind, workdir, report), f"test model ({kind})"
                        if model is None:
                            continue
                    check_model(kind, str(model), label, chosen, precision, compile, int(frames), float(seconds),
                                min_cosine, workdir, report)
    finally:
        engine_log.setLevel(quiet["level"])
        if quiet["tqdm"] is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = quiet["tqdm"]
    if report.failures:
        print(f"verdict: FAIL: {'; '.join(report.failures)}", flush=True)
        raise UserError(f"this node cannot run the pipeline as asked ({len(report.failures)} problem(s); see above)")
    note = f" ({len(report.warnings)} warning(s) above)" if report.warnings else ""
    print(f"verdict: OK: this node can run the pipeline on {chosen}{note}", flush=True)


def _test_model(kind, workdir, report):
    """A tiny random model of `kind` in the real format (virnucpro-make-test-models' code)."""
    from .models.make_test_models import make_dnabert, make_esm

    try:
        return (make_dnabert if kind == "dnabert" else make_esm)(os.path.join(workdir, f"test-{kind}"))
    except Exception as err:  # noqa: BLE001
        report.fail(kind, f"cannot build the test model: {first_line(err)}")
        return None
