"""The one exception every layer raises for a problem the user can fix (no CLI import needed)."""


class UserError(Exception):
    """A problem with the user's input, options or environment; reported as one line, exit status 1."""


#: What lowers the memory a run needs, named in every out-of-memory line.
LOWER_MEMORY = ("lower --batch_tokens (padded tokens per embedding batch) or --workers (each worker holds its own "
                "model), or give the job more memory")
_OUT_OF_MEMORY_WORDS = ("cannot allocate memory", "can't allocate memory", "not enough memory", "out of memory",
                        "failed to allocate")


def is_out_of_memory(err):
    """True for a host or device out-of-memory error: MemoryError, torch.OutOfMemoryError (GPU), or a
    RuntimeError such as torch's "unable to mmap ...: Cannot allocate memory (12)"."""
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return True
    return isinstance(err, (RuntimeError, OSError)) and (
        getattr(err, "errno", None) == 12 or any(word in str(err).lower() for word in _OUT_OF_MEMORY_WORDS))


def out_of_memory_line(where=None):
    """The one line for running out of memory, naming the stage where known."""
    return f"out of memory{f' in the {where} stage' if where else ''}: {LOWER_MEMORY}"
