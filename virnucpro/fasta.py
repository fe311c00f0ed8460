"""Streaming FASTA input shared by every tool: plain or gzip, LF or CRLF, wrapped or not.

Records are read one at a time (a file is never loaded whole) and checked as they stream, so bad
input stops the tool with one line that names the file, the record and the problem.
"""

import gzip
import io
import logging
import os

from .errors import UserError
from .names import FASTA_EXTENSIONS, stem  # noqa: F401  (stem: the tools' name rule, used with FASTA input)
from .tsv import MAX_ID_LENGTH

log = logging.getLogger(__name__)

#: IUPAC nucleotide codes (and U); anything else in a DNA record is an error.
NUCLEOTIDE_LETTERS = b"ACGTURYSWKMBDHVNacgturyswkmbdhvn"
#: IUPAC amino-acid codes plus the extended ones ESM knows (B, J, O, U, X, Z) and the stop '*'.
PROTEIN_LETTERS = b"ACDEFGHIKLMNPQRSTVWYBJOUXZacdefghiklmnpqrstvwybjouxz*"
_WHITESPACE = b" \t\r\n\v\f"
_PROTEIN_ONLY = set(b"EFILPQefilpq")
#: RNA read as DNA: U (uracil) stands where DNA has T.
_U_AS_T = bytes.maketrans(b"Uu", b"Tt")


class _Hashing(io.RawIOBase):
    """A file read through this feeds every byte read into `digest`: the identity of an input is
    then what was really read, not what was on disk at another moment."""

    def __init__(self, handle, digest):
        self.handle, self.digest = handle, digest

    def readable(self):
        return True

    def readinto(self, buffer):
        count = self.handle.readinto(buffer)
        if count:
            self.digest.update(memoryview(buffer)[:count])
        return count

    def tell(self):
        return self.handle.tell()

    def close(self):
        self.handle.close()
        super().close()


class _GzipClosingFile(gzip.GzipFile):
    """A GzipFile over an open file object that also closes that object."""

    def __init__(self, raw):
        super().__init__(fileobj=raw, mode="rb")
        self._raw = raw

    def close(self):
        try:
            super().close()
        finally:
            self._raw.close()


def file_state(path):
    """(size, modification time, inode, device) of a file: compared before and after a read."""
    info = os.stat(path)
    return info.st_size, info.st_mtime_ns, info.st_ino, info.st_dev


def check_unchanged(path, before, digest_before, digest_read):
    """One line if the file at `path` changed while it was read: its state is not `before` (from
    `file_state`), or the bytes read (`digest_read`) are not those hashed before (`digest_before`)."""
    try:
        now = file_state(path)
    except OSError:
        now = None
    if now != before or digest_read != digest_before:
        raise UserError(f"{path}: changed while it was read (size, time, inode or content differ from the start of "
                        "the run); nothing was written: rerun once the file is complete")


def open_text_or_gzip(path, digest=None):
    """Open a file for binary line reading, transparently un-gzipping by magic number (not name);
    with `digest` (a hashlib object), every byte read from the file (compressed, for gzip) feeds it."""
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file")
    if os.path.isdir(path):
        raise UserError(f"{path}: is a folder, not a FASTA file")
    if not os.path.isfile(path):  # the tools read an input twice (identity digest, then the work)
        raise UserError(f"{path}: not a regular file (a pipe or device can be read only once); save it to a file first")
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if digest is not None:
        raw = io.BufferedReader(_Hashing(open(path, "rb", buffering=0), digest), 1 << 20)
        return _GzipClosingFile(raw) if magic == b"\x1f\x8b" else raw
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb", buffering=1 << 20)


def _first_line_problem(line):
    text = line[:40].decode("utf-8", "replace").strip()
    if "\ufffd" in text or any(ord(c) < 32 for c in text if c != "\t"):
        return "binary data where a '>' header was expected"
    return f"expected a '>' header, got {text!r}"


def check_readable(path):
    """Fail early, before any work or logging of plans, on a missing or unreadable input."""
    open_text_or_gzip(path).close()


def _describe(char):
    return repr(chr(char)) if 32 <= char < 127 else f"byte 0x{char:02x}"


def _check_letters(path, number, record_id, seq, allowed, kind):
    bad = seq.translate(None, allowed)
    if not bad:
        return
    char = bad[0]
    position = seq.index(bytes([char])) + 1
    hint = ""
    if kind == "nucleotide" and any(c in _PROTEIN_ONLY for c in bad):
        hint = " (this looks like a protein FASTA given as DNA)"
    raise UserError(
        f"{path}: record {number} '{record_id}': {_describe(char)} at position {position} "
        f"is not a valid {kind} letter{hint}"
    )


