#!/usr/bin/env python3
"""Benchmark `virnucpro-extract` against the original tool's way, in the same run, on the same machine.

CPU (`--cpu_only`): the tiny test models (hidden 768 / 2560) on translate-like inputs.
  DNABERT-S: original = one sequence at a time (tokenize, forward, mean), fp32;
             ours = `extract_embeddings` (sorted, token-budget batches, HDF5 written), fp32 and bf16.
  ESM-2:     original = fair-esm style fp32 batches of 2048 tokens, and one at a time;
             ours = `extract_embeddings`, fp32 and bf16.
GPU (`--gpu_only`): ONE device (`--device cuda:0` unless told otherwise; never every visible GPU,
  no worker processes), full-size DNABERT-S and ESM-2 3B built from their real configs with random
  weights on the device (nothing downloaded), sized to finish within about 5 minutes on one H100
  by construction: every timed part runs for a fixed time (`--model_seconds`, `--original_seconds`)
  or on an input sized from the model-only rate to take `--e2e_seconds`; the plan and its time
  estimate are printed first (`--dry_run`: only that, on any machine). Per model:
  - the original's way, fp32 (DNABERT-S one sequence at a time, ESM-2 batches of 2048 tokens), and
    64 reference vectors one at a time in fp32;
  - the same weights rounded to the engine's precision (bf16), peak memory statistics reset;
  - model only: the engine's `Runner` (compiled as `--compile auto` does, OOM splitting, pooling) on
    padded batches of the engine's token budget already on the device, timed with CUDA events;
  - end to end: `extract_embeddings` (what `virnucpro-extract` runs: FASTA passes, tokenizing,
    batches, pinned copies, the writer thread, HDF5) with that same Runner swapped in for the model
    load (the one thing not timed), on the frames replicated;
  - tokens/s and MFU (2 x parameters x tokens FLOPs, attention's own FLOPs not counted, over the
    GPU's dense bf16 peak: 989 TFLOP/s for an H100 SXM), the speedup over the original's way, peak
    GPU memory after loading, and the cosine of the engine's vectors to the fp32 reference.

Usage: python bench/bench_extract.py --gpu_only [--device cuda:0] [--genomes FASTA] [--tokenizer DIR]
         [--dry_run] [--json FILE]
       python bench/bench_extract.py --cpu_only [--n_dna 128] [--n_protein 64] [--repeats 3]
"""

import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time

import fire
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from virnucpro.stages import extract  # noqa: E402
from virnucpro.engine import devices, embedder  # noqa: E402
from virnucpro.check import cosines, sample_frames, write_fasta  # noqa: E402
from virnucpro.models.dnabert import DnabertConfig, DnabertModel, DnabertTokenizer  # noqa: E402
from virnucpro.models.dnabert import embed_batch as dnabert_embed  # noqa: E402
from virnucpro.models.dnabert import load_dnabert  # noqa: E402
from virnucpro.embeddings_h5 import read_embeddings  # noqa: E402
from virnucpro.models.esm import EsmTokens, load_esm  # noqa: E402
from virnucpro.models.esm import embed_batch as esm_embed  # noqa: E402
from virnucpro.engine.streaming import plan_batches  # noqa: E402
from virnucpro.stages.extract import extract_embeddings  # noqa: E402
from virnucpro.models.make_test_models import make_dnabert, make_esm, make_test_models  # noqa: E402

#: zhihan1996/DNABERT-S config.json (architecture fields).
DNABERT_S = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 vocab_size=4096, type_vocab_size=2, layer_norm_eps=1e-12, alibi_starting_size=512)
#: facebook/esm2_t36_3B_UR50D config.json (architecture fields).
ESM2_3B = dict(vocab_size=33, hidden_size=2560, num_hidden_layers=36, num_attention_heads=40, intermediate_size=10240,
               max_position_embeddings=1026, position_embedding_type="rotary", token_dropout=True,
               emb_layer_norm_before=False, layer_norm_eps=1e-5, pad_token_id=1, mask_token_id=32,
               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
#: Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from NVIDIA's datasheets; first match on the
#: device name wins (so "H100 PCIe" before "H100", "L40S" before "L4").
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("B200", 2250.0),
                    ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0))
