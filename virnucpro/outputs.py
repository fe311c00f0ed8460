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
    except BaseException:
        for tmp in tmps:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        raise
    for tmp, final in zip(tmps, paths):
        publish(tmp, final)


def publish(tmp, final):
    """Move a completed temporary file to its final name (readable like a normally created file)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, final)


def already_complete(paths, overwrite=False, what="output"):
    """True (and log it) when every path exists and we were not told to overwrite: resume skips the work."""
    if overwrite or not paths or not all(os.path.exists(p) for p in paths):
        return False
    log.info("%s already complete, skipping (use --overwrite to redo): %s", what, ", ".join(paths))
    return True


def lock_path(path):
    """The lock file that guards `path` (a file or a folder) while a run writes it."""
    return f"{os.path.abspath(path).rstrip(os.sep)}.lock"


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


def _read_holder(fd):
    """'pid N on HOST since TIME' from a held lock file (best effort)."""
    import json

    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {holder['pid']} on {holder['host']} since {holder['started']}: {holder['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