def read_fasta(path, alphabet="nucleotide", allow_empty_file=False, check_duplicates=True, progress=None, digest=None,
               warn=True):
    """Yield (record_id, sequence) as str for each non-empty record of a FASTA file.

    alphabet: 'nucleotide', 'protein' or None (no letter check). Empty records are skipped
    with a warning naming them; RNA (U for T) in a nucleotide file is read as DNA, with a warning. Raises UserError for a missing, empty (unless allow_empty_file)
    or non-FASTA file, a bad letter, or a duplicate id. `progress` (a tqdm whose total is the
    file's size on disk) is advanced by the bytes read, compressed bytes for gzip. `digest` (a
    hashlib object) is fed every byte read from the file (`open_text_or_gzip`). `warn=False`: no
    warning lines (a file read a second time, whose first reading gave them).
    """
    allowed = {"nucleotide": NUCLEOTIDE_LETTERS, "protein": PROTEIN_LETTERS, None: None}[alphabet]
    seen = set() if check_duplicates else None
    number = 0
    record_id = None
    parts = []
    rna_records = 0
    warning = log.warning if warn else (lambda *args: None)

    def finish():
        nonlocal rna_records
        seq = b"".join(parts)
        if not seq:
            warning("%s: record %d '%s' has an empty sequence; skipped", path, number, record_id)
            return None
        if allowed is not None:
            _check_letters(path, number, record_id, seq, allowed, alphabet)
        if alphabet == "nucleotide" and (b"U" in seq or b"u" in seq):
            if not rna_records:
                warning("%s: record %d '%s' is RNA (has U): reading U as T, here and in any further "
                            "RNA record of this file", path, number, record_id)
            rna_records += 1
            seq = seq.translate(_U_AS_T)
        try:
            return seq.decode("ascii")
        except UnicodeDecodeError:
            raise UserError(f"{path}: record {number} '{record_id}': sequence is not ASCII text") from None

    with open_text_or_gzip(path, digest) as handle:
        raw = getattr(handle, "fileobj", handle)
        done = 0
        try:
            for line_number, line in enumerate(handle, 1):
                if line.startswith(b">"):
                    if progress is not None:
                        position = raw.tell()
                        progress.update(position - done)
                        done = position
                    if record_id is not None:
                        seq = finish()
                        if seq is not None:
                            yield record_id, seq
                    number += 1
                    if b"\r" in line.rstrip(b"\r\n"):
                        raise UserError(f"{path}: line {line_number}: CR-only (classic Mac) line ends; convert them "
                                        "to LF first, e.g. tr '\\r' '\\n' < in.fa > out.fa")
                    header = line[1:].strip()
                    try:
                        record_id = header.split(None, 1)[0].decode("utf-8") if header else ""
                    except UnicodeDecodeError:
                        raise UserError(f"{path}: record {number}: header is not UTF-8 text") from None
                    if not record_id:
                        raise UserError(f"{path}: record {number} (line {line_number}): header has no id")
                    if len(record_id) > MAX_ID_LENGTH:
                        raise UserError(f"{path}: record {number} (line {line_number}): id of {len(record_id)} "
                                        f"characters ('{record_id[:40]}...'); at most {MAX_ID_LENGTH} are accepted")
                    if seen is not None:
                        if record_id in seen:
                            raise UserError(f"{path}: record {number}: duplicate id '{record_id}'")
                        seen.add(record_id)
                    parts = []
                elif record_id is None:
                    if line.strip():
                        raise UserError(f"{path}: line {line_number}: not FASTA: {_first_line_problem(line)}")
                else:
                    parts.append(line.translate(None, _WHITESPACE))
        except (OSError, EOFError, gzip.BadGzipFile) as err:
            raise UserError(f"{path}: cannot read: {err}") from None
    if progress is not None:
        progress.update(max(progress.total - done, 0) if progress.total else 0)
    if record_id is None:
        if allow_empty_file:
            return
        raise UserError(f"{path}: empty file (no FASTA records)")
    seq = finish()
    if seq is not None:
        yield record_id, seq
    if rna_records > 1:
        warning("%s: %d RNA records read with U as T", path, rna_records)


def count_records(path):
    """Number of '>' headers in a file (cheap pre-pass for progress bars and pool planning)."""
    with open_text_or_gzip(path) as handle:
        return sum(1 for line in handle if line.startswith(b">"))


def format_record(record_id, seq):
    """One FASTA record, sequence on a single line (the format every stage writes)."""
    return f">{record_id}\n{seq}\n"


def wrap_record(record_id, seq, width=60):
    """One FASTA record wrapped like Biopython's SeqIO.write (the original's chunked files)."""
    lines = [seq[i : i + width] for i in range(0, len(seq), width)]
    return f">{record_id}\n" + "".join(line + "\n" for line in lines)