#: The peak MFU is reported against when the device is not in the table: an H100 SXM's.
H100_PEAK = 989.0
#: Planning assumptions for one H100 (printed with the plan; estimates, not measurements): seconds
#: to build the random fp32 model on the device, and to compile and warm up the engine's model.
ASSUMED = {"dnabert": dict(build_s=5, compile_s=40, reference_s=2), "esm": dict(build_s=15, compile_s=90, reference_s=5)}
#: Seconds of start-up (imports, tiny tokenizer models, inputs) in the plan.
STARTUP_S = 20
#: The end-to-end run is sized to take `e2e_seconds` at the model-only rate; the plan allows this
#: much more, for a host that does not keep up.
E2E_MARGIN = 1.3
#: The end-to-end input is sized at no more than this rate (tokens/s): the host path alone (reading,
#: tokenizing, padding, writing) measured 1.41M on 2 cores (BENCHMARKS.md), so a faster device
#: does not stretch that run far past `e2e_seconds` on a host that cannot keep up.
HOST_TOKENS_PER_S = 1.5e6
#: Distinct sequences the GPU part tokenizes (model-only batches, the original's way, the
#: reference); the end-to-end input repeats them.
POOL = 4096
REFERENCE = 64


REPEATS = 1


def timed(fn):
    """(result, best wall time of REPEATS runs): the best run is the least disturbed by other jobs."""
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return result, best


def cosine_min(a, b):
    return float(cosines(a, b).min())


def row(name, seqs, tokens, seconds, baseline=None):
    entry = dict(way=name, sequences=seqs, tokens=int(tokens), seconds=round(seconds, 3),
                 seqs_per_s=round(seqs / seconds, 2), tokens_per_s=round(tokens / seconds, 1))
    if baseline:
        entry["speedup"] = round(baseline / seconds, 2)
    print(json.dumps(entry), flush=True)
    return entry


# ------------------------------------------------------------------ CPU, test models


def bench_cpu(n_dna, n_protein, workdir):
    torch.set_num_threads(os.cpu_count() or 1)
    models = make_test_models(os.path.join(workdir, "models"))
    dna, proteins = sample_frames(max(n_dna, n_protein))
    dna, proteins = dna[:n_dna], proteins[:n_protein]
    results = {}

    # DNABERT-S: one sequence at a time, as the original did.
    model, tokenizer = load_dnabert(models["dnabert"]), DnabertTokenizer(models["dnabert"])
    dnabert_embed(model, tokenizer.encode(dna[:2]), tokenizer.pad_id, "cpu")  # warm-up
    def one_at_a_time():
        return np.stack([dnabert_embed(model, tokenizer.encode([seq]), tokenizer.pad_id, "cpu")[0] for seq in dna])
    original, t_original = timed(one_at_a_time)
    n_tokens = sum(len(t) for t in tokenizer.encode(dna))
    fasta = write_fasta(os.path.join(workdir, "dna.fa"), "s", dna)
    out = os.path.join(workdir, "dna.h5")
    _, t_ours = timed(lambda: extract_embeddings("dnabert", fasta, out, model=models["dnabert"], device="cpu", overwrite=True))
    ours = read_embeddings(out)[1]
    results["dnabert"] = [row("dnabert original: one at a time, fp32", n_dna, n_tokens, t_original),
                          row("dnabert virnucpro-extract, fp32", n_dna, n_tokens, t_ours, t_original)]
    results["dnabert"][-1]["min_cosine_vs_original"] = cosine_min(ours, original)
    _, t_bf16 = timed(lambda: extract_embeddings("dnabert", fasta, out, model=models["dnabert"], device="cpu",
                                                 precision="bf16", overwrite=True))
    results["dnabert"].append(row("dnabert virnucpro-extract, bf16", n_dna, n_tokens, t_bf16, t_original))
    results["dnabert"][-1]["min_cosine_vs_original"] = cosine_min(read_embeddings(out)[1], original)

    # ESM-2: fair-esm style batches of 2048 tokens (the original), and one at a time.
    esm, tokens = load_esm(models["esm"]), EsmTokens(models["esm"])
    encoded = tokens.encode(proteins)
    esm_embed(esm, encoded[:2], tokens.pad_id, "cpu")  # warm-up
    n_tokens = sum(len(t) for t in encoded)
    def batches_of_2048():
        out = np.zeros((len(encoded), 2560), np.float32)
        for batch in plan_batches([len(t) for t in encoded], 2048):
            out[batch] = esm_embed(esm, [encoded[i] for i in batch], tokens.pad_id, "cpu")
        return out
    original, t_2048 = timed(batches_of_2048)
    _, t_single = timed(lambda: [esm_embed(esm, [t], tokens.pad_id, "cpu") for t in encoded])
    fasta = write_fasta(os.path.join(workdir, "protein.faa"), "p", proteins)
    out = os.path.join(workdir, "protein.h5")
    _, t_ours = timed(lambda: extract_embeddings("esm", fasta, out, model=models["esm"], device="cpu", overwrite=True))
    ours = read_embeddings(out)[1]
    results["esm"] = [row("esm original: fp32 batches of 2048 tokens", n_protein, n_tokens, t_2048),
                      row("esm one at a time, fp32", n_protein, n_tokens, t_single),
                      row("esm virnucpro-extract, fp32", n_protein, n_tokens, t_ours, t_2048)]
    results["esm"][-1]["speedup_vs_one_at_a_time"] = round(t_single / t_ours, 2)
    results["esm"][-1]["min_cosine_vs_original"] = cosine_min(ours, original)
    _, t_bf16 = timed(lambda: extract_embeddings("esm", fasta, out, model=models["esm"], device="cpu",
                                                 precision="bf16", overwrite=True))
    results["esm"].append(row("esm virnucpro-extract, bf16", n_protein, n_tokens, t_bf16, t_2048))
    results["esm"][-1]["speedup_vs_one_at_a_time"] = round(t_single / t_bf16, 2)
    results["esm"][-1]["min_cosine_vs_original"] = cosine_min(read_embeddings(out)[1], original)
    return results


