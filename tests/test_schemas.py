"""nextflow_schema.json and assets/schema_input.json checked by a real JSON-Schema validator
(jsonschema, draft 2020-12) with nf-schema's keywords (tests/nf_schema.py): the schemas are valid,
the config's defaults and the example samplesheet pass, and the mistakes users make fail with the
message nf-schema would give."""

import json
import os
import shutil

import pytest
from jsonschema import Draft202012Validator

import nf_schema
from helpers import REPO
from nextflow_source import blocks, declared_params, params_block, profiles

SCHEMA = json.load(open(os.path.join(REPO, "nextflow_schema.json")))
SAMPLESHEET_SCHEMA = json.load(open(os.path.join(REPO, "assets", "schema_input.json")))
SAMPLE_HINT = f"({SAMPLESHEET_SCHEMA['items']['properties']['sample']['errorMessage']})"
FASTA_HINT = f"({SAMPLESHEET_SCHEMA['items']['properties']['fasta']['errorMessage']})"
EXAMPLE = os.path.join(REPO, "assets", "samplesheet.csv")
FASTA = os.path.join(REPO, "examples", "metagenome_scaffolds.fa")


def params_errors(params, launch_dir=REPO):
    return nf_schema.errors(SCHEMA, params, launch_dir)


def sheet_errors(rows, launch_dir):
    return nf_schema.errors(SAMPLESHEET_SCHEMA, rows, launch_dir)


@pytest.mark.parametrize("schema", [SCHEMA, SAMPLESHEET_SCHEMA], ids=["nextflow_schema", "schema_input"])
def test_schemas_are_valid_draft_2020_12(schema):
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_config_defaults_and_every_profiles_params_pass():
    defaults = {name: value for name, value in declared_params().items() if value is not None}
    assert params_errors(defaults) == []
    checked = set()
    for name, body in profiles().items():
        for _, block in blocks(body, r"\bparams"):
            changed = params_block("params {\n" + block + "\n}")
            overridden = dict(defaults, **{k: v for k, v in changed.items() if v is not None and "$" not in str(v)})
            assert params_errors(overridden) == [], name
            checked.add(name)
    assert {"test", "gpu", "awsbatch", "google"} <= checked


@pytest.mark.parametrize("name, value, message", [
    ("precision", "fp64", "'fp64' is not one of ['fp32', 'bf16', 'fp16']"),
    ("device", "gpu", "'gpu' does not match"),
    ("threshold", 1.5, "1.5 is greater than the maximum of 1"),
    ("shard_size", -1, "-1 is less than the minimum of 0"),
    ("chunk_size", "500bp", "'500bp' is not of type 'integer'"),
    ("chunk_size", 400, "400 is not one of [300, 500]"),
    ("publish_dir_mode", "hardlink", "'hardlink' is not one of"),
    ("input", "samples.tsv", "'samples.tsv' does not match"),
])
def test_bad_parameter_values_fail(name, value, message):
    found = params_errors({name: value})
    assert found and all(error.startswith(f"{name}: ") for error in found), found
    assert any(error.startswith(f"{name}: {message}") for error in found), found


def test_input_must_be_an_existing_file_not_a_folder(tmp_path):
    sheet = tmp_path / "sheet.csv"
    assert params_errors({"input": str(sheet)}) == [f"input: the file or directory '{sheet}' does not exist"]
    sheet.write_text("sample,fasta\n")
    assert params_errors({"input": str(sheet)}) == []
    (tmp_path / "folder.csv").mkdir()
    assert params_errors({"input": "folder.csv"}, launch_dir=tmp_path) == ["input: 'folder.csv' is not a file, but a directory"]
    assert params_errors({"input": "sheet.csv"}, launch_dir=tmp_path) == []


def test_example_samplesheet_passes_when_launched_from_the_repository():
    rows = nf_schema.read_samplesheet(EXAMPLE)
    assert [row["sample"] for row in rows] == ["scaffolds", "scaffolds_again"]
    assert sheet_errors(rows, REPO) == []


