"""virnucpro.names owns every output name: its rules, and main.nf, modules/ and the pipeline's
helper functions (subworkflows/local/utils_virnucpro_pipeline) using the same names."""

import glob
import os
import re

from helpers import REPO
from nextflow_source import UTILS_NF, called_processes, render_script, sample_env, tool_commands
from virnucpro import names


def pipeline_text():
    parts = [os.path.join(REPO, "main.nf"), UTILS_NF] + sorted(glob.glob(os.path.join(REPO, "modules", "*.nf")))
    return {os.path.relpath(path, REPO): open(path).read() for path in parts}


def test_shard_names_pad_to_the_widest_number_at_least_five_digits():
    assert names.shard_name("s", 7, 12) == "s.00007"
    assert names.shard_name("s", 7, 123456) == "s.000007"
    assert names.shard_names("s", 0) == ["s"]
    many = names.shard_names("s", 100_001)
    assert many[0] == "s.000001" and many[-1] == "s.100001"
    assert sorted(many) == many  # string order is shard order past 99,999 shards


def test_translate_names_and_their_pattern_agree():
    outputs = names.translate_outputs("out", "in/reads.fasta.gz", shard_count=100_000, write_chunks=True)
    assert outputs["nucleotide"][0] == os.path.join("out", "reads.000001.nucleotide.fa")
    assert outputs["protein"][-1] == os.path.join("out", "reads.100000.protein.fa")
    assert outputs["sequences"] == os.path.join("out", "reads.sequences.tsv")
    pattern = names.translate_output_pattern("reads.fa")
    files = outputs["nucleotide"][:2] + outputs["protein"][-2:] + [outputs["sequences"], outputs["chunks"]]
    assert all(pattern.fullmatch(os.path.basename(path)) for path in files)
    assert not pattern.fullmatch("reads.1.nucleotide.fa") and not pattern.fullmatch("other.nucleotide.fa")
    assert names.shard_of(outputs["nucleotide"][-1]) == "reads.100000"


def test_shard_key_pairs_the_names_the_tools_and_the_pipeline_write():
    shard = names.shard_name("sample", 3, 200_000)
    assert names.shard_key(names.embeddings_file(shard, "dnabert")) == names.shard_key(
        names.embeddings_file(shard, "esm")) == shard


def test_predict_outputs_lists_only_predict_names(tmp_path):
    made = ["run.json", "report.html", "1_translate/x.nucleotide.fa", "1_translate/x.translate.json",
            "2_dnabert/x.000012.dnabert.h5", "3_esm/.x.esm.h5.virnucpro-partial", "4_merge/x.00001.features.h5"]
    others = ["notes.txt", "1_translate/y.nucleotide.fa", "2_dnabert/x.esm.h5", "4_merge/x.features.h5.bak", "run.json.bak"]
    for name in made + others:
        os.makedirs(os.path.dirname(tmp_path / name), exist_ok=True)
        (tmp_path / name).write_text("")
    found = [os.path.relpath(path, tmp_path) for path in names.predict_outputs(tmp_path, "in/x.fa")]
    assert sorted(found) == sorted(made)


