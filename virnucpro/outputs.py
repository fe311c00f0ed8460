"""Atomic outputs (write under a temporary name in the target folder, rename when complete), the
lock one run holds on them, the record of what they were made from, and `make_once`, the one
skip-or-redo sequence every tool runs its work through."""

import contextlib
import logging
import os
import tempfile

from .names import TEMP_SUFFIX, temp_pattern, temp_prefix

log = logging.getLogger(__name__)


def temp_path_for(path):
    """A unique temporary name beside `path` (same folder, so the final rename is atomic)."""
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(name), suffix=TEMP_SUFFIX, dir=folder)
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


#: First line of every lock file this tool writes: the proof that a lock file is its own to
#: overwrite and remove (a file of that name without it is left alone).
LOCK_SIGNATURE = "virnucpro-lock v1"
#: Folder outputs are locked by this hidden file inside them (predict's --outdir).
FOLDER_LOCK = ".virnucpro.lock"
#: Set to 1 to take over a lock a run on another host left (after making sure that run is over).
TAKE_OVER_ENV = "VIRNUCPRO_TAKE_OVER_LOCK"


def lock_path(path, folder=False):
    """The lock file that guards `path` while a run writes it, in the tool's own namespace:
    `<folder>/.virnucpro.lock` inside an output folder, `.<name>.virnucpro-lock` beside an output
    file; never `<name>.lock`, never in the parent of an output folder. The folder part is resolved
    (symlinks), so there is one lock however the path is spelled."""
    path = os.path.abspath(str(path)).rstrip(os.sep) or os.sep
    if folder:
        return os.path.join(os.path.realpath(path), FOLDER_LOCK)
    parent, name = os.path.split(path)
    return os.path.join(os.path.realpath(parent), f".{name}.virnucpro-lock")


@contextlib.contextmanager
def exclusive(path, what=None, folder=False):
    """Hold an exclusive lock on `path` (a file, or with `folder` an output folder, created if
    missing) for the block; a second run stops at once with one line naming the holder.

    The lock is an `flock` on `lock_path(path)`: the kernel drops it when its holder dies (kill -9,
    OOM killer, reboot), so a stale lock of this host is simply taken over. The file's first line is
    LOCK_SIGNATURE, then JSON naming its holder (pid, host, start time, command). A file of that
    name without the signature is never truncated or removed: the run stops with one line (an
    empty one is taken: a run killed between creating and writing its lock leaves that). A lock
    written on another host is refused (flock may be node-local on a shared file system, so a live
    holder there is invisible here) unless VIRNUCPRO_TAKE_OVER_LOCK=1. The lock is removed on
    release; an acquirer re-checks that the file it locked is still the one on disk.
    """
    import fcntl
    import json
    import socket
    import sys
    import time

    from .errors import UserError

    lock = lock_path(path, folder)
    created = _missing_folders(os.path.dirname(lock))
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    host = socket.gethostname()
    while True:
        try:
            fd, made = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            try:
                fd, made = os.open(lock, os.O_RDWR), False
            except FileNotFoundError:  # its holder removed it just now: try again
                continue
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
        content = b"" if made else os.pread(fd, 65536, 0)
        if content and not content.startswith(LOCK_SIGNATURE.encode()):
            raise UserError(f"{lock}: exists but is not a virnucpro lock (its first line is not "
                            f"'{LOCK_SIGNATURE}'), so it was left alone; move it away and run again")
        previous = _holder(content)
        if previous.get("host") not in (None, host) and os.environ.get(TAKE_OVER_ENV) != "1":
            raise UserError(f"{what or path} is locked by a run on another host ({_read_holder(fd)}); if that run "
                            f"is over, rerun with {TAKE_OVER_ENV}=1 to take the lock over (lock: {lock})")
    except BaseException:
        os.close(fd)
        raise
    try:
        holder = dict(pid=os.getpid(), host=host, started=time.strftime("%Y-%m-%d %H:%M:%S"),
                      command=" ".join([os.path.basename(sys.argv[0])] + sys.argv[1:])[:300])
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{LOCK_SIGNATURE}\n{json.dumps(holder)}\n".encode(), 0)
        yield lock
    finally:
        with contextlib.suppress(OSError):
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:  # ours: we wrote it, and it is still the one there
                os.remove(lock)
        os.close(fd)
        for made_folder in created:  # a run that wrote nothing leaves no empty folder behind
            with contextlib.suppress(OSError):
                os.rmdir(made_folder)


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


