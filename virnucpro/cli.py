"""Shared command-line plumbing: one-line errors, stderr logging, fire entry points."""

import logging
import os
import sys

from .errors import UserError


def setup_logging(tool, verbose=False):
    """Log to stderr as '<tool>: LEVEL message', so every line says which tool wrote it."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"{tool}: %(levelname)s %(message)s",
        stream=sys.stderr,
        force=True,
    )


def run(component, tool=None):
    """Run a fire component as a tool: UserError (and missing files) become one stderr line and exit 1."""
    import fire

    tool = tool or os.path.basename(sys.argv[0])
    setup_logging(tool, verbose="--verbose" in sys.argv)
    try:
        fire.Fire(component, name=tool)
    except UserError as err:
        print(f"{tool}: error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"{tool}: interrupted", file=sys.stderr)
        sys.exit(130)
