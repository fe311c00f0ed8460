#!/usr/bin/env python3
"""Host/device overlap and host memory of `virnucpro-extract`'s engine, on CPU, with a simulated device.

The stand-in device's forward sleeps padded_tokens / rate seconds (time.sleep releases the GIL, as
a GPU's asynchronous work would) and returns zeros; everything else is the real engine: two FASTA
passes, windows, tokenization, padding, batching, the writer thread and the HDF5 file.

overlap: frames and proteins of real genomes (translated with virnucpro's translate code at 500 bp,
  replicated to --n_frames), DNABERT-S tokens from a real DNABERT-2 tokenizer.json (--tokenizer);
  reports simulated device time / wall (1.0 = the device never waits for the host).
memory: peak RSS (one fresh process each) embedding N short sequences, for each N in --sizes.

Usage: python bench/bench_extract_overlap.py --genomes GENOMES.fa --tokenizer DIR
         [--n_frames 200000] [--dnabert_rate 1.5e6] [--esm_rate 1e5] [--sizes 40000,120000] [--json FILE]
"""

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import fire
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from virnucpro.engine import embedder  # noqa: E402
from virnucpro.stages import extract  # noqa: E402
from virnucpro.fasta import read_fasta  # noqa: E402
from virnucpro.models.make_test_models import make_test_models  # noqa: E402
from virnucpro.stages.translate import translate_records  # noqa: E402


class SimulatedDevice:
    """Stands in for a GPU: busy for padded_tokens / rate seconds per batch, the GIL released."""

    def __init__(self, rate, dim):
        import torch

        from virnucpro.engine.pooling import OomSplitter

        self.rate, self.busy, self.tokens = rate, 0.0, 0
        self.output = torch.zeros(1 << 14, dim)  # made once: the host should not pay for the device's output
        self.forward = OomSplitter(self._run, "cuda")  # as embedder.Runner has (it never runs out here)

    def __call__(self, ids, mask):
        return self.forward(ids, mask)

    def _run(self, ids, mask):
        seconds = ids.numel() / self.rate
        time.sleep(seconds)
        self.busy += seconds
        self.tokens += ids.numel()
        return self.output[: len(ids)]


def simulate(rate):
    """Make the engine load a SimulatedDevice instead of a model; returns the list it lands in."""
    devices = []

    def load_runner(kind, folder, device, precision, compile=False):
        devices.append(SimulatedDevice(rate, extract.model_dim(kind, folder)))
        return devices[-1]

    embedder.load_runner = load_runner
    return devices


def model_folders(workdir, tokenizer):
    """The test models' folders, DNABERT's with the real tokenizer (realistic token counts)."""
    models = make_test_models(os.path.join(workdir, "models"))
    shutil.copy(os.path.join(tokenizer, "tokenizer.json"), os.path.join(models["dnabert"], "tokenizer.json"))
    return models


def real_frames(genomes, n_frames, workdir):
    """Nucleotide and protein FASTA of --n_frames frames: the genomes' 500 bp frames, replicated."""
    frames, _, _ = translate_records(list(read_fasta(genomes)), 500)
    paths = os.path.join(workdir, "frames.fa"), os.path.join(workdir, "frames.faa")
    with open(paths[0], "w") as dna, open(paths[1], "w") as protein:
        for number in range(n_frames):
            name, nucleotide, amino_acids = frames[number % len(frames)]
            dna.write(f">{name}_{number}\n{nucleotide}\n")
            protein.write(f">{name}_{number}\n{amino_acids}\n")
    return paths, len(frames)


def overlap(genomes, tokenizer, n_frames, dnabert_rate, esm_rate, threads):
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        models = model_folders(workdir, tokenizer)
        (dna, protein), distinct = real_frames(genomes, n_frames, workdir)
        from virnucpro.models.dnabert import DnabertTokenizer

        sample = [seq for _, seq in read_fasta(dna)][:20000]
        start = time.perf_counter()
        tokens = sum(map(len, DnabertTokenizer(models["dnabert"]).encode(sample)))
        results["dna_tokenizer_tokens_per_s"] = round(tokens / (time.perf_counter() - start))
        print(json.dumps({"dna_tokenizer_tokens_per_s (all CPUs, the host's ceiling for DNABERT-S)":
                          results["dna_tokenizer_tokens_per_s"]}), flush=True)
        for kind, source, rate in (("dnabert", dna, dnabert_rate), ("esm", protein, esm_rate)):
            devices = simulate(rate)
            output = os.path.join(workdir, f"{kind}.h5")
            start = time.perf_counter()
            extract.extract_embeddings(kind, source, output, model=models[kind], device="cpu", threads=threads,
                                       batch_tokens=extract.DEFAULT_BATCH_TOKENS[kind, "cuda"])
            wall = time.perf_counter() - start
            device = devices[0]
            results[kind] = dict(frames=n_frames, distinct_frames=distinct, rate_tokens_per_s=rate,
                                 padded_tokens=device.tokens, device_s=round(device.busy, 2), wall_s=round(wall, 2),
                                 device_over_wall=round(device.busy / wall, 3))
            print(json.dumps({kind: results[kind]}), flush=True)
    return results


