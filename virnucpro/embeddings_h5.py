"""The embeddings HDF5 file of SPEC 2, and its resumable partial form.

Layout: dataset `ids` (variable-length UTF-8, [N]), dataset `embeddings` ([N, D] float32), root
attributes `model`, `model_revision`, `kind`, `pooling`, `precision`, `virnucpro_version` (and
`input_digest`, a SHA-256 of the input ids and sequences).

While extraction runs, the file lives under `<output>.partial` with every id written up front and
the rows filled block by block (a block = a window of consecutive input sequences, written as one
contiguous slab); after each block the file is
flushed and its `blocks_done` attribute raised. A killed run reopens it and continues after the
last completed block; when all blocks are in, the progress attributes are removed and the file is
renamed to its final name. Rows always sit at their input position, so the result does not depend
on how often a run was interrupted.
"""

import logging
import os

import h5py
import numpy as np

log = logging.getLogger(__name__)

#: Attributes that must match for an existing output (or partial file) to be reused. `model` (the
#: id or path as typed) is left out on purpose: `model_revision` identifies the weights.
IDENTITY_ATTRS = ("model_revision", "kind", "pooling", "precision", "input_digest")
_PROGRESS_ATTRS = ("blocks_done", "resume_key")


def text_attrs(attrs):
    """HDF5 attributes as plain Python values (h5py may hand back bytes and numpy scalars)."""
    return {key: _plain(value) for key, value in attrs.items()}


def _plain(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def decode_ids(values):
    """HDF5 string ids as str (h5py gives bytes or str depending on version and dtype)."""
    return [value.decode("utf-8") if isinstance(value, bytes) else str(value) for value in values]


def write_embeddings(path, ids, embeddings, attrs):
    """Write a complete embeddings file at `path` (callers pass a temporary path and rename it)."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("ids", data=np.array(list(ids), dtype=object), dtype=h5py.string_dtype("utf-8"))
        handle.create_dataset("embeddings", data=embeddings)
        handle.attrs.update(attrs)


def read_embeddings(path):
    """(ids as a list of str, embeddings [N, D] float32, attrs dict) of an embeddings file."""
    with h5py.File(path, "r") as handle:
        return decode_ids(handle["ids"][:]), handle["embeddings"][:], text_attrs(handle.attrs)


def read_attrs(path):
    """Root attributes of a readable embeddings file, or None (missing, unreadable or not ours)."""
    try:
        with h5py.File(path, "r") as handle:
            if "ids" not in handle or "embeddings" not in handle:
                return None
            return text_attrs(handle.attrs)
    except (OSError, KeyError):
        return None


def partial_path(output):
    """Where the resumable work of `output` lives until it is complete."""
    from .names import PARTIAL_SUFFIX

    return f"{output}{PARTIAL_SUFFIX}"


class PartialEmbeddings:
    """An embeddings file being filled block by block, resumable after a kill."""

    def __init__(self, output, ids, dim, attrs, resume_key):
        self.output = output
        self.path = partial_path(output)
        self.handle = self._reopen(resume_key) if os.path.exists(self.path) else None
        if self.handle is None:
            self.handle = self._create(ids, dim, attrs, resume_key)
        self.blocks_done = int(self.handle.attrs["blocks_done"])

    def _reopen(self, resume_key):
        try:
            handle = h5py.File(self.path, "r+")
        except OSError as err:
            log.warning("%s is unreadable (%s); starting over", self.path, err)
            return None
        if handle.attrs.get("resume_key") != resume_key:
            handle.close()
            log.warning("%s was made with other input or settings; starting over", self.path)
            return None
        log.info("resuming %s after block %d", self.path, int(handle.attrs["blocks_done"]))
        return handle

    def _create(self, ids, dim, attrs, resume_key):
        handle = h5py.File(self.path, "w")
        handle.create_dataset("ids", data=np.array(list(ids), dtype=object), dtype=h5py.string_dtype("utf-8"))
        handle.create_dataset("embeddings", shape=(len(ids), dim), dtype=np.float32)
        handle.attrs.update(attrs)
        handle.attrs["resume_key"] = resume_key
        handle.attrs["blocks_done"] = 0
        handle.flush()
        return handle

    def write_block(self, start, embeddings):
        """Store one completed block: the rows from input position `start` on, in one contiguous write."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        dataset = self.handle["embeddings"]
        dataset[start : start + len(embeddings)] = embeddings
        dataset.flush()  # HDF5 buffers small writes: a full disk must fail here, not in a destructor
        self.blocks_done += 1
        self.handle.attrs["blocks_done"] = self.blocks_done
        self.handle.flush()

    def finish(self):
        """Drop the progress attributes and rename the file to its final name (atomic)."""
        for key in _PROGRESS_ATTRS:
            del self.handle.attrs[key]
        self.handle.flush()  # a full disk fails here, loudly (h5py only warns when close fails)
        self.close()
        os.chmod(self.path, 0o644)
        os.replace(self.path, self.output)

    def close(self):
        if self.handle is not None:
            self.handle.close()
            self.handle = None
