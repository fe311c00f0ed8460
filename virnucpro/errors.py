"""The one exception every layer raises for a problem the user can fix (no CLI import needed)."""


class UserError(Exception):
    """A problem with the user's input, options or environment; reported as one line, exit status 1."""
