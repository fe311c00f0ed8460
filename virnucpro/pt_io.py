"""Safe, fast reading of the original VirNucPro tool's `.pt` files (SPEC 2), without torch.

The original saved plain containers with `torch.save`:
- DNABERT-S: `{'nucleotide': [ids], 'data': [{'label': id, 'mean_representation': [floats]}]}`
- ESM-2:     `{'proteins': [ids], 'data': [1-D float tensors]}`
- merged:    `{'ids': [ids], 'data': 2-D float tensor}`

A `.pt` file is a zip archive holding `data.pkl` and one raw file per tensor storage. It is read
here with the C unpickler restricted to an allow-list: plain containers, and tensors rebuilt
as numpy arrays straight from their storage bytes. Any other global (the way a malicious pickle
runs code) is refused. This is also what makes it fast: torch's own weights-only unpickler is
pure Python and takes many seconds on the millions of floats of a DNABERT-S file, and torch is
not even imported. Files in torch's legacy (pre-1.6, non-zip) format go through
`torch.load(weights_only=True)`.

Memory is bounded by the file's size: what a file asks to allocate (archive members, tensor
copies, the final matrix) may not exceed `MAX_EXPANSION` times its size, so a small crafted file
(one storage viewed thousands of times or broadcast, rows sharing one list, compressed members,
huge declared lengths) is refused instead of filling the memory.
"""

import collections
import io
import itertools
import os
import pickle
import zipfile

import numpy as np

from .errors import UserError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: A genuine file's arrays take at most this many times its size (fp16 or int8 storages widened
#: to float32); a file that asks for more is refused.
MAX_EXPANSION = 4

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


def is_hdf5(path):
    """True when the file starts with the HDF5 signature (how the tools tell H5 from .pt)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(8) == HDF5_SIGNATURE
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not a file") from None


def one_line(err):
    """An exception's whole message on one line (torch's shape errors span several)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if lines and lines[0].startswith("Error(s) in loading state_dict"):
        lines = lines[1:]
    return " ".join(lines) or type(err).__name__


def torch_load_problem(err):
    """Why `torch.load(weights_only=True)` refused a file, without torch's advice to turn the
    safety off (`weights_only=False` would run whatever code the pickle holds)."""
    text = str(err)
    if "GLOBAL" in text:
        name = text.split("GLOBAL", 1)[1].split()[0].strip()
        return f"it needs '{name}', which is not allowed (no pickled code is run)"
    advice = ("weights_only", "Weights only load failed", "trust", "documentation of torch.load", "safe_globals")
    lines = [line.strip().removeprefix("WeightsUnpickler error:").strip() for line in text.splitlines()]
    kept = [line for line in lines if line and not any(word in line for word in advice)]
    return " ".join(kept) or "it holds more than tensors and plain containers (no pickled code is run)"


class _StorageType:
    """Stands for `torch.FloatStorage` & co. in the pickle: only its numpy dtype is kept."""

    def __init__(self, name):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


def _rebuild_parameter(data, *_ignored):
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    """C unpickler that only builds containers and tensors (as numpy arrays), within a memory budget."""

    _ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def __init__(self, data, archive, prefix, byteorder, budget):
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._prefix = prefix
        self._byteorder = byteorder
        self._storages = {}
        self._budget = budget

    def _spend(self, nbytes):
        self._budget -= nbytes
        if self._budget < 0:
            raise pickle.UnpicklingError(f"it asks for more memory than {MAX_EXPANSION}x its size")

    def _rebuild_tensor(self, storage, storage_offset, size, stride, *_ignored):
        """`torch._utils._rebuild_tensor_v2` as a numpy copy of the viewed elements.

        The view is checked to lie inside its storage first: a crafted file must not make numpy
        read outside the buffer; and the copy is paid for from the budget.
        """
        if not isinstance(storage, np.ndarray):
            raise pickle.UnpicklingError("tensor without a storage")
        size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
        if len(size) != len(stride) or min(size + stride + (storage_offset,), default=0) < 0:
            raise pickle.UnpicklingError("bad tensor shape or strides")
        self._spend(int(np.prod(size, dtype=object)) * storage.dtype.itemsize)
        if 0 in size:
            return np.zeros(size, storage.dtype)
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= len(storage):
            raise pickle.UnpicklingError("tensor reaches past the end of its storage")
        if not size:
            return storage[storage_offset].copy()
        itemsize = storage.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            storage[storage_offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
        )
        return np.array(view)

    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self._rebuild_tensor
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load global '{module}.{name}' (no pickled code is run)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        storage_type, key = pid[1], str(pid[2])
        if key not in self._storages:
            name = f"{self._prefix}data/{key}"
            self._spend(self._archive.getinfo(name).file_size)  # also stops a compressed member's expansion
            raw = self._archive.read(name)
            if storage_type.dtype == "bfloat16":
                array = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                dtype = np.dtype(storage_type.dtype).newbyteorder("<" if self._byteorder == "little" else ">")
                array = np.frombuffer(raw, dtype=dtype).astype(np.dtype(storage_type.dtype), copy=False)
            self._storages[key] = array
        return self._storages[key]