def test_pipeline_uses_the_names_of_names_py():
    text = pipeline_text()
    everything = "\n".join(text.values())
    # The file endings the modules publish and the tools write.
    for suffix in (names.NUCLEOTIDE_FASTA, names.PROTEIN_FASTA, names.SEQUENCES_TABLE, names.FEATURES_FILE):
        assert suffix in everything, suffix
    assert "${task.ext.prefix ?: meta.shard}" + names.FEATURES_FILE in text["modules/merge.nf"]
    assert "${task.ext.prefix ?: meta.shard}.${model_meta.kind}" + names.EMBEDDINGS_SUFFIX in text["modules/extract.nf"]
    for table in (names.PREDICTIONS, names.HIGHESTSCORE, names.SUMMARY):
        assert f"path('{table}')" in text["modules/classify.nf"], table
    assert f"path('{names.REPORT}')" in text["modules/report.nf"]
    assert f"model/{names.MODEL_RECORD}" in text["modules/fetch_model.nf"]
    for made in names.TEST_MODELS.values():
        assert f"path '{made}'" in text["modules/make_test_models.nf"], made
    # Every output file name main.nf and modules/ write or read is a table of names.py or ends with
    # a suffix of names.py (`contigs/*.fa` and the like are the user's input, FASTA_EXTENSIONS).
    tables = {names.PREDICTIONS, names.HIGHESTSCORE, names.SUMMARY, names.REPORT}
    suffixes = (names.NUCLEOTIDE_FASTA, names.PROTEIN_FASTA, names.SEQUENCES_TABLE, names.FEATURES_FILE,
                "${model_meta.kind}" + names.EMBEDDINGS_SUFFIX) + names.FASTA_EXTENSIONS
    checked = 0
    for path, body in text.items():
        body = body.replace("${task.ext.prefix ?: meta.shard}", "${prefix}")  # an output's name, as the script's def
        for name in set(re.findall(r"[\w${}.*/-]*\.(?:fa|tsv|h5|html)\b", body)):
            base = name.rsplit("/", 1)[-1]
            assert base in tables or base.endswith(suffixes), f"{path}: {name}"
            checked += 1
    assert checked >= 10


def test_shard_outputs_are_named_as_names_py_names_them_or_by_ext_prefix():
    """The file each shard's task declares and writes (rendered with a task's values) is the name
    names.py gives the shard's embeddings and features; ext.prefix replaces the shard in it."""
    for called, made in (("EXTRACT_DNABERT", lambda s: names.embeddings_file(s, "dnabert")),
                         ("EXTRACT_ESM", lambda s: names.embeddings_file(s, "esm")),
                         ("MERGE", names.features_file)):
        process = called_processes()[called]
        for prefix, stem in ((None, "sample.00001"), ("renamed", "renamed")):
            env = sample_env(process, called=called, **{"task.ext.prefix": prefix})
            (declared,) = [p for kind, p in process.declared_outputs(env) if kind == "path" and not p.endswith(".version")]
            assert declared == made(stem), (called, declared)
            (argv,) = tool_commands(render_script(process, env))
            assert argv[argv.index("--output") + 1] == declared


def test_pipeline_shard_names_follow_the_same_rule():
    main = pipeline_text()["subworkflows/local/utils_virnucpro_pipeline/main.nf"]
    width = re.search(r"def width = Math\.max\((\d+), numbered\[-1\]\[0\]\.toString\(\)\.length\(\)\)", main)
    assert width and int(width.group(1)) == names.SHARD_DIGITS
    assert '"${meta.id}.${index.toString().padLeft(width, \'0\')}"' in main
    assert re.escape(names.NUCLEOTIDE_FASTA).replace("\\", "") in main.replace("\\", "")


def test_fasta_extensions_are_the_pipeline_stem_rule():
    main = pipeline_text()["subworkflows/local/utils_virnucpro_pipeline/main.nf"]
    listed = re.search(r"def ext = \[([^\]]*)\]", main).group(1)
    assert tuple(re.findall(r"'([^']+)'", listed)) == names.FASTA_EXTENSIONS


def test_pairing_keeps_a_stem_that_ends_in_a_side_word():
    """`virus_dna.dnabert.h5` pairs as shard `virus_dna` (the name predict and the pipeline give
    its features), not `virus`; the original's `_DNABERT_S.pt` / `_ESM.pt` names still pair."""
    from virnucpro.names import shard_key

    assert shard_key("virus_dna.dnabert.h5") == shard_key("virus_dna.esm.h5") == "virus_dna"
    assert shard_key("sample.dnabert.h5") != shard_key("sample_dna.esm.h5")
    assert shard_key("output_1_DNABERT_S.pt") == shard_key("output_1_ESM.pt") == "output_1"
