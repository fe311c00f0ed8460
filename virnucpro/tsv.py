"""The one tab-separated table format the tools write and read: `<stem>.sequences.tsv`, the two
prediction tables of SPEC 1.6 and `sequence_summary.tsv`.

The rule, explicit so that ids of any shape come back as they went in: a field is written as it
is, never quoted or escaped (a `"` is an ordinary character, as are unicode and long ids), fields
are joined by one tab and a row ends with one `\\n`; the reader splits on exactly those two
characters and on nothing else. So a field cannot hold a tab or a line end: writing one is an error
(a FASTA id never holds one: it ends at the first whitespace). Ordinary ids give the original's
tables byte for byte.
"""

from .errors import UserError

#: Longest record id accepted (characters): longer is refused at input with one line.
MAX_ID_LENGTH = 10_000
_NOT_IN_A_FIELD = ("\t", "\n", "\r")


def check_field(text, where):
    """`text` if a table can hold it as one field, else a one-line UserError naming `where`."""
    for char in _NOT_IN_A_FIELD:
        if char in text:
            raise UserError(f"{where}: {text[:80]!r} holds a {'tab' if char == chr(9) else 'line end'}, "
                            "which a tab-separated table cannot hold as one field")
    return text


def tsv_line(fields, where="table row"):
    """One row: the fields as they are, tab-separated, `\\n`-terminated (checked: see the module)."""
    line = "\t".join(fields)
    if line.count("\t") != len(fields) - 1 or "\n" in line or "\r" in line:
        for field in fields:
            check_field(field, where)
    return line + "\n"


def read_tsv(path, columns, what, exact=True):
    """Yield (line number, [fields]) for each row of a table written by `tsv_line`, after checking
    that its header is `columns` (with `exact=False`: starts with them). A row with another number
    of fields, or a last row cut short (no `\\n`), is a one-line UserError naming file and line."""
    try:
        handle = open(path, encoding="utf-8", newline="\n")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file (a {what})") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read it ({err.strerror})") from None
    with handle:
        try:
            header = handle.readline().rstrip("\n").split("\t")
            if header[: len(columns)] != list(columns) or (exact and len(header) != len(columns)):
                raise UserError(f"{path}: not a {what} (its header should be {' '.join(columns)})")
            width = len(header)
            for number, line in enumerate(handle, start=2):
                if not line.endswith("\n"):
                    raise UserError(f"{path}, line {number}: the last row is cut short (no line end): "
                                    "the table is incomplete")
                fields = line[:-1].split("\t")
                if len(fields) != width:
                    raise UserError(f"{path}, line {number}: expected {width} tab-separated fields "
                                    f"({' '.join(header)}), found {len(fields)}")
                yield number, fields
        except UnicodeDecodeError:
            raise UserError(f"{path}: not a text file: not UTF-8 text, so not a {what}") from None
