"""The VirNucPro MLP (SPEC 1.6) and a loader for its weights that never runs pickled code.

The published `300_model.pth` / `500_model.pth` are whole modules pickled by the training script,
so their class is `__main__.MLPClassifier`. They are read with `torch.load(weights_only=True)`,
whose unpickler only builds tensors, plain containers and the allow-listed classes below: the
pickled class name is mapped to an inert stand-in, its tensors are taken out as a state dict and
loaded strictly into this module's own MLP. Plain state dicts and safetensors files load too.
"""

import functools
import os
import re
import struct

from ..errors import UserError
from ..pt_io import one_line, torch_load_problem

#: Class 0 and class 1 of the published models: score1 and score2 are their softmax probabilities.
CLASS_NAMES = ("others", "virus")

_EXPECTED_KEYS = {
    "hidden_layer.weight",
    "hidden_layer.bias",
    "bn1.weight",
    "bn1.bias",
    "bn1.running_mean",
    "bn1.running_var",
    "output_layer.weight",
    "output_layer.bias",
}
_OPTIONAL_KEYS = {"bn1.num_batches_tracked"}


@functools.lru_cache(maxsize=None)
def _module_classes():
    """(MLPClassifier, its inert pickled stand-in): torch classes made on first use, so that importing
    this module (every tool's --help does) does not import torch."""
    import torch.nn.functional as F
    from torch import nn

    class MLPClassifier(nn.Module):
        """Linear(input, hidden) -> BatchNorm1d -> ReLU -> Dropout(0.5) -> Linear(hidden, 2), as trained."""

        def __init__(self, input_dim=3328, hidden_dim=512, num_class=2):
            super().__init__()
            self.hidden_layer = nn.Linear(input_dim, hidden_dim)
            self.bn1 = nn.BatchNorm1d(hidden_dim)
            self.output_layer = nn.Linear(hidden_dim, num_class)
            self.dropout = nn.Dropout(0.5)

        def forward(self, x):
            x = self.hidden_layer(x)
            x = self.bn1(x)
            x = F.relu(x)
            x = self.dropout(x)
            return self.output_layer(x)

        @property
        def input_dim(self):
            return self.hidden_layer.in_features

    class PickledMLPClassifier(nn.Module):
        """Inert stand-in for the training script's `__main__.MLPClassifier`: only holds tensors.

        The weights-only unpickler creates it without calling __init__ and fills its attribute
        dictionary; nothing of it is ever run, its state dict is copied into a fresh MLPClassifier.
        """

    MLPClassifier.__qualname__ = "MLPClassifier"  # pickled by reference as virnucpro.models.classifier.MLPClassifier
    return MLPClassifier, PickledMLPClassifier


def __getattr__(name):
    if name == "MLPClassifier":
        return _module_classes()[0]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _safe_globals():
    from torch import nn

    return [
        (_module_classes()[1], "__main__.MLPClassifier"),
        nn.Linear,
        nn.BatchNorm1d,
        nn.Dropout,
        nn.ReLU,
    ]


def _is_safetensors(path):
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 0 < header_len < (1 << 30) and head[8:9] == b"{"


def _metadata(obj):
    """What a classifier file records about itself: `virnucpro` = {"chunk_size": N, "test_model": bool}
    (virnucpro-make-test-models writes it); the published files record nothing."""
    found = obj.get("virnucpro") if isinstance(obj, dict) else getattr(obj, "__dict__", {}).get("virnucpro")
    return dict(found) if isinstance(found, dict) else {}


