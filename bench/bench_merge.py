#!/usr/bin/env python3
"""Benchmark: whole-process merge of N rows, virnucpro-merge vs the original tool's way.

The original kept DNABERT-S embeddings as Python lists of floats inside a `.pt` pickle, ESM-2
embeddings as a list of tensors, built per-id dicts, concatenated row by row, stacked and saved
a `.pt`. Both are timed as whole processes (interpreter start, imports, reading, writing), in the
same run on the same inputs, interleaved, best and median of `--repeats`. Peak memory of each is
measured in a separate pass. All outputs are checked to hold the same features.

    python bench/bench_merge.py [--rows 8000] [--repeats 5] [--workdir bench/out/merge]
    python bench/bench_merge.py --rows 100000 --repeats 1 --skip_original   # memory stays flat
"""

import os
import platform
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The original's merge, reproduced step for step (torch.load both, dicts, per-row cat, stack, save).
ORIGINAL_MERGE = r"""
import sys, torch
dnabert = torch.load(sys.argv[1], weights_only=False)
esm = torch.load(sys.argv[2], weights_only=False)
nucleotide_by_id = {i: torch.tensor(d["mean_representation"]) for i, d in zip(dnabert["nucleotide"], dnabert["data"])}
protein_by_id = dict(zip(esm["proteins"], esm["data"]))
rows = []
for i in dnabert["nucleotide"]:
    if i in protein_by_id and i in nucleotide_by_id:
        rows.append(torch.cat((nucleotide_by_id[i], protein_by_id[i]), dim=-1))
    else:
        print(f"Warning: {i} not found in both datasets")
torch.save({"ids": dnabert["nucleotide"], "data": torch.stack(rows)}, sys.argv[3])
"""

# Runs a command and prints its peak RSS; small itself, so the child's peak is not inflated by
# the memory of a large parent at fork time.
PEAK_RSS = r"""
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""

INPUTS = {"n_pt": "bench_DNABERT_S.pt", "p_pt": "bench_ESM.pt", "n_h5": "bench.nucleotide.h5", "p_h5": "bench.protein.h5"}


def make_inputs(workdir, rows, with_pt, seed=0):
    """Random embeddings in both formats (run in a child process, so this one stays small)."""
    import h5py
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = [f"contig{i // 12}_chunk_{i // 6 % 2 + 1}{'FR'[i % 6 // 3]}{i % 3 + 1}" for i in range(rows)]
    nucl = rng.standard_normal((rows, 768)).astype(np.float32)
    prot = rng.standard_normal((rows, 2560)).astype(np.float32)
    paths = {k: os.path.join(workdir, v) for k, v in INPUTS.items()}
    if with_pt:
        import torch

        dnabert = [{"label": i, "mean_representation": torch.from_numpy(v).tolist()} for i, v in zip(ids, nucl)]
        torch.save({"nucleotide": ids, "data": dnabert}, paths["n_pt"])
        torch.save({"proteins": ids, "data": [torch.from_numpy(v.copy()) for v in prot]}, paths["p_pt"])
    for key, matrix, kind in (("n_h5", nucl, "dnabert"), ("p_h5", prot, "esm")):
        with h5py.File(paths[key], "w") as out:
            out.create_dataset("ids", data=ids, dtype=h5py.string_dtype("utf-8"))
            out.create_dataset("embeddings", data=matrix)
            out.attrs.update(model=f"bench-{kind}", kind=kind, pooling="mean", virnucpro_version="bench")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(cmd, env, output):
    """Seconds for one whole-process run, from a clean start (no earlier output to replace)."""
    if os.path.exists(output):
        os.remove(output)
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def peak_mib(cmd, env, output):
    if os.path.exists(output):
        os.remove(output)
    result = subprocess.run([sys.executable, "-c", PEAK_RSS, *cmd], env=env, check=True, capture_output=True, text=True)
    return int(result.stdout.split()[-1]) / 1024


def check_outputs(paths, out, skip_original):
    import h5py
    import numpy as np

    with h5py.File(paths["n_h5"], "r") as n, h5py.File(paths["p_h5"], "r") as p:
        expected = np.concatenate([n["embeddings"][()], p["embeddings"][()]], axis=1)
    for name, path in out.items():
        if name.endswith(".h5") and os.path.exists(path):
            with h5py.File(path, "r") as f:
                assert np.array_equal(f["features"][()], expected), name
    if not skip_original:
        import torch

        assert np.array_equal(torch.load(out["orig_merged.pt"], weights_only=True)["data"].numpy(), expected)


def main(rows=8000, repeats=5, skip_original=False, workdir=os.path.join(REPO, "bench", "out", "merge"),
         make_inputs_only=False):
    """Merge benchmark. skip_original: only virnucpro-merge on HDF5 (large --rows: memory check)."""
    os.makedirs(workdir, exist_ok=True)
    if make_inputs_only:
        make_inputs(workdir, rows, with_pt=not skip_original)
        return
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    maker = [sys.executable, os.path.abspath(__file__), "--make_inputs_only", "--rows", str(rows), "--workdir", workdir]
    subprocess.run(maker + (["--skip_original"] if skip_original else []), check=True, env=env)

    paths = {k: os.path.join(workdir, v) for k, v in INPUTS.items()}
    tool = [sys.executable, os.path.join(REPO, "bin", "virnucpro-merge")]
    out = {name: os.path.join(workdir, name) for name in ("orig_merged.pt", "h5_merged.h5", "pt_merged.h5")}
    runs = {
        "original (.pt, Python-list embeddings)": (
            [sys.executable, "-c", ORIGINAL_MERGE, paths["n_pt"], paths["p_pt"], out["orig_merged.pt"]], out["orig_merged.pt"]),
        "virnucpro-merge (HDF5 in/out)": (
            tool + ["--nucleotide", paths["n_h5"], "--protein", paths["p_h5"], "--output", out["h5_merged.h5"]], out["h5_merged.h5"]),
        "virnucpro-merge (original .pt in)": (
            tool + ["--nucleotide", paths["n_pt"], "--protein", paths["p_pt"], "--output", out["pt_merged.h5"]], out["pt_merged.h5"]),
    }
    if skip_original:
        runs = {k: v for k, v in runs.items() if "HDF5" in k}
    times = {name: [] for name in runs}
    for _ in range(repeats):  # interleaved, so load from other processes hits all runs alike
        for name, (cmd, output) in runs.items():
            times[name].append(timed(cmd, env, output))
    peak = {name: peak_mib(cmd, env, output) for name, (cmd, output) in runs.items()}
    check_outputs(paths, out, skip_original)

    best = {name: min(values) for name, values in times.items()}
    median = {name: sorted(values)[len(values) // 2] for name, values in times.items()}
    baseline = best.get("original (.pt, Python-list embeddings)")
    print(f"merge of {rows} rows (768 + 2560 columns), whole process, best of {repeats} interleaved runs")
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print("| run | best s | median s | speed-up (best) | peak RSS MiB |")
    print("|---|---|---|---|---|")
    for name, seconds in best.items():
        speedup = f"{baseline / seconds:.1f}x" if baseline else "-"
        print(f"| {name} | {seconds:.2f} | {median[name]:.2f} | {speedup} | {peak[name]:.0f} |")
    print("outputs identical: yes")


if __name__ == "__main__":
    import fire

    fire.Fire(main)
