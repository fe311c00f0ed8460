"""Atomic outputs: write under a temporary name in the target folder, rename when complete."""

import contextlib
import logging
import os
import tempfile

log = logging.getLogger(__name__)


def temp_path_for(path):
    """A unique temporary name beside `path` (same folder, so the final rename is atomic)."""
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    return tmp


@contextlib.contextmanager
def atomic_paths(paths):
    """Yield temporary paths for `paths`; rename them all into place only if the block succeeds.

    On any error the temporaries are removed, so no partial file ever carries a final name.
    """
    tmps = [temp_path_for(p) for p in paths]
    try:
        yield tmps
        for tmp, final in zip(tmps, paths):
            publish(tmp, final)
    except BaseException:
        discard(tmps)
        raise


def discard(tmps):
    """Remove temporary files that exist (after a failure; a published one is already gone)."""
    for tmp in tmps:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def publish(tmp, final):
    """Move a completed temporary file to its final name (readable like a normally created file)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, final)


def lock_path(path):
    """The lock file that guards `path` (a file or a folder) while a run writes it."""
    return f"{os.path.realpath(path).rstrip(os.sep)}.lock"  # one lock however the path is spelled (symlinks)


@contextlib.contextmanager
def exclusive(path, what=None):
    """Hold an exclusive lock on `path` for the block; a second run stops at once with one line.

    The lock is an `flock` on `<path>.lock`: the kernel drops it when its holder dies (kill -9,
    OOM killer, reboot), so a stale lock file is simply taken over. The file names its holder
    (pid, host, start time, command) for the message. It is removed on release; an acquirer
    re-checks that the file it locked is still the one on disk, so removal cannot let two in.
    """
    import fcntl
    import json
    import socket
    import sys
    import time

    from .errors import UserError

    lock = lock_path(path)
    created = _missing_folders(os.path.dirname(lock))
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise UserError(f"{what or path} is being written by another run ({holder}); "
                            f"wait for it to finish or stop it (lock: {lock})") from None
        except OSError:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file after we opened it: lock the new one
    try:
        holder = dict(pid=os.getpid(), host=socket.gethostname(), started=time.strftime("%Y-%m-%d %H:%M:%S"),
                      command=" ".join([os.path.basename(sys.argv[0])] + sys.argv[1:])[:300])
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder).encode())
        yield lock
    finally:
        with contextlib.suppress(OSError):
            os.remove(lock)
        os.close(fd)
        for folder in created:  # a run that wrote nothing leaves no empty folder behind
            with contextlib.suppress(OSError):
                os.rmdir(folder)


def _missing_folders(folder):
    """The folders `os.makedirs(folder)` would create, deepest first."""
    missing = []
    folder = os.path.abspath(folder)
    while not os.path.exists(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return missing


def _read_holder(fd):
    """'pid N on HOST since TIME' from a held lock file (best effort)."""
    import json

    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {holder['pid']} on {holder['host']} since {holder['started']}: {holder['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


# ---- what an output was made from: recorded with it, checked on a rerun ------------------------


def file_sha256(path):
    """SHA-256 of a file's bytes."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_identity(path, recorded_attrs=()):
    """What identifies an input's content: `recorded_attrs` of an HDF5 file that has them all
    (the identity its maker recorded, e.g. extract's model revision and input digest), else the
    SHA-256 of its bytes. Never the file's time: a copy is the same input."""
    from .pt_io import is_hdf5

    path = str(path)
    if is_hdf5(path) and recorded_attrs:  # is_hdf5: one line for a missing file or a folder
        import h5py

        from .embeddings_h5 import text_attrs

        try:
            with h5py.File(path, "r") as handle:
                attrs = text_attrs(handle.attrs)
        except OSError:
            attrs = {}  # unreadable: its reader says why; the bytes still identify it
        if all(key in attrs for key in recorded_attrs):
            return {key: attrs[key] for key in recorded_attrs}
    return {"sha256": file_sha256(path)}


def as_record(data):
    """`data` as it reads back from JSON (tuples become lists), so records compare equal."""
    import json

    return json.loads(json.dumps(data, sort_keys=True))


def read_record(path):
    """The JSON record at `path`, or None when it is missing or unreadable."""
    import json

    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_record(path, record):
    """Write a JSON record atomically."""
    import json

    with atomic_paths([path]) as (tmp,):
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=1, sort_keys=True)
            handle.write("\n")


def reuse_existing(paths, recorded, expected, overwrite=False, redo=False, what="output"):
    """Decide what to do with existing outputs before making `paths` from `expected` (a record of
    the inputs' identity and the settings).

    True: every path exists and `recorded` equals `expected`: skip the work (logged).
    False: nothing there yet, `overwrite`, or (with `redo`, for a caller that owns the folder)
    made differently: do the work (a redo is logged with what differs).
    Otherwise a UserError: the outputs exist but were made differently; never kept silently.
    """
    from .errors import UserError

    in_the_way = [p for p in paths if os.path.isdir(p)]
    if in_the_way:
        raise UserError(f"{in_the_way[0]}: is a folder, where an output file of that name goes")
    if overwrite or not all(os.path.exists(p) for p in paths):
        return False
    expected = as_record(expected)
    if recorded is None:
        differs = "no record of how they were made"
    else:
        keys = sorted(set(expected) | set(recorded))
        differs = ", ".join(k for k in keys if recorded.get(k) != expected.get(k))
        if not differs:
            log.info("%s already complete, skipping (use --overwrite to redo): %s", what, ", ".join(paths))
            return True
        differs += " differ"
    if redo:
        log.info("%s was made differently (%s): making it again", what, differs)
        return False
    raise UserError(f"{paths[0]} exists but was made differently ({differs}); use --overwrite to replace it")


def remove_own_temps(path):
    """Remove the temporary files `temp_path_for(path)` makes (`.<name>.XXXXXXXX.tmp` beside it)
    that a killed run left. Only under `exclusive(...)`: no live run can own them then. Any other
    file, hidden or not, is left alone."""
    import re

    folder, name = os.path.split(os.path.abspath(path))
    own = re.compile(re.escape(f".{name}.") + r"[a-z0-9_]{8}\.tmp")
    if not os.path.isdir(folder):
        return 0
    removed = 0
    for entry in os.listdir(folder):
        if own.fullmatch(entry):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, entry))
                removed += 1
    if removed:
        log.info("removed %d temporary file(s) of %s left by an interrupted run", removed, os.path.basename(path))
    return removed
