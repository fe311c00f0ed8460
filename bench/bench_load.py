#!/usr/bin/env python3
"""Peak host memory of loading ESM-2 3B: `virnucpro-extract esm --precision bf16 --device cpu` on one protein.

The checkpoint is full size in the real layout (EsmForMaskedLM keys, fp32 safetensors, about
10.6 GiB) with random weights, written tensor by tensor into --workdir (never held whole in
memory) and deleted afterwards unless --keep. The tool runs as a child process; its peak resident
memory (ru_maxrss of the child) is reported next to the bf16 weights' size. --code DIR runs
another checkout of virnucpro (e.g. an export of an older commit) for a before/after figure.

Usage: python bench/bench_load.py --workdir DIR [--code DIR] [--keep] [--json_path FILE]
"""

import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import time

import fire

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

#: facebook/esm2_t36_3B_UR50D's architecture.
ESM2_3B = dict(hidden_size=2560, num_hidden_layers=36, num_attention_heads=40, intermediate_size=10240, vocab_size=33,
               max_position_embeddings=1026, position_embedding_type="rotary", emb_layer_norm_before=False,
               token_dropout=True, layer_norm_eps=1e-5, mask_token_id=32, pad_token_id=1,
               architectures=["EsmForMaskedLM"])


def write_checkpoint(folder):
    """A random ESM-2 3B checkpoint in the real layout, written one tensor at a time; returns its size in bytes."""
    import torch
    from transformers import EsmConfig, EsmForMaskedLM

    from virnucpro.models.make_test_models import make_test_models

    os.makedirs(folder, exist_ok=True)
    tokens = make_test_models(os.path.join(folder, "tiny"))["esm"]
    for name in os.listdir(tokens):  # the vocabulary files of the test model (the real ESM-2 alphabet)
        if name not in ("config.json", "model.safetensors"):
            shutil.copy(os.path.join(tokens, name), folder)
    shutil.rmtree(os.path.join(folder, "tiny"))
    config = EsmConfig(**ESM2_3B)
    config.save_pretrained(folder)
    with torch.device("meta"):
        shapes = {name: tuple(t.shape) for name, t in EsmForMaskedLM(config).state_dict().items()
                  if not name.endswith(("position_ids", "inv_freq"))}
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 4 * int(torch.Size(shape).numel())
        header[name] = dict(dtype="F32", shape=list(shape), data_offsets=[offset, offset + size])
        offset += size
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    generator = torch.Generator().manual_seed(0)
    with open(os.path.join(folder, "model.safetensors"), "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)) + encoded)
        for name, shape in shapes.items():
            handle.write((torch.randn(shape, generator=generator) * 0.02).numpy().tobytes())
    return offset


def measure(folder, workdir, code):
    """(peak RSS in GiB, seconds) of one `extract esm --precision bf16 --device cpu` run in a child process."""
    protein = os.path.join(workdir, "one.faa")
    with open(protein, "w") as handle:
        handle.write(">p1\nMKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEGLYTHMKALRPDEDRLSPLHSVYVDQWDWERVMGDGERQFSTLKSTVEAIWAGIKATEAAVSEEFGLAPFLPDQIHFVHSQELLSRYPDLDAKGRERAIAKDLGAVFLVGIGGKLSDGHRHDVRAPDYDDWUAIPRT\n")
    output = os.path.join(workdir, "one.h5")
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import virnucpro; print(virnucpro.__file__, file=sys.stderr); "
              "from virnucpro.stages.extract import extract; "
              "extract('esm', sys.argv[2], sys.argv[3], model=sys.argv[4], device='cpu', precision='bf16', overwrite=True)")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", script, code, protein, output, folder], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(result.stderr)
    print(result.stderr.splitlines()[0], file=sys.stderr)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, seconds


def main(workdir, code=REPO, keep=False, json_path=None):
    folder = os.path.join(workdir, "esm2_3b_random")
    started = time.perf_counter()
    size = write_checkpoint(folder) if not os.path.exists(os.path.join(folder, "model.safetensors")) else \
        os.path.getsize(os.path.join(folder, "model.safetensors"))
    written = time.perf_counter() - started
    try:
        peak, seconds = measure(folder, workdir, code)
    finally:
        if not keep:
            shutil.rmtree(folder)
    results = dict(checkpoint_gib=round(size / 2**30, 2), bf16_weights_gib=round(size / 2 / 2**30, 2),
                   peak_rss_gib=round(peak, 2), ratio_to_bf16=round(peak / (size / 2 / 2**30), 2),
                   run_s=round(seconds, 1), checkpoint_write_s=round(written, 1), code=code,
                   load_average=[round(x, 2) for x in os.getloadavg()], cpus=os.cpu_count())
    print(json.dumps(results))
    if json_path:
        with open(json_path, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    fire.Fire(main)
