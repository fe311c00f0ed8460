"""Checkpoint tensors read one at a time, each cast straight to the compute dtype on its device.

A model is built on the `meta` device (no memory) and its weights are assigned as they are read,
so the host never holds the whole model in the checkpoint's dtype beside the model in the compute
dtype (SPEC 1.3/1.4 loaders; issue: a 3B fp32 checkpoint loaded in bf16 peaked at 3x its bf16 size).
safetensors files are read with plain reads, not memory-mapped: pages of a mapped 11 GB file count
in the process's resident memory until it is unmapped. `.bin` files are read without executing
pickled code (`weights_only`).
"""

import json
import struct

import torch

from ..errors import UserError

#: safetensors dtype names -> torch dtypes.
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_tensors(paths, device="cpu", dtype=None):
    """(name, tensor) for every tensor of the weight files `paths`, one at a time, on `device`;
    floating-point tensors are cast to `dtype` (when given) as they are read."""
    for path in paths:
        reader = _safetensors if path.endswith(".safetensors") else _torch_file
        for name, tensor in reader(path):
            if dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(device=device, dtype=dtype)
            yield name, tensor.to(device)


def _safetensors(path):
    try:
        with open(path, "rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(size))
            start = 8 + size
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                first, end = info["data_offsets"]
                handle.seek(start + first)
                data = torch.empty(end - first, dtype=torch.uint8)
                if end > first and handle.readinto(data.numpy()) != end - first:
                    raise ValueError(f"{name} is cut short")
                yield name, data.view(SAFETENSORS_DTYPES[info["dtype"]]).reshape(info["shape"])
    except (ValueError, KeyError, struct.error, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a readable safetensors file ({err})") from None


def _torch_file(path):
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # pickle errors come in many types
        raise UserError(f"{path}: cannot read weights safely: {err}") from None
    for name in list(state):
        yield name, state.pop(name)


def assign_weights(model, tensors, folder, what, ignore=lambda name: False, rebuilt=lambda name: False):
    """Assign `tensors` ((name, tensor) pairs) to the meta-built `model`'s parameters and persistent
    buffers by name. Missing weights (but those the caller rebuilds: `rebuilt`), and unexpected ones
    that `ignore` does not accept, are an error naming them; so is a shape that differs from the module's."""
    expected = {name: value for name, value in model.state_dict(keep_vars=True).items() if not rebuilt(name)}
    state, unexpected = {}, []
    for name, tensor in tensors:
        if name not in expected:
            if not ignore(name):
                unexpected.append(name)
            continue
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise UserError(f"{folder}: weight {name} has shape {tuple(tensor.shape)}, "
                            f"config.json implies {tuple(expected[name].shape)}")
        state[name] = tensor
    missing = sorted(set(expected) - set(state))
    if missing or unexpected:
        parts = (["missing weights: " + ", ".join(missing)] if missing else []) + (
            ["unexpected weights: " + ", ".join(sorted(unexpected))] if unexpected else [])
        raise UserError(f"{folder}: checkpoint does not match {what} ({'; '.join(parts)})")
    model.load_state_dict(state, strict=False, assign=True)
    return model
