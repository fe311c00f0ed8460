"""bench/bench_extract.py's GPU part, checked on a CPU: its plan fits a lent device (one GPU, about
5 minutes on an H100, printed before anything runs), and its code runs end to end on tiny configs.
Timings are never asserted (speed goes to BENCHMARKS.md)."""

import json
import os
import re
import subprocess
import sys

from helpers import REPO

BENCH = os.path.join(REPO, "bench", "bench_extract.py")


def bench(*args):
    return subprocess.run([sys.executable, BENCH, *args], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"))


def test_dry_run_prints_the_plan_and_an_estimate_within_5_minutes_and_runs_nothing():
    result = bench("--gpu_only", "--dry_run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("plan on cuda:0: one device, no worker processes")
    parts = {m.group(1): int(m.group(2)) for line in lines for m in [re.match(r"\s+(dnabert|esm): .*: ~(\d+) s$", line)] if m}
    assert set(parts) == {"dnabert", "esm"}
    for kind in ("dnabert", "esm"):
        (line,) = [l for l in lines if l.strip().startswith(kind + ":")]
        for step in ("original's way fp32", "compile and warm-up", "model only", "CUDA events", "end to end"):
            assert step in line, (kind, step)
    startup = int(re.search(r"start-up .*: ~(\d+) s", result.stdout).group(1))
    total = float(re.search(r"estimate: ([\d.]+) min in all", lines[-1]).group(1))
    assert abs(total * 60 - (startup + sum(parts.values()))) <= 6  # the parts add up (rounded to 0.1 min)
    assert total <= 5.0
    assert "done" not in result.stdout and "device_name" not in result.stdout  # nothing ran


def test_one_named_gpu_only():
    assert bench("--gpu_only", "--dry_run", "--device", "cuda").stdout.startswith("plan on cuda:0:")
    assert bench("--gpu_only", "--dry_run", "--device", "cuda:1").stdout.startswith("plan on cuda:1:")
    refused = bench("--gpu_only", "--dry_run", "--device", "cpu")
    assert refused.returncode != 0 and "runs on one GPU, cuda:N" in refused.stderr


def test_the_gpu_code_runs_on_tiny_configs_on_a_cpu():
    """--smoke_gpu_path_on_cpu: the same code (random models, the original's way, the engine's
    Runner timed alone, then extract_embeddings with that Runner swapped in) on tiny configs."""
    result = bench("--smoke_gpu_path_on_cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    found = {}
    for line in result.stdout.splitlines():
        found.update(json.loads(line))
    for kind in ("dnabert", "esm"):
        entry = found[kind]
        assert entry["precision"] == "fp32" and entry["compiled"] is False  # what --precision/--compile auto pick on a CPU
        for key in ("original_tokens_per_s", "model_only_tokens_per_s", "e2e_tokens_per_s", "speedup_vs_original"):
            assert entry[key] > 0, (kind, key)
        assert entry["e2e_sequences"] > 0 and entry["e2e_tokens"] > entry["e2e_sequences"]
        assert entry["min_cosine_vs_fp32"] >= 0.9999  # the engine's vectors are the reference's (fp32 here)
        assert entry["mfu_flops"].startswith("2 x parameters x tokens")
    assert found["done"] is True
