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
