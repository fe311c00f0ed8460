"""virnucpro-translate against the original's outputs and a plain reference of SPEC 1.1-1.2."""

import gzip
import json
import os
import random
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from virnucpro.errors import UserError
from virnucpro.fasta import stem
from virnucpro.stages.translate import chunk_bounds, translate_fasta, translate_records

from helpers import DATA, files_in, read_fasta_pairs, run_tool
from reference_translate import chunks, read_plain_fasta, reference_translate

VANILLA = os.path.join(DATA, "vanilla")
EIGHT = os.path.join(DATA, "virsorter2", "8seq.fa")


def write_fasta(path, records, width=70, line_end="\n"):
    with open(path, "w", newline="") as handle:
        for record_id, seq in records:
            handle.write(f">{record_id} some description{line_end}")
            for i in range(0, len(seq), width):
                handle.write(seq[i:i + width] + line_end)
    return path


def outputs_as_frames(outputs):
    nucleotide = [r for path in outputs["nucleotide"] for r in read_fasta_pairs(path)]
    protein = [r for path in outputs["protein"] for r in read_fasta_pairs(path)]
    assert [i for i, _ in nucleotide] == [i for i, _ in protein]
    return [(i, n, p) for (i, n), (_, p) in zip(nucleotide, protein)]


def test_matches_the_original_tool_outputs(tmp_path):
    result = run_tool("virnucpro-translate", "--input", os.path.join(VANILLA, "test_with_orfs.fa"),
                      "--outdir", tmp_path, "--chunk_size", 500, "--write_chunks")
    for ours, original in [("test_with_orfs.nucleotide.fa", "test_with_orfs_identified_nucleotide.fa"),
                           ("test_with_orfs.protein.fa", "test_with_orfs_identified_protein.faa"),
                           ("test_with_orfs.chunks.fa", "test_with_orfs_chunked500.fa")]:
        with open(tmp_path / ours) as a, open(os.path.join(VANILLA, original)) as b:
            assert a.read() == b.read(), ours
    assert "4 stop-free frames" in result.stderr


def test_sequences_table(tmp_path):
    outputs = translate_fasta(EIGHT, str(tmp_path), chunk_size=300, workers=1)
    with open(outputs["sequences"]) as handle:
        rows = [line.rstrip("\n").split("\t") for line in handle]
    assert rows[0] == ["sequence_id", "length", "chunks"]
    records = read_plain_fasta(EIGHT)
    assert [(r[0], int(r[1]), int(r[2])) for r in rows[1:]] == [
        (i, len(s), len(chunks(s, 300))) for i, s in records]


@pytest.mark.parametrize("size", [300, 500])
def test_chunk_bounds_follow_the_rule_for_every_length_class(size):
    seq = "".join(random.Random(1).choice("ACGT") for _ in range(6 * size + 7))
    for length in list(range(1, 3 * size + 3)) + [k * size + d for k in range(3, 6) for d in (-1, 0, 1)]:
        expected = chunks(seq[:length], size)
        ours = [seq[s:e] for s, e in chunk_bounds(length, size)]
        assert ours == expected, length


def lengths_around_multiples():
    lengths = [1, 2, 3, 4, 5, 6, 7, 20]
    for size in (300, 500):
        for k in range(1, 5):
            lengths += [k * size - 1, k * size, k * size + 1, k * size + 2]
    return lengths


@pytest.mark.parametrize("size", [300, 500])
def test_generated_inputs_match_the_reference(tmp_path, size):
    rng = random.Random(size)
    records = []
    for n, length in enumerate(lengths_around_multiples()):
        alphabet = "ACGT" * 8 + "NRYKMSWBDHVacgtn"  # mostly DNA, some IUPAC codes and lower case
        seq = "".join(rng.choice(alphabet) for _ in range(length))
        records.append((f"gen{n}_len{length}", seq))
    records.append(("nrun", "ACGTTGCA" * 40 + "N" * 50 + "TTGACCA" * 60))
    records.append(("allN", "N" * 700))
    records.append(("lower", "atgaaacgtgcagaactggcagaa" * 30))
    path = write_fasta(tmp_path / "generated.fa", records)
    outputs = translate_fasta(str(path), str(tmp_path / "out"), chunk_size=size, workers=1)
    assert outputs_as_frames(outputs) == reference_translate(records, size)


def test_real_genomes_match_the_reference(tmp_path):
    records = read_plain_fasta(EIGHT)
    outputs = translate_fasta(EIGHT, str(tmp_path), chunk_size=500, workers=1)
    assert outputs_as_frames(outputs) == reference_translate(records, 500)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="ACGTNRYacgtn", min_size=1, max_size=1300), min_size=1, max_size=5),
       st.sampled_from([300, 500]))
def test_property_batches_match_the_reference(seqs, size):
    records = [(f"s{i}", s) for i, s in enumerate(seqs)]
    frames, summaries, frameless = translate_records(records, size)
    assert frames == reference_translate(records, size)
    assert summaries == [(i, len(s), len(chunks(s, size))) for i, s in records]