def _read_checkpoint(path):
    """(the tensors of a classifier file as a flat {name: tensor} dict, its recorded metadata)."""
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file")
    if os.path.isdir(path):
        raise UserError(f"{path}: is a folder, not a classifier file")
    if _is_safetensors(path):
        from safetensors.torch import load_file

        from safetensors import safe_open

        try:
            with safe_open(path, framework="pt") as handle:
                recorded = handle.metadata() or {}
            metadata = {key[len("virnucpro_"):]: value for key, value in recorded.items() if key.startswith("virnucpro_")}
            if "chunk_size" in metadata:
                metadata["chunk_size"] = int(metadata["chunk_size"])
            return load_file(path, device="cpu"), metadata
        except Exception as err:
            raise UserError(f"{path}: unreadable safetensors file ({one_line(err)})") from None
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != b"PK\x03\x04" and not magic.startswith(b"\x80"):
        raise UserError(
            f"{path}: not a VirNucPro classifier: neither a PyTorch file (.pth/.pt) nor safetensors"
        )
    import torch

    try:
        with torch.serialization.safe_globals(_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(
            f"{path}: not a VirNucPro classifier (a pickled MLPClassifier, a state dict or safetensors) "
            f"that can be loaded without running code: {torch_load_problem(err)}"
        ) from None
    metadata = _metadata(obj)
    for wrapper in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and wrapper in obj and len(obj) <= 8:
            obj = obj[wrapper]
            break
    metadata = metadata or _metadata(obj)
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict(), metadata
    if isinstance(obj, dict) and obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        return obj, metadata
    raise UserError(
        f"{path}: not a VirNucPro classifier: expected a pickled MLPClassifier, a state dict or "
        f"safetensors, got {type(obj).__name__}"
    )


def load_classifier(path):
    """Load classifier weights from `path` into an MLPClassifier in eval mode, strictly."""
    import torch

    path = str(path)
    state, metadata = _read_checkpoint(path)
    state = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}
    missing = sorted(_EXPECTED_KEYS - set(state))
    unexpected = sorted(set(state) - _EXPECTED_KEYS - _OPTIONAL_KEYS)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing))
        if unexpected:
            parts.append("unexpected " + ", ".join(unexpected))
        raise UserError(f"{path}: not a VirNucPro MLP classifier: {'; '.join(parts)}")
    hidden_weight, output_weight = state["hidden_layer.weight"], state["output_layer.weight"]
    if hidden_weight.ndim != 2 or output_weight.ndim != 2:
        raise UserError(f"{path}: layer weights are not matrices")
    hidden_dim, input_dim = hidden_weight.shape
    num_class = output_weight.shape[0]
    if num_class != len(CLASS_NAMES):
        raise UserError(f"{path}: output layer has {num_class} classes, expected 2 (others, virus)")
    model = _module_classes()[0](input_dim, hidden_dim, num_class)
    state.setdefault("bn1.num_batches_tracked", torch.tensor(0, dtype=torch.long))
    try:
        model.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as err:
        raise UserError(f"{path}: weights do not fit the VirNucPro MLP: {one_line(err)}") from None
    model.virnucpro = metadata  # what the file records about itself (chunk size, test model), or {}
    return model.eval()


def trained_chunk_size(path, model):
    """(chunk size, evidence) of what a classifier file says it was trained on: its recorded
    metadata, else its published file name (300_model.pth, 500_model.pth), else (None, None)."""
    size = model.virnucpro.get("chunk_size")
    if size:
        return int(size), "its recorded metadata"
    match = re.fullmatch(r"(\d+)_model\.pth", os.path.basename(str(path)))
    if match:
        return int(match.group(1)), "its file name"
    return None, None


def match_trained_chunk_size(path, model, chunk_size, any_chunk_size=False, option="--chunk_size"):
    """The run's chunk size (`results.check_chunk_size`) checked against the one the classifier
    says it was trained on: another is refused (one line) unless `any_chunk_size`; None is taken
    from the classifier when it says. Returns the chunk size (None when neither says)."""
    from ..results import check_chunk_size

    trained, evidence = trained_chunk_size(path, model)
    if chunk_size is None:
        return check_chunk_size(trained, any_chunk_size, option) if trained else None
    chunk_size = check_chunk_size(chunk_size, any_chunk_size, option)
    if trained and trained != chunk_size and not any_chunk_size:
        raise UserError(f"{option} {chunk_size} does not match the classifier {path}: {evidence} says it was "
                        f"trained on {trained} bp chunks (use the {chunk_size}_model.pth classifier, or "
                        f"--any_chunk_size to run anyway)")
    return chunk_size


def predict_proba(model, features, device="cpu"):
    """Softmax class probabilities (float32 numpy [N, 2]) for float32 features [N, D]."""
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        x = torch.from_numpy(features).to(device)
        return F.softmax(model(x), dim=1).cpu().numpy()