# ------------------------------------------------------------------ GPU, full-size random models


def peak_tflops(device, override=None):
    """(device name, peak dense bf16 TFLOP/s, where the peak comes from)."""
    if not device.startswith("cuda"):
        return "cpu (smoke run of the GPU code)", override, "given" if override else "none on a CPU"
    name = torch.cuda.get_device_name(device)
    if override:
        return name, float(override), "given with --peak_tflops"
    for key, value in PEAK_BF16_TFLOPS:
        if key in name:
            return name, value, f"{key} dense bf16, NVIDIA datasheet"
    return name, H100_PEAK, "an H100 SXM's dense bf16 (this GPU is not in the table; --peak_tflops to set it)"


def random_model(kind, config, device, seed=0):
    """Full-size fp32 model of the real architecture with random weights (seeded), built on `device`."""
    torch.manual_seed(seed)
    with torch.device(device):
        if kind == "dnabert":
            model = DnabertModel(DnabertConfig(**config))
        else:
            from transformers import EsmConfig, EsmModel

            model = EsmModel._from_config(EsmConfig(**config), attn_implementation="sdpa", add_pooling_layer=False)
    return model.eval()


def model_folder(kind, config, workdir, tokenizer_files):
    """A model folder `virnucpro-extract` accepts: config, tokenizer and a recorded revision; the
    weights come from `random_model` (nothing downloaded, nothing 11 GB written)."""
    from virnucpro.names import MODEL_RECORD

    folder = os.path.join(workdir, f"random_{kind}")
    os.makedirs(folder, exist_ok=True)
    for path in tokenizer_files:
        shutil.copy(path, folder)
    with open(os.path.join(folder, "config.json"), "w") as handle:
        json.dump(config, handle)
    with open(os.path.join(folder, MODEL_RECORD), "w") as handle:
        json.dump({"model": f"random {kind}", "commit": f"random-{kind}"}, handle)
    return folder


def frames(genomes, count):
    """`count` distinct DNA frames and proteins: the 500 bp frames of real genomes (translated by
    virnucpro), else random frames of the same shape."""
    if genomes:
        from virnucpro.fasta import read_fasta
        from virnucpro.stages.translate import translate_records

        found, _, _ = translate_records(list(read_fasta(str(genomes))), 500)
        return [f[1] for f in found[:count]], [f[2] for f in found[:count]]
    return sample_frames(count)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def device_seconds(device, run, iterations):
    """Seconds the device spends on `iterations` calls of run(i), timed with CUDA events (wall on a CPU)."""
    if device.startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for i in range(iterations):
            run(i)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000
    started = time.perf_counter()
    for i in range(iterations):
        run(i)
    return time.perf_counter() - started


def for_seconds(seconds, items, step):
    """Run step(item) over `items` (cycled) until `seconds` of wall time have passed; (count, seconds)."""
    count, started = 0, time.perf_counter()
    while True:
        step(items[count % len(items)])
        count += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return count, elapsed


def gib(n_bytes):
    return round(n_bytes / 2**30, 2)


