"""The streaming FASTA reader every tool shares."""

import gzip
import logging

import pytest

from virnucpro.errors import UserError
from virnucpro.fasta import read_fasta, stem


@pytest.mark.parametrize("name, expected", [
    ("reads.fasta.gz", "reads"), ("a.fa", "a"), ("a.fna", "a"), ("a.ffn", "a"), ("a.faa", "a"),
    ("a.fas", "a"), ("dir/x.y.fasta", "x.y"), ("noext", "noext"), ("b.txt.gz", "b.txt"),
])
def test_stem(name, expected):
    assert stem(name) == expected


def test_reads_wrapped_crlf_gzip_with_descriptions(tmp_path):
    text = b">one first record\r\nACGT\r\nacgn\r\n\r\n>two\tdesc\r\nTTTT\r\n"
    gz = tmp_path / "x.txt"  # gzip is recognised by content, not by name
    gz.write_bytes(gzip.compress(text))
    plain = tmp_path / "x.fa"
    plain.write_bytes(text)
    expected = [("one", "ACGTacgn"), ("two", "TTTT")]
    assert list(read_fasta(str(plain))) == expected
    assert list(read_fasta(str(gz))) == expected


def test_streams_without_reading_ahead(tmp_path):
    path = tmp_path / "big.fa"
    with open(path, "w") as handle:
        handle.write(">first\nACGT\n")
        handle.write(">bad\nXXXX\n")
    records = read_fasta(str(path))
    assert next(records) == ("first", "ACGT")  # yielded before the bad record is even read
    with pytest.raises(UserError, match="record 2 'bad'"):
        next(records)


def test_protein_alphabet_and_no_check(tmp_path):
    path = tmp_path / "p.faa"
    path.write_text(">p\nMKVLEQFPSTX*\n")
    assert list(read_fasta(str(path), alphabet="protein")) == [("p", "MKVLEQFPSTX*")]
    with pytest.raises(UserError, match="protein FASTA given as DNA"):
        list(read_fasta(str(path)))
    path.write_text(">p\nMK1\n")
    with pytest.raises(UserError, match="'1' at position 3 is not a valid protein letter"):
        list(read_fasta(str(path), alphabet="protein"))


def test_empty_file_allowed_when_asked(tmp_path):
    path = tmp_path / "e.fa"
    path.write_text("")
    assert list(read_fasta(str(path), allow_empty_file=True)) == []
    with pytest.raises(UserError, match="empty file"):
        list(read_fasta(str(path)))


def test_empty_records_warn_and_skip(tmp_path, caplog):
    path = tmp_path / "e.fa"
    path.write_text(">a\n>b\nAC\n>c\n")
    with caplog.at_level(logging.WARNING):
        assert list(read_fasta(str(path))) == [("b", "AC")]
    assert "record 1 'a' has an empty sequence" in caplog.text
    assert "record 3 'c' has an empty sequence" in caplog.text


def test_duplicates_can_be_allowed(tmp_path):
    path = tmp_path / "d.fa"
    path.write_text(">a\nAC\n>a\nGT\n")
    assert len(list(read_fasta(str(path), check_duplicates=False))) == 2
    with pytest.raises(UserError, match="record 2: duplicate id 'a'"):
        list(read_fasta(str(path)))


def test_a_pipe_is_refused_in_one_line_not_read_as_empty(tmp_path):
    """Tools read an input twice (its digest, then the work): a pipe would give an empty result."""
    import os

    fifo = tmp_path / "frames.fa"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="not a regular file"):
        list(read_fasta(str(fifo)))
