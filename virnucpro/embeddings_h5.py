"""The embeddings HDF5 file of SPEC 2, and its resumable partial form.

Layout: dataset `ids` (variable-length UTF-8, [N]), dataset `embeddings` ([N, D] float32), root
attributes `model`, `model_revision`, `kind`, `pooling`, `precision`, `virnucpro_version` (and
`input_digest`, a SHA-256 of the input ids and sequences, and `content_sha256`, a SHA-256 of the
file's own ids and rows: a rerun reuses the file only if they still hash to it).

While extraction runs, the file lives under `.<output name>.virnucpro-partial` beside it with every id written up front and
the rows filled block by block (a block = a window of consecutive input sequences, written as one
contiguous slab); after each block the file is
flushed and its `blocks_done` attribute raised. A killed run reopens it and continues after the
last completed block; when all blocks are in, the progress attributes are removed and the file is
renamed to its final name. Rows always sit at their input position, so the result does not depend
on how often a run was interrupted.
"""

import hashlib
import logging
import os

import h5py
import numpy as np

log = logging.getLogger(__name__)

#: Attributes that must match for an existing output (or partial file) to be reused. `model` (the
#: id or path as typed) is left out on purpose: `model_revision` identifies the weights.
IDENTITY_ATTRS = ("model_revision", "kind", "pooling", "precision", "input_digest")
_PROGRESS_ATTRS = ("blocks_done", "resume_key", "oom_split_tokens")
#: Root attribute: SHA-256 of the file's ids and matrix (`ContentDigest`), checked before a reuse.
CONTENT_DIGEST = "content_sha256"
#: Rows hashed per read when a file's content digest is computed from disk.
_DIGEST_ROWS = 8192


class ContentDigest:
    """SHA-256 of a file's ids (each + '\\n', UTF-8) then its matrix rows (bytes as stored),
    fed with row blocks in order as the file is written; a block out of order (a resumed file)
    leaves it undecided (`hexdigest` None), and the digest is then computed from the file."""

    def __init__(self, ids):
        self.sha = hashlib.sha256("".join(f"{i}\n" for i in ids).encode("utf-8"))
        self.rows = 0

    def update(self, start, block):
        if self.sha is None or start != self.rows:
            self.sha = None
            return
        self.sha.update(np.ascontiguousarray(block).data)
        self.rows += len(block)

    def hexdigest(self, n_rows):
        return self.sha.hexdigest() if self.sha is not None and self.rows == n_rows else None


def content_digest(handle, name):
    """The `ContentDigest` of an open HDF5 file's `ids` and `name` datasets, read from disk."""
    digest = ContentDigest(decode_ids(handle["ids"][()]))
    data = handle[name]
    for start in range(0, data.shape[0], _DIGEST_ROWS):
        digest.update(start, data[start : start + _DIGEST_ROWS])
    return digest.hexdigest(data.shape[0])


def content_matches(path, name):
    """True when the HDF5 file's ids and `name` dataset still hash to the CONTENT_DIGEST it
    records (False: damaged, edited since it was made, or made without one)."""
    try:
        with h5py.File(path, "r") as handle:
            recorded = handle.attrs.get(CONTENT_DIGEST)
            return recorded is not None and _plain(recorded) == content_digest(handle, name)
    except (OSError, KeyError, ValueError, TypeError):
        return False


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
    digest = ContentDigest(list(ids))
    digest.update(0, embeddings)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("ids", data=np.array(list(ids), dtype=object), dtype=h5py.string_dtype("utf-8"))
        handle.create_dataset("embeddings", data=embeddings)
        handle.attrs.update(attrs)
        handle.attrs[CONTENT_DIGEST] = digest.hexdigest(len(embeddings))


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


def root_attrs(path):
    """Root attributes of any readable HDF5 file (what its maker recorded in it), or None when it
    cannot be read as HDF5."""
    try:
        with h5py.File(path, "r") as handle:
            return text_attrs(handle.attrs)
    except OSError:
        return None


def partial_path(output):
    """Where the resumable work of `output` lives until it is complete."""
    from .names import PARTIAL_SUFFIX

    folder, name = os.path.split(str(output))
    return os.path.join(folder, f".{name}{PARTIAL_SUFFIX}")


class PartialEmbeddings:
    """An embeddings file being filled block by block, resumable after a kill."""

    def __init__(self, output, ids, dim, attrs, resume_key):
        self.output = output
        self.path = partial_path(output)
        self.handle = self._reopen(resume_key) if os.path.exists(self.path) else None
        self.digest = None  # a resumed file is hashed from disk when complete
        if self.handle is None:
            self.handle = self._create(ids, dim, attrs, resume_key)
            self.digest = ContentDigest(ids)
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
        blocks = int(handle.attrs["blocks_done"])
        if blocks:
            log.info("resuming %s: its first %d block(s) are done", self.path, blocks)
        else:
            log.info("%s holds no finished block yet: starting at its first", self.path)
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

    @property
    def oom_split_tokens(self):
        """The smallest padded batch size that ran out of device memory so far (None: none did)."""
        value = self.handle.attrs.get("oom_split_tokens")
        return None if value is None else int(value)

    def remember_oom_split(self, tokens):
        """Keep `oom_split_tokens` with the next block written, so a resumed run splits batches the same way."""
        self.handle.attrs["oom_split_tokens"] = int(tokens)

    def write_block(self, start, embeddings):
        """Store one completed block: the rows from input position `start` on, in one contiguous write."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        dataset = self.handle["embeddings"]
        dataset[start : start + len(embeddings)] = embeddings
        if self.digest is not None:
            self.digest.update(start, embeddings)
        dataset.flush()  # HDF5 buffers small writes: a full disk must fail here, not in a destructor
        self.blocks_done += 1
        self.handle.attrs["blocks_done"] = self.blocks_done
        self.handle.flush()

    def finish(self):
        """Drop the progress attributes and rename the file to its final name (atomic)."""
        for key in _PROGRESS_ATTRS:
            if key in self.handle.attrs:
                del self.handle.attrs[key]
        rows = self.handle["embeddings"].shape[0]
        digest = self.digest.hexdigest(rows) if self.digest is not None else None
        self.handle.attrs[CONTENT_DIGEST] = digest or content_digest(self.handle, "embeddings")
        self.handle.flush()  # a full disk fails here, loudly (h5py only warns when close fails)
        self.close()
        os.chmod(self.path, 0o644)
        os.replace(self.path, self.output)

    def close(self):
        if self.handle is not None:
            self.handle.close()
            self.handle = None
