"""Every name the tools give their outputs, in one place (the Nextflow pipeline uses the same ones;
tests/test_names.py checks main.nf and modules/ against this file).

    <stem>                         input file name without .gz and its FASTA extension (SPEC 3)
    <stem>.nucleotide.fa, ...      translate's outputs; shards `<stem>.<n>.nucleotide.fa`, ...
    <shard>                        `<stem>.<n>`: n zero-padded to the widest shard number, at least
                                   5 digits (so names sort in shard order past 99,999 shards);
                                   `<stem>` alone for an unsharded run
    <shard>.dnabert.h5, <shard>.esm.h5, <shard>.features.h5   embeddings and merged features
    prediction_results.tsv, ..., classify.json, report.html, report.json, run.json   the tables and records
    .<name>.XXXXXXXX.tmp, .<name>.virnucpro-partial   an output `<name>` being written (hidden, beside it)
"""

import os
import re

FASTA_EXTENSIONS = (".fa", ".fasta", ".fna", ".ffn", ".faa", ".fas")

# ---- translate ------------------------------------------------------------------------------
NUCLEOTIDE_FASTA = ".nucleotide.fa"
PROTEIN_FASTA = ".protein.fa"
SEQUENCES_TABLE = ".sequences.tsv"
CHUNKS_FASTA = ".chunks.fa"
TRANSLATE_RECORD = ".translate.json"
#: Columns of `<stem>.sequences.tsv`.
SEQUENCES_COLUMNS = ("sequence_id", "length", "chunks")
#: Shard numbers have at least this many digits (more when there are more shards).
SHARD_DIGITS = 5

# ---- extract and merge ----------------------------------------------------------------------
EMBEDDINGS_SUFFIX = ".h5"  # `<shard>.<kind>.h5`, kind dnabert or esm
#: An embeddings file being made (resumable): `.<output name>.virnucpro-partial` beside it, hidden
#: and tool-named, so it can never be a user's file.
PARTIAL_SUFFIX = ".virnucpro-partial"
FEATURES_FILE = ".features.h5"
#: File name endings recognised as embedding files when a folder is given to merge.
EMBEDDING_EXTENSIONS = (".h5", ".hdf5", ".pt")
#: Root attribute of a features file: JSON of what it was made from.
MADE_FROM = "made_from"

# ---- classify and report --------------------------------------------------------------------
PREDICTIONS = "prediction_results.tsv"
HIGHESTSCORE = "prediction_results_highestscore.tsv"
SUMMARY = "sequence_summary.tsv"
CLASSIFY_RECORD = "classify.json"
REPORT = "report.html"
REPORT_RECORD = "report.json"
#: Columns of prediction_results.tsv (the original's prediction_results.txt), of
#: prediction_results_highestscore.tsv and of sequence_summary.tsv.
PREDICTION_COLUMNS = ("Sequence_ID", "Prediction", "score1", "score2")
HIGHESTSCORE_COLUMNS = ("Modified_ID", "Is_Virus")
SUMMARY_COLUMNS = ("sequence_id", "length", "chunks", "chunks_scored", "chunks_viral", "viral_fraction", "mean_virus_score",
                   "verdict")

# ---- temporary and unfinished files -------------------------------------------------------------
#: `outputs.temp_path_for(x)` writes `.<name of x>.<8 random characters>.tmp` beside x
#: (tempfile.mkstemp's random part), renamed to x when complete.
TEMP_SUFFIX = ".tmp"
#: virnucpro-fetch-model assembles a download in `.<folder name>.partial` beside its --outdir.
MODEL_PARTIAL_SUFFIX = ".partial"
_TEMP_RANDOM = r"[a-z0-9_]{8}"


def temp_prefix(name):
    """How every temporary name of the output `name` starts: `.<name>.`."""
    return f".{name}."


def temp_pattern(name):
    """A regex matching exactly the temporary names of the output `name` (`.<name>.XXXXXXXX.tmp`)."""
    return re.compile(re.escape(temp_prefix(name)) + _TEMP_RANDOM + re.escape(TEMP_SUFFIX))


_UNFINISHED = re.compile(rf"\.(.+)(?:\.{_TEMP_RANDOM}{re.escape(TEMP_SUFFIX)}|{re.escape(PARTIAL_SUFFIX)}"
                         rf"|{re.escape(MODEL_PARTIAL_SUFFIX)})")


def final_name(name):
    """The output an unfinished file's name stands for (`.x.XXXXXXXX.tmp`, `.x.virnucpro-partial`,
    `.x.partial` -> `x`): what the user asked for; any other name as it is."""
    unfinished = _UNFINISHED.fullmatch(name)
    return unfinished.group(1) if unfinished else name


# ---- predict --------------------------------------------------------------------------------
#: The stages of a run, in order: they label predict's log lines and timings and the tools' progress bars.
STAGES = ("translate", "dnabert", "esm", "merge", "classify", "report")
*_, CLASSIFY_STAGE, REPORT_STAGE = STAGES  # the labels classify and report print themselves
STAGE_FOLDERS = {"translate": "1_translate", "dnabert": "2_dnabert", "esm": "3_esm", "merge": "4_merge"}
RUN_RECORD = "run.json"
TIMINGS = "timings.json"

# ---- models ---------------------------------------------------------------------------------
#: Written last into a virnucpro-fetch-model snapshot: what it is; its presence marks it complete.
MODEL_RECORD = "virnucpro_model.json"
#: What virnucpro-make-test-models writes into its folder.
TEST_MODELS = {"dnabert": "dnabert", "esm": "esm", "classifier": "classifier.pth", "classifier_300": "classifier_300.pth"}


