"""Shared command-line plumbing: the command line checked first, one-line errors, signals, help, stderr logging."""

import logging
import os
import re
import signal
import sys
import threading

from .errors import UserError, is_out_of_memory, out_of_memory_line

#: Options whose value names where a tool writes (for an OS error that names no file itself).
_OUTPUT_OPTIONS = ("--output", "--outdir")


class Terminated(BaseException):
    """Raised by the SIGTERM handler: a BaseException, so `except Exception` cannot swallow it,
    while `finally` blocks and `outputs.atomic_paths` still remove temporary files on the way out."""


def setup_logging(tool, verbose=False):
    """Log to stderr as '<tool>: LEVEL message', so every line says which tool wrote it."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"{tool}: %(levelname)s %(message)s",
        stream=sys.stderr,
        force=True,
    )


def _own_args(args):
    """The tool's arguments, without fire's own flags after a bare `--`."""
    return args[: args.index("--")] if "--" in args else args


def _short_flag(args):
    """The first single-letter option (`-o`) in args, other than -h, or None."""
    return next((a for a in _own_args(args) if re.fullmatch(r"-[A-Za-z](=.*)?", a) and a != "-h"), None)


def _output_named(args):
    """The value of the first --output/--outdir option in args (to say where a write failed)."""
    for i, arg in enumerate(args):
        for option in _OUTPUT_OPTIONS:
            if arg.startswith(option + "="):
                return arg.split("=", 1)[1]
            if arg == option and i + 1 < len(args):
                return args[i + 1]
    return None


def _h5py_problem(text):
    """(path, problem) from an HDF5 library message such as
    "Unable to create file (unable to open file: name = 'x.h5', errno = 13, error message = 'Permission denied', ...)"
    or "Can't write data (file write failed: ..., errno = 28, error message = 'No space left on device', ...)";
    None when the text is not one."""
    match = re.search(r"errno = (\d+), error message = '([^']*)'", text)
    if not match:
        return None
    name = re.search(r"name = '([^']*)'", text)
    return (name.group(1) if name else None), match.group(2)


def os_error_line(err, args):
    """One line for an OS error: '<path>: <problem>' (the path the user gave where we know it)."""
    if isinstance(err, OSError) and err.strerror:
        # os.replace(tmp, final) fails on the final name (a folder in the way, ...): name that one.
        path, problem = (err.filename2 or err.filename), err.strerror
        if path is None:  # a write on a full disk names no file: say where the tool was writing
            target = _output_named(args)
            return f"{problem} (writing {target})" if target else problem
    else:
        path, problem = _h5py_problem(str(err)) or (None, " ".join(str(err).split()) or type(err).__name__)
    if path is None:
        return problem
    path = os.fsdecode(path)
    if isinstance(err, FileExistsError) and os.path.isfile(path):  # makedirs through a plain file
        problem = "is a file, not a folder"
    return f"{_final_name(path)}: {problem}"


def _final_name(path):
    """The output an unfinished file stands for (`names.final_name`): what the user asked for."""
    from .names import final_name

    folder, name = os.path.split(path)
    return os.path.join(folder, final_name(name))


def _terminate(signum, frame):
    raise Terminated()


def run(component, tool=None):
    """Run a fire component as a tool.

    The whole command line is checked first (options.command_line_problem): a problem -> one line, exit 2.
    UserError, OS errors (HDF5's included) -> one stderr line, exit 1; SIGTERM -> a line, exit 143;
    Ctrl-C -> a line, exit 130; temporary files are removed on the way out in every case.
    `--help` prints a clean help page on stdout.
    """
    from .options import command_line_problem, help_page

    tool = tool or os.path.basename(sys.argv[0])
    args = sys.argv[1:]
    if "--help" in _own_args(args) or "-h" in _own_args(args):
        print(help_page(component, tool), end="")
        sys.exit(0)
    short = _short_flag(args)
    if short:
        print(f"{tool}: error: short option {short} is not accepted; use the long option (see --help)",
              file=sys.stderr)
        sys.exit(2)
    problem = command_line_problem(component, args)  # the whole command line, before any work
    if problem:
        print(f"{tool}: error: {problem}", file=sys.stderr)
        sys.exit(2)
    setup_logging(tool, verbose="--verbose" in args)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        import fire

        fire.Fire(component, command=args, name=tool)
    except UserError as err:  # one line per problem (a preflight may find several)
        for line in str(err).splitlines() or [""]:
            print(f"{tool}: error: {line}", file=sys.stderr)
        sys.exit(1)
    except (OSError, RuntimeError, MemoryError) as err:
        if is_out_of_memory(err):  # host (MemoryError, torch's "Cannot allocate memory") or GPU: one line
            print(f"{tool}: error: {out_of_memory_line()}", file=sys.stderr)
            sys.exit(1)
        hdf5_failed = _h5py_problem(str(err)) is not None
        if isinstance(err, RuntimeError) and not hdf5_failed:  # a genuine bug: keep its traceback
            raise
        print(f"{tool}: error: {os_error_line(err, args)}", file=sys.stderr)
        if hdf5_failed:
            # HDF5 still holds the failed write in objects Python frees at exit, and freeing them
            # prints tracebacks or crashes; every cleanup has run on the way here, so leave now.
            _leave_now(1)
        _exit(1)
    except Terminated:
        print(f"{tool}: terminated (SIGTERM); nothing partial was left under a final name", file=sys.stderr)
        _exit(143)
    except KeyboardInterrupt:
        print(f"{tool}: interrupted (Ctrl-C); nothing partial was left under a final name", file=sys.stderr)
        _exit(130)


#: Seconds the interpreter's exit handlers get after a failure before the process leaves anyway.
EXIT_GRACE_S = 10


def _exit(status):
    """`sys.exit(status)`, but leave at most EXIT_GRACE_S later even if an exit handler hangs: after
    a signal or a dead worker, a process pool's reader thread may wait forever for the rest of a
    result its worker died sending, and the interpreter joins that thread at exit."""
    watchdog = threading.Timer(EXIT_GRACE_S, _leave_now, (status,))
    watchdog.daemon = True
    watchdog.start()
    sys.exit(status)


def _leave_now(status):
    """Exit at once, without the interpreter's exit handlers (every cleanup has run by then)."""
    logging.shutdown()  # flushes the log handlers, as a normal exit would
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