def plan(kinds, device, model_seconds, e2e_seconds, original_seconds):
    """The planned work and its time estimate, as printed before anything runs: (lines, seconds)."""
    lines, total = [f"plan on {device}: one device, no worker processes; every timed part is capped:"], STARTUP_S
    lines.append(f"  start-up (imports, tokenizers, inputs): ~{STARTUP_S} s")
    for kind in kinds:
        assumed = ASSUMED[kind]
        e2e = e2e_seconds * E2E_MARGIN
        seconds = (assumed["build_s"] + original_seconds + assumed["reference_s"] + assumed["compile_s"]
                   + model_seconds + e2e)
        total += seconds
        name = "DNABERT-S (117M parameters)" if kind == "dnabert" else "ESM-2 3B (2.8B parameters)"
        lines.append(f"  {kind}: {name}: build random fp32 ~{assumed['build_s']} s, original's way fp32 "
                     f"{original_seconds:g} s, {REFERENCE} fp32 reference vectors ~{assumed['reference_s']} s, compile "
                     f"and warm-up ~{assumed['compile_s']} s (estimate), model only {model_seconds:g} s (CUDA events), "
                     f"end to end sized for {e2e_seconds:g} s at the model-only rate, at most {HOST_TOKENS_PER_S / 1e6:g}M tokens/s (<= ~{e2e:.0f} s): ~{seconds:.0f} s")
    lines.append(f"  estimate: {total / 60:.1f} min in all (compile and build times assumed for one H100; the rest "
                 "is capped by construction)")
    return lines, total


def bench_gpu(device="cuda:0", genomes=None, tokenizer=None, model_seconds=8.0, e2e_seconds=20.0, original_seconds=10.0,
              max_dna=1_000_000, max_protein=200_000, peak=None, shrink=None, kinds=("dnabert", "esm")):
    """Both models on one device (see the module docstring); `device='cpu', shrink=dict(...)` runs
    the same code on tiny configs (a smoke test of this script)."""
    name, peak_value, peak_source = peak_tflops(device, peak)
    results = {"device": device, "device_name": name, "peak_bf16_tflops": peak_value, "peak_source": peak_source}
    print(json.dumps({k: results[k] for k in ("device", "device_name", "peak_bf16_tflops", "peak_source")}), flush=True)
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    with tempfile.TemporaryDirectory() as workdir:
        dnabert_tokenizer = (os.path.join(str(tokenizer), "tokenizer.json") if tokenizer else
                             os.path.join(make_dnabert(os.path.join(workdir, "tiny_dnabert")), "tokenizer.json"))
        esm_vocab = os.path.join(make_esm(os.path.join(workdir, "tiny_esm")), "vocab.txt")
        configs = {"dnabert": dict(DNABERT_S, **(shrink or {})), "esm": dict(ESM2_3B, **(shrink or {}))}
        if tokenizer:  # the real vocabulary size, so every token id has an embedding row
            from tokenizers import Tokenizer

            configs["dnabert"]["vocab_size"] = max(configs["dnabert"]["vocab_size"],
                                                   Tokenizer.from_file(dnabert_tokenizer).get_vocab_size())
        folders = {"dnabert": model_folder("dnabert", configs["dnabert"], workdir, [dnabert_tokenizer]),
                   "esm": model_folder("esm", configs["esm"], workdir, [esm_vocab])}
        dna, proteins = frames(genomes, POOL)
        for kind in kinds:
            seqs = dna if kind == "dnabert" else proteins
            results[kind] = bench_one_gpu(kind, folders[kind], configs[kind], seqs, device, peak_value, workdir,
                                          model_seconds, e2e_seconds, original_seconds,
                                          max_dna if kind == "dnabert" else max_protein)
            print(json.dumps({kind: results[kind]}), flush=True)
    return results