def test_relative_paths_resolve_against_the_launch_directory_not_the_samplesheet(tmp_path):
    """The documented rule (README 'Input', both schemas' descriptions): Nextflow's file()
    resolves a relative path from where `nextflow run` starts."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    shutil.copy(FASTA, project / "data" / "a.fa")
    sheet = project / "data" / "sheet.csv"
    sheet.write_text("sample,fasta\na,a.fa\n")  # relative to the samplesheet's folder: wrong
    rows = nf_schema.read_samplesheet(sheet)
    assert sheet_errors(rows, project) == [f"1/fasta: the file or directory 'a.fa' does not exist {FASTA_HINT}"]
    assert sheet_errors(rows, project / "data") == []
    sheet.write_text("sample,fasta\na,data/a.fa\n")  # relative to the launch directory: right
    assert sheet_errors(nf_schema.read_samplesheet(sheet), project) == []
    sheet.write_text(f"sample,fasta\na,{project / 'data' / 'a.fa'}\n")  # absolute: from anywhere
    assert sheet_errors(nf_schema.read_samplesheet(sheet), tmp_path) == []
    # The example sheet's relative paths hold only from the repository root.
    assert sheet_errors(nf_schema.read_samplesheet(EXAMPLE), tmp_path) == [
        f"{row}/fasta: the file or directory 'examples/metagenome_scaffolds.fa' does not exist {FASTA_HINT}"
        for row in (1, 2)
    ]


def test_samplesheet_mistakes_fail_with_nf_schemas_messages(tmp_path):
    for name in ("a.fa", "b.fa", "c.fa.gz"):
        shutil.copy(FASTA, tmp_path / name)
    (tmp_path / "dir.fa").mkdir()
    cases = [
        ([{"sample": "a", "fasta": "a.fa"}, {"sample": "c", "fasta": "c.fa.gz"}], []),
        ([{"sample": "a b", "fasta": "a.fa"}],
         [f"1/sample: 'a b' does not match '^[A-Za-z0-9][A-Za-z0-9._-]*$' {SAMPLE_HINT}"]),
        ([{"sample": "a", "fasta": "a.txt"}],
         [f"1/fasta: the file or directory 'a.txt' does not exist {FASTA_HINT}",
          f"1/fasta: 'a.txt' does not match '^\\\\S+\\\\.(fa|fasta|fna|ffn|fas)(\\\\.gz)?$' {FASTA_HINT}"]),
        ([{"sample": "a", "fasta": "missing.fa"}],
         [f"1/fasta: the file or directory 'missing.fa' does not exist {FASTA_HINT}"]),
        ([{"sample": "a", "fasta": "dir.fa"}], [f"1/fasta: 'dir.fa' is not a file, but a directory {FASTA_HINT}"]),
        ([{"sample": "a", "fasta": "[ab].fa"}],
         [f"1/fasta: '[ab].fa' is not a file, but a file path pattern {FASTA_HINT}"]),
        ([{"sample": "a"}], ["1: 'fasta' is a required property"]),
        ([{"sample": "a", "fasta": "a.fa"}, {"sample": "a", "fasta": "b.fa"}],
         ["(top): entry 2: detected duplicate entries: [sample: a]"]),
        # URLs are checked by the pipeline when it stages them, not here (no network): text only.
        ([{"sample": "a", "fasta": "https://example.org/a.fa"}], []),
    ]
    for rows, expected in cases:
        assert sorted(sheet_errors(rows, tmp_path)) == sorted(expected), rows


def test_exists_false_and_directory_paths_follow_nf_schema(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    schema = {"type": "object", "properties": {
        "new": {"type": "string", "format": "directory-path", "exists": False},
        "dir": {"type": "string", "format": "directory-path", "exists": True}}}
    assert nf_schema.errors(schema, {"new": "out", "dir": "folder"}, tmp_path) == []
    assert nf_schema.errors(schema, {"new": "folder", "dir": "file"}, tmp_path) == [
        "dir: 'file' is not a directory, but a file",
        "new: the file or directory 'folder' should not exist",
    ]


def test_empty_cells_are_left_out_so_required_catches_them(tmp_path):
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("sample,fasta\na,\n")
    assert nf_schema.read_samplesheet(sheet) == [{"sample": "a"}]
    assert sheet_errors(nf_schema.read_samplesheet(sheet), tmp_path) == ["1: 'fasta' is a required property"]