def one_memory_run(n, workdir, folder):
    """(In a fresh process) peak RSS in bytes embedding `n` 150 bp sequences with a fast simulated device."""
    rng = np.random.default_rng(0)
    source = os.path.join(workdir, f"short_{n}.fa")
    letters = np.array(list("ACGT"))
    with open(source, "w") as handle:
        for number in range(n):
            handle.write(f">contig_{number}_chunk_1F1\n{''.join(rng.choice(letters, 150))}\n")
    simulate(1e12)
    start = time.perf_counter()
    extract.extract_embeddings("dnabert", source, os.path.join(workdir, f"short_{n}.h5"), model=folder,
                               device="cpu", batch_tokens=65536)
    print(json.dumps(dict(sequences=n, peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                          seconds=round(time.perf_counter() - start, 1))))


def memory(sizes, dim):
    """Peak RSS per size, each in a fresh process (the model folder is made here, outside the measure)."""
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        folder = make_test_models(os.path.join(workdir, "models"))["dnabert"]
        config = os.path.join(folder, "config.json")
        with open(config) as handle:
            values = json.load(handle)
        values["hidden_size"] = int(dim)
        with open(config, "w") as handle:
            json.dump(values, handle)
        for n in sizes:
            out = subprocess.run([sys.executable, __file__, "one_memory_run", str(n), workdir, folder],
                                 capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
            for name in os.listdir(workdir):
                if name.startswith("short_"):
                    os.remove(os.path.join(workdir, name))
    for small, large in zip(rows, rows[1:]):
        large["bytes_per_extra_sequence"] = round((large["peak_rss_bytes"] - small["peak_rss_bytes"])
                                                  / (large["sequences"] - small["sequences"]), 1)
        print(json.dumps(dict(from_n=small["sequences"], to_n=large["sequences"],
                              bytes_per_extra_sequence=large["bytes_per_extra_sequence"])), flush=True)
    return rows


def main(genomes=None, tokenizer=None, n_frames=200000, dnabert_rate=1.5e6, esm_rate=1e5, threads=None,
         sizes="40000,120000", dim=768, skip_overlap=False, skip_memory=False, json=None):
    """Print one JSON line per measurement.

    Args:
      genomes: FASTA of real genomes to translate (frames for the overlap run).
      tokenizer: folder with a real DNABERT-2/DNABERT-S tokenizer.json.
      n_frames: frames (and proteins) embedded in the overlap run.
      dnabert_rate: simulated DNABERT-S device speed, padded tokens/s (H100-like: 1.5e6).
      esm_rate: simulated ESM-2 3B device speed, padded tokens/s (H100-like: 1e5).
      threads: torch threads (default: all CPUs this process may use).
      sizes: comma-separated sequence counts for the memory runs.
      dim: embedding width in the memory runs (768 = DNABERT-S).
      skip_overlap / skip_memory: leave a part out.
      json: also write the results to this file.
    """
    import json as json_lib

    results = dict(machine=f"{os.cpu_count()} CPUs", load_average_at_start=[round(x, 2) for x in os.getloadavg()])
    if not skip_overlap:
        results["overlap"] = overlap(genomes, tokenizer, int(n_frames), float(dnabert_rate), float(esm_rate), threads)
    if not skip_memory:
        sizes = [int(n) for n in str(sizes).split(",")] if not isinstance(sizes, tuple) else list(sizes)
        results["memory"] = memory(sizes, dim)
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if json:
        with open(str(json), "w") as handle:
            json_lib.dump(results, handle, indent=2)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "one_memory_run":
        one_memory_run(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        fire.Fire(main)