def bench_one_gpu(kind, folder, config, seqs, device, peak, workdir, model_seconds, e2e_seconds, original_seconds,
                  max_sequences):
    from virnucpro.engine.pooling import LENGTH_MULTIPLE, pad_batch

    device_type = "cuda" if device.startswith("cuda") else "cpu"
    tokenizer = DnabertTokenizer(folder) if kind == "dnabert" else EsmTokens(folder)
    embed = dnabert_embed if kind == "dnabert" else esm_embed
    encoded = tokenizer.encode(seqs)
    lengths = np.array([len(t) for t in encoded])
    entry = dict(sequences_distinct=len(encoded), mean_tokens=round(float(lengths.mean()), 1))

    # The original's way, fp32: DNABERT-S one sequence at a time, ESM-2 in batches of 2048 tokens.
    started = time.perf_counter()
    model = random_model(kind, config, device)
    sync(device)
    params = sum(p.numel() for p in model.parameters())
    entry.update(parameters=params, build_seconds=round(time.perf_counter() - started, 1))
    flops_per_token = 2 * params
    groups = [[t] for t in encoded] if kind == "dnabert" else [[encoded[i] for i in b] for b in plan_batches(lengths, 2048)]
    for group in groups[:3]:  # warm-up: kernels, cuBLAS handles
        embed(model, group, tokenizer.pad_id, device)
    done, seconds = for_seconds(original_seconds, groups, lambda group: embed(model, group, tokenizer.pad_id, device))
    original_tokens = sum(len(t) for i in range(done) for t in groups[i % len(groups)])
    entry.update(original_way="one sequence at a time, fp32" if kind == "dnabert" else "fp32 batches of 2048 tokens",
                 original_tokens_per_s=round(original_tokens / seconds))
    reference = np.concatenate([embed(model, [t], tokenizer.pad_id, device) for t in encoded[:REFERENCE]])

    # The engine's precision, the same weights rounded; memory statistics from here on.
    precision = devices.resolve_precision("auto", device_type)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    for parameter in model.parameters():  # weights only: buffers (ESM-2's rotary frequencies) stay fp32, as loaded
        parameter.data = parameter.data.to(dtype)
    if device_type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        entry["gpu_memory_after_load_gib"] = gib(torch.cuda.memory_allocated(device))
    compile = devices.resolve_compile("auto", device_type)
    runner = embedder.Runner(kind, model, device, compile)

    # Model only: padded batches of the engine's token budget, already on the device.
    budget = extract.DEFAULT_BATCH_TOKENS[kind, device_type]
    batches = []
    for rows in plan_batches(lengths, budget, LENGTH_MULTIPLE)[:8]:
        ids, mask = pad_batch([encoded[i] for i in rows], tokenizer.pad_id, LENGTH_MULTIPLE)
        batches.append((ids.to(device), mask.to(device), int(lengths[rows].sum()), ids.numel()))
    started = time.perf_counter()
    for ids, mask, _, _ in batches:  # compile (one graph for every shape) and warm up
        runner(ids, mask)
    sync(device)
    entry["compile_and_warmup_seconds"] = round(time.perf_counter() - started, 1)
    once = device_seconds(device, lambda i: runner(*batches[i % len(batches)][:2]), len(batches))
    iterations = max(len(batches), int(model_seconds / max(once, 1e-6) * len(batches)))
    seconds = device_seconds(device, lambda i: runner(*batches[i % len(batches)][:2]), iterations)
    tokens = sum(batches[i % len(batches)][2] for i in range(iterations))
    padded = sum(batches[i % len(batches)][3] for i in range(iterations))
    model_rate = tokens / seconds
    entry.update(precision=precision, compiled=compile, batch_tokens=budget, model_only_seconds=round(seconds, 2),
                 model_only_tokens_per_s=round(model_rate), model_only_padded_tokens_per_s=round(padded / seconds),
                 model_only_mfu=round(model_rate * flops_per_token / (peak * 1e12), 3) if peak else None)

    # End to end through virnucpro-extract's engine, with this Runner instead of a model load.
    count = int(min(max_sequences, max(len(encoded), min(model_rate, HOST_TOKENS_PER_S) * e2e_seconds / lengths.mean())))
    fasta = os.path.join(workdir, f"{kind}.e2e.fa")
    with open(fasta, "w") as handle:
        handle.writelines(f">s{i}\n{seqs[i % len(seqs)]}\n" for i in range(count))
    output = os.path.join(workdir, f"{kind}.e2e.h5")
    swapped = embedder.load_runner
    embedder.load_runner = lambda *args, **kwargs: runner
    try:
        started = time.perf_counter()
        extract_embeddings(kind, fasta, output, model=folder, device=device, precision=precision, overwrite=True)
        seconds = time.perf_counter() - started
    finally:
        embedder.load_runner = swapped
    tokens = int(lengths.sum()) * (count // len(encoded)) + int(lengths[: count % len(encoded)].sum())
    rate = tokens / seconds
    ours = read_embeddings(output)[1][:REFERENCE]
    entry.update(e2e_sequences=count, e2e_tokens=tokens, e2e_seconds=round(seconds, 2), e2e_tokens_per_s=round(rate),
                 e2e_mfu=round(rate * flops_per_token / (peak * 1e12), 3) if peak else None,
                 e2e_vs_model_only=round(rate / model_rate, 3), speedup_vs_original=round(rate / entry["original_tokens_per_s"], 1),
                 min_cosine_vs_fp32=cosine_min(ours, reference),
                 mfu_flops="2 x parameters x tokens (attention's L^2 FLOPs not counted)")
    if device_type == "cuda":
        entry["peak_gpu_memory_after_load_gib"] = gib(torch.cuda.max_memory_allocated(device))
    os.remove(output)
    del runner, model, batches
    torch._dynamo.reset()  # compiled graphs hold the model
    if device_type == "cuda":
        torch.cuda.empty_cache()
    return entry


def main(n_dna=128, n_protein=64, repeats=3, cpu_only=False, gpu_only=False, device="cuda:0", genomes=None,
         tokenizer=None, model_seconds=8.0, e2e_seconds=20.0, original_seconds=10.0, gpu_max_dna=1_000_000,
         gpu_max_protein=200_000, peak_tflops=None, dry_run=False, json=None, smoke_gpu_path_on_cpu=False):
    """Run the benchmarks and print one JSON line per measurement.

    Args:
      n_dna: DNA frames embedded on CPU with the test models.
      n_protein: proteins embedded on CPU with the test models.
      repeats: CPU part: time each way this many times, keep the best.
      cpu_only: skip the GPU part.
      gpu_only: skip the CPU part (the one-command GPU check; about 5 minutes on one H100).
      device: the one GPU the GPU part uses: cuda:N (cuda means cuda:0).
      genomes: FASTA of real genomes; their 500 bp frames (replicated) are the GPU inputs
        (default: random frames of the same shape).
      tokenizer: folder with the real DNABERT-2/DNABERT-S tokenizer.json (realistic token counts;
        default: the test model's tokenizer).
      model_seconds: device seconds of each model-only measurement.
      e2e_seconds: each end-to-end input is sized to take this long at the model-only rate.
      original_seconds: seconds of each run of the original's way.
      gpu_max_dna: at most this many DNA frames end to end.
      gpu_max_protein: at most this many proteins end to end.
      peak_tflops: dense bf16 peak of the GPU for MFU. Default: from the device name (989 for an H100 SXM).
      dry_run: print the plan and its time estimate, run nothing (works without a GPU).
      json: also write the results to this file.
      smoke_gpu_path_on_cpu: run the GPU code on CPU with tiny configs and short times (a check of this script).
    """
    import json as json_lib

    global REPEATS
    REPEATS = int(repeats)
    device = "cuda:0" if str(device) == "cuda" else str(device)
    if not re.fullmatch(r"cuda:\d+", device):
        raise SystemExit(f"--device {device}: the GPU part runs on one GPU, cuda:N")
    kinds = ("dnabert", "esm")
    lines, estimate = plan(kinds, device, model_seconds, e2e_seconds, original_seconds)
    if not cpu_only and not smoke_gpu_path_on_cpu:
        print("\n".join(lines), flush=True)
    if dry_run:
        return
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", "torch": torch.__version__,
               "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    started = time.perf_counter()
    if not gpu_only and not smoke_gpu_path_on_cpu:
        with tempfile.TemporaryDirectory() as workdir:
            results["cpu"] = bench_cpu(int(n_dna), int(n_protein), workdir)
    if smoke_gpu_path_on_cpu:
        shrink = dict(num_hidden_layers=1, hidden_size=64, num_attention_heads=4, intermediate_size=32)
        results["gpu_smoke"] = bench_gpu("cpu", genomes, tokenizer, model_seconds=0.2, e2e_seconds=0.2,
                                         original_seconds=0.2, max_dna=600, max_protein=600, shrink=shrink)
    elif not cpu_only:
        if torch.cuda.is_available():
            results["gpu"] = bench_gpu(device, genomes, tokenizer, float(model_seconds), float(e2e_seconds),
                                       float(original_seconds), int(gpu_max_dna), int(gpu_max_protein), peak_tflops)
            results["gpu"]["planned_seconds"], results["gpu"]["seconds"] = round(estimate), round(time.perf_counter() - started)
        else:
            print("no CUDA GPU: GPU benchmark skipped (--dry_run prints its plan)", file=sys.stderr)
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json_lib.dumps({"done": True, "seconds": round(time.perf_counter() - started, 1)}), flush=True)
    if json:
        with open(str(json), "w") as handle:
            json_lib.dump(results, handle, indent=2)


if __name__ == "__main__":
    fire.Fire(main)
