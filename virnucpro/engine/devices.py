"""Where and how a model runs: the devices, the precision and whether to compile. The one place
these are decided (extract's engine, predict's run record and virnucpro-check all ask here)."""

import collections
import logging
import os
import re

from ..errors import UserError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPILE = ("auto", "on", "off")

#: What a run uses: `devices` (one name per worker), their `type` (cpu or cuda), the `precision`
#: and whether to `compile` the model, each resolved from what the user asked.
DevicePlan = collections.namedtuple("DevicePlan", "devices type precision compile")

_WARNED = set()


def plan(device="auto", gpus=None, workers=1, precision="auto", compile="auto"):
    """The devices of a run and, decided for their type, its precision and compile choice."""
    devices = plan_devices(device, gpus, workers)
    device_type = "cuda" if devices[0].startswith("cuda") else "cpu"
    return DevicePlan(devices, device_type, resolve_precision(precision, device_type),
                      resolve_compile(compile, device_type))


def warn_if_gpu_unused():
    """--device auto falling back to the CPU on a machine with an NVIDIA GPU (its driver in /proc,
    or nvidia-smi on PATH) because this torch is a CPU-only build: one warning line, once."""
    import shutil

    import torch

    if "gpu" in _WARNED or torch.version.cuda is not None:
        return
    if os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi"):
        _WARNED.add("gpu")
        log.warning("this machine has an NVIDIA GPU but torch %s is a CPU-only build, so --device auto runs on "
                    "the CPU; install torch's CUDA build to use the GPU (README, Quick start)", torch.__version__)


def plan_devices(device="auto", gpus=None, workers=1):
    """Device names, one per worker: CPU workers, every visible GPU (or --gpus N), or one named GPU."""
    import torch

    device = str(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            warn_if_gpu_unused()
    if device == "cpu":
        return ["cpu"] * max(1, int(workers or 1))
    if not re.fullmatch(r"cuda(:\d+)?", device):
        raise UserError(f"--device {device}: use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU is visible")
    visible = torch.cuda.device_count()
    if ":" in device:
        if int(device.split(":")[1]) >= visible:
            raise UserError(f"--device {device}: only {visible} GPU(s) visible")
        return [device]
    count = int(gpus or visible)
    if not 1 <= count <= visible:
        raise UserError(f"--gpus {gpus}: {visible} GPU(s) visible")
    return [f"cuda:{index}" for index in range(count)]


def resolve_precision(precision, device_type):
    """auto: bf16 on a GPU (tensor cores; cosine >= 0.999 to fp32), fp32 on a CPU (exact)."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device_type == "cuda" else "fp32"
    return precision


def resolve_compile(compile, device_type):
    """auto: torch.compile the model on a GPU (fused kernels pay there; on a CPU compiling costs more than it saves)."""
    value = {True: "on", False: "off"}.get(compile, compile)
    if value not in COMPILE:
        raise UserError(f"--compile {compile}: use one of {', '.join(COMPILE)}")
    return device_type == "cuda" if value == "auto" else value == "on"