def _tensors_to_numpy(obj):
    """Legacy-format fallback: torch tensors inside plain containers -> numpy arrays."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().numpy()
    if isinstance(obj, dict):
        return {k: _tensors_to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_tensors_to_numpy(v) for v in obj)
    return obj


def _memory_limit(path):
    """Bytes a `.pt` file may make this module allocate (see MAX_EXPANSION)."""
    return MAX_EXPANSION * os.path.getsize(path) + (1 << 20)


def load_pt(path):
    """Load a `.pt` file safely; tensors come back as numpy arrays. Failures are one UserError."""
    path = str(path)
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not a file") from None
    except zipfile.BadZipFile:
        archive = None
    if archive is None:
        with open(path, "rb") as handle:
            is_pickle = handle.read(1) == b"\x80"
        if not is_pickle:
            raise UserError(f"{path}: neither HDF5 nor a PyTorch .pt file")
        import torch

        try:
            return _tensors_to_numpy(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as err:
            raise UserError(f"{path}: not a safe PyTorch .pt file ({torch_load_problem(err)})") from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise UserError(f"{path}: not a PyTorch .pt archive (no data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        try:
            byteorder = archive.read(prefix + "byteorder").decode().strip()
        except KeyError:
            byteorder = "little"
        budget = _memory_limit(path) - archive.getinfo(pickles[0]).file_size
        try:
            if budget < 0:
                raise pickle.UnpicklingError(f"its data.pkl asks for more memory than {MAX_EXPANSION}x its size")
            return _RestrictedUnpickler(archive.read(pickles[0]), archive, prefix, byteorder, budget).load()
        except MemoryError:
            raise UserError(f"{path}: not a safe VirNucPro .pt file (it asks for more memory than there is)") from None
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, AttributeError) as err:
            raise UserError(f"{path}: not a safe VirNucPro .pt file ({err})") from None


def _ids(path, value, key):
    if not isinstance(value, (list, tuple)) or not all(isinstance(i, str) for i in value):
        raise UserError(f"{path}: '{key}' is not a list of id strings")
    return list(value)


def _check_size(path, n_values):
    """Refuse a matrix of float32 values larger than the file could hold (rows sharing storage)."""
    if n_values * 4 > _memory_limit(path):
        raise UserError(f"{path}: its embeddings would take more memory than {MAX_EXPANSION}x the file's size; "
                        "not a genuine VirNucPro .pt file")


def _as_matrix(path, rows, what):
    """Stack 1-D rows (lists of floats or arrays) into a float32 [N, D] array (None when empty).

    Every value is read once into a preallocated array of the checked size: numpy's own nesting
    discovery would first walk (and allocate) whatever depth a crafted file nests.
    """
    if len(rows) == 0:
        return None
    try:
        widths = {len(row) for row in rows}
    except TypeError:
        widths = set()
    if len(widths) != 1 or any(isinstance(row, np.ndarray) and row.ndim != 1 for row in rows):
        raise UserError(f"{path}: {what} rows are not 1-D vectors of one length")
    width = widths.pop()
    _check_size(path, len(rows) * width)
    try:
        if all(isinstance(row, np.ndarray) for row in rows):  # tensors: already paid for, copied whole
            return np.stack(rows).astype(np.float32, copy=False)
        values = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.float32, count=len(rows) * width)
    except (TypeError, ValueError) as err:
        raise UserError(f"{path}: {what} rows are not equal-length numeric vectors ({err})") from None
    return values.reshape(len(rows), width)


def read_pt_embeddings(path):
    """Read an original `.pt` file: returns (kind, ids, float32 matrix [N, D] or None when empty).

    kind is 'dnabert', 'esm' or 'merged' (from the container's keys, as the original wrote them).
    """
    obj = load_pt(path)
    if not isinstance(obj, dict):
        raise UserError(f"{path}: not an original VirNucPro .pt container (got {type(obj).__name__})")
    if "nucleotide" in obj and "data" in obj:
        kind, ids = "dnabert", _ids(path, obj["nucleotide"], "nucleotide")
        try:
            rows = [item["mean_representation"] for item in obj["data"]]
        except (TypeError, KeyError, IndexError):
            raise UserError(f"{path}: DNABERT-S 'data' entries lack 'mean_representation'") from None
        matrix = _as_matrix(path, rows, "DNABERT-S")
    elif "proteins" in obj and "data" in obj:
        kind, ids = "esm", _ids(path, obj["proteins"], "proteins")
        matrix = _as_matrix(path, list(obj["data"]), "ESM")
    elif "ids" in obj and "data" in obj:
        kind, ids = "merged", _ids(path, obj["ids"], "ids")
        data = obj["data"]
        if isinstance(data, np.ndarray):
            _check_size(path, data.size)
            matrix = data.astype(np.float32, copy=False) if data.size else None
            if matrix is not None and matrix.ndim != 2:
                raise UserError(f"{path}: merged 'data' is not a 2-D tensor")
        else:
            matrix = _as_matrix(path, list(data), "merged")
    else:
        raise UserError(
            f"{path}: not an original VirNucPro .pt container (keys: {', '.join(map(str, obj))}); "
            "expected 'nucleotide'/'data', 'proteins'/'data' or 'ids'/'data'"
        )
    n_rows = 0 if matrix is None else matrix.shape[0]
    if n_rows != len(ids):
        raise UserError(f"{path}: {len(ids)} ids but {n_rows} embedding rows")
    return kind, ids, matrix