def stem(path):
    """File name without `.gz` and a FASTA extension: `reads.fasta.gz` -> `reads` (SPEC 3)."""
    name = os.path.basename(str(path))
    if name.endswith(".gz"):
        name = name[:-3]
    for ext in FASTA_EXTENSIONS:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def shard_name(base, number, count):
    """`<base>.<number>`, the number zero-padded to the width of `count` (at least SHARD_DIGITS)."""
    return f"{base}.{number:0{max(SHARD_DIGITS, len(str(count)))}d}"


def shard_names(base, count):
    """The names of `count` shards of `base`; one unsharded pair (count 0) is `base` itself."""
    return [shard_name(base, number, count) for number in range(1, count + 1)] if count else [base]


def translate_outputs(outdir, input, shard_count=0, write_chunks=False):
    """translate's final paths for an input: the (sharded) FASTA pairs, the table, its record, the chunks."""
    base = os.path.join(outdir, stem(input))
    shards = shard_names(base, shard_count)
    paths = {
        "nucleotide": [shard + NUCLEOTIDE_FASTA for shard in shards],
        "protein": [shard + PROTEIN_FASTA for shard in shards],
        "sequences": base + SEQUENCES_TABLE,
        "manifest": base + TRANSLATE_RECORD,
    }
    if write_chunks:
        paths["chunks"] = base + CHUNKS_FASTA
    return paths


def translate_output_pattern(input):
    """A regex matching the names of translate's outputs for `input`, any shard layout, the record excepted."""
    sides = "|".join(re.escape(s) for s in (NUCLEOTIDE_FASTA, PROTEIN_FASTA))
    others = "|".join(re.escape(s) for s in (SEQUENCES_TABLE, CHUNKS_FASTA))
    return re.compile(rf"{re.escape(stem(input))}((\.\d{{{SHARD_DIGITS},}})?({sides})|{others})")


def shard_of(nucleotide_fasta):
    """`x/8seq.00001.nucleotide.fa` -> `8seq.00001`: the name a shard's later files share."""
    name = os.path.basename(str(nucleotide_fasta))
    return name[: -len(NUCLEOTIDE_FASTA)] if name.endswith(NUCLEOTIDE_FASTA) else stem(name)


def embeddings_file(shard, kind):
    """`<shard>.dnabert.h5` or `<shard>.esm.h5`."""
    return f"{shard}.{kind}{EMBEDDINGS_SUFFIX}"


def features_file(shard):
    return shard + FEATURES_FILE


_SIDE_WORDS = re.compile(
    r"[._-](nucleotide|nucl|dna|protein|prot|dnabert[_-]?s?|esm2?|embeddings?|emb)$", re.IGNORECASE
)


def shard_key(path):
    """The shard name two sides of a pair share: `<shard>.dnabert.h5` / `<shard>.esm.h5` -> `<shard>`;
    for other names (the original's), extension and side words removed.

    `sample.00001.nucleotide.dnabert.h5` and `sample.00001.protein.esm.h5` -> `sample.00001`;
    the original's `output_1_DNABERT_S.pt` and `output_1_ESM.pt` -> `output_1`.
    """
    name = os.path.basename(str(path))
    for kind in ("dnabert", "esm"):  # this project's own names: exactly `<shard>.<kind>.h5`
        own = embeddings_file("", kind)
        if name.endswith(own) and len(name) > len(own):
            name = name[: -len(own)]
            return re.sub(r"\.(nucleotide|protein)$", "", name)  # merge's docs name pairs so too
    for ext in EMBEDDING_EXTENSIONS:
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    while True:
        shorter = _SIDE_WORDS.sub("", name)
        if shorter == name or not shorter:
            return name
        name = shorter


def as_path_list(value):
    """Paths as the tools accept them: a path, a comma-separated string, or a list/tuple of paths
    (as fire passes them) -> [str]."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    text = str(value)
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return [part.strip() for part in text.split(",") if part.strip()]


def _or_its_partial(pattern):
    """A regex for a name matching `pattern`, or for its resumable `.<name>.virnucpro-partial`."""
    return rf"{pattern}|\.{pattern}{re.escape(PARTIAL_SUFFIX)}"


def predict_outputs(outdir, input):
    """The files `virnucpro-predict` writes for `input` in `outdir` that exist now (any shard
    layout, unfinished `.<name>.virnucpro-partial` embeddings included): what --overwrite removes, nothing else."""
    shards = rf"{re.escape(stem(input))}(\.\d{{{SHARD_DIGITS},}})?"
    wanted = {
        STAGE_FOLDERS["translate"]: re.compile(rf"{translate_output_pattern(input).pattern}|{re.escape(stem(input) + TRANSLATE_RECORD)}"),
        STAGE_FOLDERS["dnabert"]: re.compile(_or_its_partial(shards + re.escape(embeddings_file("", "dnabert")))),
        STAGE_FOLDERS["esm"]: re.compile(_or_its_partial(shards + re.escape(embeddings_file("", "esm")))),
        STAGE_FOLDERS["merge"]: re.compile(shards + re.escape(FEATURES_FILE)),
        "": re.compile("|".join(re.escape(name) for name in (PREDICTIONS, HIGHESTSCORE, SUMMARY, CLASSIFY_RECORD, REPORT,
                                                            REPORT_RECORD, RUN_RECORD, TIMINGS))),
    }
    found = []
    for folder, pattern in wanted.items():
        path = os.path.join(str(outdir), folder)
        if os.path.isdir(path):
            found += sorted(os.path.join(path, name) for name in os.listdir(path)
                            if pattern.fullmatch(name) and os.path.isfile(os.path.join(path, name)))
    return found