def _holder(content):
    """The holder JSON of a lock file's content (signature line, then JSON), or {}."""
    import json

    try:
        holder = json.loads(content.decode().partition("\n")[2] or "{}")
    except (UnicodeDecodeError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _read_holder(fd):
    """'pid N on HOST since TIME: COMMAND' from a lock file (best effort)."""
    try:
        holder = _holder(os.pread(fd, 65536, 0))
        return f"pid {holder['pid']} on {holder['host']} since {holder['started']}: {holder['command']}"
    except (OSError, KeyError):
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
        from .embeddings_h5 import root_attrs

        attrs = root_attrs(path) or {}  # unreadable: its reader says why; the bytes still identify it
        if all(key in attrs for key in recorded_attrs):
            return {key: attrs[key] for key in recorded_attrs}
    return {"sha256": file_sha256(path)}


def file_digests(paths):
    """{file name: SHA-256} of output files (what a record vouches for)."""
    return {os.path.basename(str(path)): file_sha256(path) for path in paths}


def changed_files(paths, digests):
    """The names among `paths` whose bytes differ from `digests` (from `file_digests`; a file the
    record has no digest for counts as changed: nothing vouches for it)."""
    digests = digests if isinstance(digests, dict) else {}
    return [os.path.basename(str(path)) for path in paths
            if digests.get(os.path.basename(str(path))) != file_sha256(path)]


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


def reuse_existing(paths, recorded, expected, overwrite=False, redo=False, what="output", check=None):
    """Decide what to do with existing outputs before making `paths` from `expected` (a record of
    the inputs' identity and the settings).

    True: every path exists, `recorded` equals `expected` and `check()` (the outputs compared with
    the digests their record holds, see `changed_files`) finds nothing: skip the work (logged).
    False: nothing there yet, `overwrite`, outputs that differ from their record (edited or damaged
    since they were made: one warning line; the record proves they are the tool's to replace), or
    (with `redo`, for a caller that owns the folder) made differently: do the work.
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
            changed = check() if check is not None else []
            if changed:
                log.warning("%s: %s differ(s) from what its record vouches for (edited or damaged since it was "
                            "made): making it again", what, ", ".join(changed))
                return False
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
    folder, name = os.path.split(os.path.abspath(path))
    own = temp_pattern(name)
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


def make_once(outputs, expected, make, *, what, lock, lock_what=None, record_path=None, recorded=None,
              changed=None, record=None, temps_of=None, check_first=None, kept=None, overwrite=False, redo=False):
    """Make `outputs` with `make()` unless they exist made the same way: the skip-or-redo sequence
    of every tool, in one place. Returns `make()`'s result, or `kept(previous)` when they are kept.

    Usage, for outputs with a JSON record beside them (classify, report):

        make_once(paths, expected, lambda: write_tables(paths), what="classification",
                  lock=record_path, record_path=record_path,
                  record=lambda result, digests: {"made_from": expected, "sha256": digests},
                  overwrite=overwrite, redo=redo)

    The steps, in the order that makes reruns correct:
      1. Lock (`exclusive(lock)`): everything below sees outputs no other run is changing; a second
         run stops at once with one line naming the holder.
      2. Reuse (`reuse_existing`): keep the outputs when the identity their record holds
         (`recorded(previous)`, default its "made_from") equals `expected` and `changed(previous,
         paths)` (default: the bytes against the record's "sha256" digests) finds nothing; outputs
         made differently are refused (one line) unless `overwrite`, or made again with `redo` (a
         caller that owns the folder); outputs edited or damaged since are made again (one warning).
      3. `check_first()`: checks that may still refuse the run, before anything is removed, so a
         refused run leaves the old outputs and their record as they were.
      4. Remove own temporaries (`remove_own_temps` of `temps_of`, default the outputs and the
         record): what a killed run left; safe only under the lock, where no live run owns them.
      5. Discard the old record: from here on the old outputs may be replaced, and a record must
         never vouch for files it did not see made. A run that dies from here leaves outputs without
         a record, which the next run makes again (or refuses, one line), never keeps unchecked.
      6. `make()`: the work, each output published complete under its final name (`atomic_paths`).
      7. Write the record (`record(result, file_digests(outputs))` to `record_path`) only after
         `make()` returned: a record exists only for outputs that were made completely.

    `previous` is the JSON record at `record_path` ({} when there is none). `outputs` may be a
    callable of it (the existing outputs to judge, when the record lists them) and `expected` a
    callable, evaluated under the lock. Where the record lives in the output itself (merge's
    `made_from` attribute, extract's HDF5 attributes), pass no `record_path`: `recorded` reads it,
    `changed` checks the content, `make` writes it into the new output, and replacing the output
    replaces its record. A tool whose record must reach disk before its outputs (translate: the
    record lists names known only once the work is done) passes `record=None`; its `make` then
    removes the old record and writes the new one itself, right before it publishes.
    """
    with exclusive(lock, lock_what or what):
        previous = (read_record(record_path) if record_path else None) or {}
        paths = [str(p) for p in (outputs(previous) if callable(outputs) else outputs)]
        if callable(expected):
            expected = expected()
        made_from = recorded(previous) if recorded else previous.get("made_from")
        check = ((lambda: changed(previous, paths)) if changed else
                 (lambda: changed_files(paths, previous.get("sha256"))))
        if paths and reuse_existing(paths, made_from, expected, overwrite, redo, what, check=check):
            return kept(previous) if kept else None
        if check_first:
            check_first()
        for path in (temps_of if temps_of is not None else paths + ([record_path] if record_path else [])):
            remove_own_temps(path)
        if record is not None and os.path.exists(record_path):
            os.remove(record_path)
        result = make()
        if record is not None:
            write_record(record_path, record(result, file_digests(paths)))
        return result


def check_writable_folder(folder, option="--outdir"):
    """Before any work, without creating anything: `folder` is a folder this user can write into, or
    can be made inside the nearest folder that exists; else one line naming `option`."""
    from .errors import UserError

    folder = os.path.abspath(str(folder))
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UserError(f"{option} {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{option} {folder}: {existing} is not writable by this user")
