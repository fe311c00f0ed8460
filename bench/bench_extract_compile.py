#!/usr/bin/env python3
"""ESM-2 through `virnucpro-extract` on CPU: torch.compile vs eager, speed and recompiles.

Proteins: the 500 bp frames' translations of real genomes (--genomes), i.e. the length
distribution a real run sees. Model: the tiny ESM-2 test model (hidden 2560, 1 layer) or
--model DIR. Each way embeds the same file twice in one process: the first run includes
compilation, the second is the steady state. Recompiles: graphs dynamo compiled in all.

Usage: python bench/bench_extract_compile.py --genomes GENOMES.fa [--n 2000] [--model DIR] [--json FILE]
"""

import json
import os
import sys
import tempfile
import time

import fire

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from virnucpro.embeddings_h5 import read_embeddings  # noqa: E402
from virnucpro.stages.extract import Embedder  # noqa: E402
from virnucpro.fasta import read_fasta  # noqa: E402
from virnucpro.models.make_test_models import make_test_models  # noqa: E402
from virnucpro.stages.translate import translate_records  # noqa: E402


def main(genomes, n=2000, model=None, batch_tokens=4096, json_path=None):
    import numpy as np
    import torch
    from torch._dynamo.utils import counters

    results = dict(load_average_at_start=[round(x, 2) for x in os.getloadavg()], torch=torch.__version__)
    with tempfile.TemporaryDirectory() as workdir:
        model = model or make_test_models(os.path.join(workdir, "models"))["esm"]
        frames, _, _ = translate_records(list(read_fasta(genomes)), 500)
        picked = [frames[number * len(frames) // n % len(frames)] for number in range(n)]  # spread over all genomes
        source = os.path.join(workdir, "proteins.faa")
        with open(source, "w") as handle:
            for number, (name, _, protein) in enumerate(picked):
                handle.write(f">{name}_{number}\n{protein}\n")
        lengths = [len(protein) for _, _, protein in picked]
        results["proteins"] = dict(n=n, mean_length=round(float(np.mean(lengths)), 1), min_length=min(lengths),
                                   max_length=max(lengths), distinct_lengths=len(set(lengths)))
        vectors = {}
        for way in ("off", "on"):
            counters.clear()
            with Embedder("esm", model=model, device="cpu", compile=way, batch_tokens=batch_tokens) as embedder:
                times = []
                for run in range(2):
                    output = os.path.join(workdir, f"{way}{run}.h5")
                    start = time.perf_counter()
                    embedder.embed(source, output)
                    times.append(round(time.perf_counter() - start, 2))
                vectors[way] = read_embeddings(output)[1]
            results[f"compile_{way}"] = dict(first_run_s=times[0], second_run_s=times[1],
                                             graphs_compiled=int(counters["stats"].get("unique_graphs", 0)))
            print(json.dumps({way: results[f"compile_{way}"]}), flush=True)
        a, b = vectors["off"], vectors["on"]
        results["min_cosine_compiled_vs_eager"] = float((np.sum(a * b, 1) / np.linalg.norm(a, axis=1)
                                                         / np.linalg.norm(b, axis=1)).min())
        results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(results), flush=True)
    if json_path:
        with open(json_path, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    fire.Fire(main)