def test_output_is_identical_for_any_worker_count(tmp_path):
    one = translate_fasta(EIGHT, str(tmp_path / "one"), chunk_size=500, workers=1, batch_bases=100_000)
    two = translate_fasta(EIGHT, str(tmp_path / "two"), chunk_size=500, workers=2, batch_bases=100_000)
    for key in ("nucleotide", "protein"):
        with open(one[key][0], "rb") as a, open(two[key][0], "rb") as b:
            assert a.read() == b.read()
    with open(one["sequences"], "rb") as a, open(two["sequences"], "rb") as b:
        assert a.read() == b.read()


def test_gzip_and_crlf_inputs_give_the_same_output(tmp_path):
    records = read_plain_fasta(os.path.join(VANILLA, "test_with_orfs.fa")) + [("extra", "ACGT" * 200)]
    plain = write_fasta(tmp_path / "reads.fa", records)
    write_fasta(tmp_path / "crlf.fa", records, width=1000, line_end="\r\n")
    with open(plain, "rb") as src, gzip.open(tmp_path / "zipped.fasta.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    texts = []
    for name in ("reads.fa", "crlf.fa", "zipped.fasta.gz"):
        out = translate_fasta(str(tmp_path / name), str(tmp_path / ("out_" + name)), chunk_size=300, workers=1)
        assert os.path.basename(out["protein"][0]) == stem(name) + ".protein.fa"
        texts.append([open(p).read() for p in out["nucleotide"] + out["protein"]])
    assert texts[0] == texts[1] == texts[2]


def test_shards_round_trip(tmp_path):
    whole = translate_fasta(EIGHT, str(tmp_path / "whole"), chunk_size=500, workers=1)
    sharded = translate_fasta(EIGHT, str(tmp_path / "sharded"), chunk_size=500, workers=2, shard_size=1000)
    frames = outputs_as_frames(whole)
    assert len(sharded["nucleotide"]) == -(-len(frames) // 1000) > 1
    for n, (nuc, prot) in enumerate(zip(sharded["nucleotide"], sharded["protein"]), 1):
        assert os.path.basename(nuc) == f"8seq.{n:05d}.nucleotide.fa"
        assert os.path.basename(prot) == f"8seq.{n:05d}.protein.fa"
        nuc_ids = [i for i, _ in read_fasta_pairs(nuc)]
        assert nuc_ids == [i for i, _ in read_fasta_pairs(prot)]
        assert 0 < len(nuc_ids) <= 1000
    assert outputs_as_frames(sharded) == frames


def test_shards_with_no_frames_still_give_one_empty_pair(tmp_path):
    path = write_fasta(tmp_path / "stops.fa", [("stops", "NNNNNNNNNN"), ("short", "AC")])
    out = translate_fasta(str(path), str(tmp_path / "out"), chunk_size=300, shard_size=10)
    assert [os.path.basename(p) for p in out["nucleotide"]] == ["stops.00001.nucleotide.fa"]
    assert os.path.getsize(out["nucleotide"][0]) == os.path.getsize(out["protein"][0]) == 0


def test_resume_skips_a_complete_output_and_overwrite_redoes_it(tmp_path):
    source = os.path.join(VANILLA, "test_with_orfs.fa")
    run_tool("virnucpro-translate", "--chunk_size", 500, "--input", source, "--outdir", tmp_path)
    protein = tmp_path / "test_with_orfs.protein.fa"
    before = os.stat(protein).st_mtime_ns
    again = run_tool("virnucpro-translate", "--chunk_size", 500, "--input", source, "--outdir", tmp_path)
    assert "already complete" in again.stderr and os.stat(protein).st_mtime_ns == before
    run_tool("virnucpro-translate", "--chunk_size", 500, "--input", source, "--outdir", tmp_path, "--overwrite")
    assert os.stat(protein).st_mtime_ns != before
    before = os.stat(protein).st_mtime_ns
    changed = run_tool("virnucpro-translate", "--input", source, "--outdir", tmp_path, "--chunk_size", 300, check=False)
    assert changed.returncode == 1 and "made differently (chunk_size differ); use --overwrite" in changed.stderr
    assert os.stat(protein).st_mtime_ns == before
    run_tool("virnucpro-translate", "--input", source, "--outdir", tmp_path, "--chunk_size", 300, "--overwrite")
    with open(tmp_path / "test_with_orfs.translate.json") as handle:
        assert json.load(handle)["settings"]["chunk_size"] == 300


def test_resharding_removes_the_earlier_pairs(tmp_path):
    translate_fasta(EIGHT, str(tmp_path), chunk_size=500, shard_size=500)
    with pytest.raises(UserError, match="shard_size differ"):
        translate_fasta(EIGHT, str(tmp_path), chunk_size=500)
    translate_fasta(EIGHT, str(tmp_path), chunk_size=500, overwrite=True)
    assert [n for n in files_in(tmp_path) if n.endswith(".fa")] == ["8seq.nucleotide.fa", "8seq.protein.fa"]


def test_empty_records_are_skipped_with_a_warning(tmp_path):
    path = tmp_path / "gaps.fa"
    path.write_text(">first\nACGTACGTAAA\n>hollow description\n>last\nATGGCC\n")
    result = run_tool("virnucpro-translate", "--chunk_size", 500, "--input", path, "--outdir", tmp_path / "out")
    assert "record 2 'hollow' has an empty sequence; skipped" in result.stderr
    with open(tmp_path / "out" / "gaps.sequences.tsv") as handle:
        assert [line.split("\t")[0] for line in handle][1:] == ["first", "last"]


BAD_INPUTS = {
    "empty.fa": (b"", "empty file"),
    "blank.fa": (b"\n\n  \n", "empty file"),
    "notes.fa": (b"this is not a fasta file\n>x\nACGT\n", "line 1: not FASTA"),
    "binary.fa": (bytes(range(256)) * 4, "not FASTA"),
    "protein.fa": (b">p1\nACGT\n>p2\nMKVLEQFPST\n", "record 2 'p2': 'L' at position 4 is not a valid nucleotide letter "
                                                     "(this looks like a protein FASTA given as DNA)"),
    "odd.fa": (b">ok\nACGT\n>odd\nACG.T\n", "record 2 'odd': '.' at position 4"),
    "dup.fa": (b">a\nACGT\n>b\nAAAA\n>a\nCCCC\n", "record 3: duplicate id 'a'"),
    "noid.fa": (b">\nACGT\n", "record 1 (line 1): header has no id"),
    "hollow.fa": (b">a\n>b\n\n", "no sequences (every record is empty)"),
    "truncated.fa.gz": (gzip.compress(b">a\n" + b"ACGT" * 5000)[:-40], "cannot read"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_fails_with_one_clear_line_and_no_output(tmp_path, name):
    content, message = BAD_INPUTS[name]
    path = tmp_path / name
    path.write_bytes(content)
    outdir = tmp_path / "out"
    result = run_tool("virnucpro-translate", "--chunk_size", 500, "--input", path, "--outdir", outdir, check=False)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and str(path) in errors[0] and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert files_in(outdir) == []


def test_missing_input_and_bad_options(tmp_path):
    missing = run_tool("virnucpro-translate", "--chunk_size", 500, "--input", tmp_path / "nope.fa", "--outdir", tmp_path / "o", check=False)
    assert missing.returncode == 1 and "nope.fa: no such file" in missing.stderr
    bad = run_tool("virnucpro-translate", "--chunk_size", 500, "--input", os.path.join(VANILLA, "test_with_orfs.fa"),
                   "--outdir", tmp_path / "o", "--shard_size", -1, check=False)
    assert bad.returncode == 1 and "--shard_size" in bad.stderr
    assert files_in(tmp_path / "o") == []


def test_a_changed_input_with_the_same_name_is_refused_then_translated_again(tmp_path):
    path = tmp_path / "reads.fa"
    path.write_text(">a\nATGAAACCCGGG\n")
    translate_fasta(str(path), str(tmp_path / "out"), chunk_size=300)
    os.utime(path, (1, 1))  # only the time changed: the same input
    translate_fasta(str(path), str(tmp_path / "out"), chunk_size=300)
    path.write_text(">b\nATGAAACCCGGGTTT\n")
    with pytest.raises(UserError, match="input_sha256 differ"):
        translate_fasta(str(path), str(tmp_path / "out"), chunk_size=300)
    out = translate_fasta(str(path), str(tmp_path / "out"), chunk_size=300, overwrite=True)
    assert [i for i, _ in read_fasta_pairs(out["protein"][0])][0].startswith("b_chunk_1")


def test_non_ascii_ids_are_written_as_utf8_whatever_the_locale(tmp_path):
    path = tmp_path / "ids.fa"
    path.write_bytes(">séquence_α\nATGAAACCCGGG\n".encode("utf-8"))
    run_tool("virnucpro-translate", "--chunk_size", 500, "--input", path, "--outdir", tmp_path / "out",
             env={"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"})
    with open(tmp_path / "out" / "ids.protein.fa", encoding="utf-8") as handle:
        assert handle.readline() == ">séquence_α_chunk_1F1\n"
    with open(tmp_path / "out" / "ids.sequences.tsv", encoding="utf-8") as handle:
        assert handle.read().splitlines()[1] == "séquence_α\t12\t1"


def test_an_input_named_like_another_inputs_shard_keeps_its_files(tmp_path):
    """`x.00001.fa`'s unsharded outputs look like shard 1 of `x.fa`: translating `x.fa` into the
    same folder (even with --overwrite) must neither refuse because of them nor delete them."""
    out = tmp_path / "out"
    (tmp_path / "x.00001.fa").write_text(">a\nATGAAACCCGGG\n")
    (tmp_path / "x.fa").write_text(">b\nATGAAACCCGGGTTT\n")
    first = translate_fasta(str(tmp_path / "x.00001.fa"), str(out), chunk_size=300)
    before = {path: open(path).read() for path in first["nucleotide"] + first["protein"]}
    translate_fasta(str(tmp_path / "x.fa"), str(out), chunk_size=300)
    translate_fasta(str(tmp_path / "x.fa"), str(out), chunk_size=300, overwrite=True)
    assert {path: open(path).read() for path in before} == before
