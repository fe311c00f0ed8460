"""A JSON-Schema validator (the `jsonschema` package, draft 2020-12) with nf-schema's own keywords,
so the tests check parameters and samplesheets the way the pipeline's nf-schema plugin does:

- `format: file-path`: the value is a file: not a directory, not a glob matching several files
  (a path that does not exist passes; `exists` checks that);
- `format: directory-path`: not an existing file; `format: file-path-pattern`: any path or glob;
- `exists: true` / `false`: the path (or at least one match of a glob) exists / does not;
- `uniqueEntries: [columns]` on an array: no two rows share those columns' values;
- `errorMessage`: added in parentheses to the validator's message for a failing value.

Relative paths resolve against the launch directory (`launch_dir`: where `nextflow run` starts,
Nextflow's `file()`), never against the samplesheet's folder. URLs (s3://, https://, ...) are not
looked up here (no network in tests): only their text is checked.
"""

import csv
import glob
import os
import re

from jsonschema import Draft202012Validator, ValidationError, validators

_GLOB = re.compile(r"[*?\[\]{}]")


def _is_url(value):
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", value) is not None


def _matches(value, launch_dir):
    """The existing paths `value` names, relative paths taken from launch_dir (a glob: its matches)."""
    path = value if os.path.isabs(value) else os.path.join(launch_dir, value)
    if _GLOB.search(value):
        return glob.glob(path)
    return [path] if os.path.lexists(path) else []


def validator(schema, launch_dir):
    """A validator of `schema` with nf-schema's keywords, resolving paths against launch_dir."""
    standard_format = Draft202012Validator.VALIDATORS["format"]

    def format_(checker, fmt, instance, subschema):
        if not isinstance(instance, str) or _is_url(instance) or fmt not in ("file-path", "directory-path"):
            yield from standard_format(checker, fmt, instance, subschema)
            return
        found = _matches(instance, launch_dir)
        if fmt == "file-path" and len(found) > 1:
            yield ValidationError(f"'{instance}' is not a file, but a file path pattern")
        elif fmt == "file-path" and found and os.path.isdir(found[0]):
            yield ValidationError(f"'{instance}' is not a file, but a directory")
        elif fmt == "directory-path" and found and not os.path.isdir(found[0]):
            yield ValidationError(f"'{instance}' is not a directory, but a file")

    def exists(checker, should_exist, instance, subschema):
        if not isinstance(instance, str) or _is_url(instance):
            return
        found = bool(_matches(instance, launch_dir))
        if should_exist and not found:
            yield ValidationError(f"the file or directory '{instance}' does not exist")
        elif should_exist is False and found:
            yield ValidationError(f"the file or directory '{instance}' should not exist")

    def unique_entries(checker, columns, instance, subschema):
        if not isinstance(instance, list):
            return
        seen = set()
        for number, row in enumerate(instance, start=1):
            key = tuple(row.get(column) for column in columns) if isinstance(row, dict) else (row,)
            if key in seen:
                values = ", ".join(f"{column}: {value}" for column, value in zip(columns, key))
                yield ValidationError(f"entry {number}: detected duplicate entries: [{values}]")
            seen.add(key)

    cls = validators.extend(Draft202012Validator,
                            {"format": format_, "exists": exists, "uniqueEntries": unique_entries})
    return cls(schema)


def errors(schema, instance, launch_dir):
    """['<where>: <message>'] of every failure, nf-schema style: the `errorMessage` of the failing
    value's schema follows the validator's message in parentheses; rows are numbered from 1."""
    found = []
    for error in sorted(validator(schema, launch_dir).iter_errors(instance), key=lambda e: list(e.absolute_path)):
        path = list(error.absolute_path)
        custom = error.schema.get("errorMessage") if isinstance(error.schema, dict) else None
        message = f"{error.message} ({custom})" if custom else error.message
        where = "/".join(str(p + 1) if isinstance(p, int) else p for p in path) or "(top)"
        found.append(f"{where}: {message}")
    return found


def read_samplesheet(path):
    """Rows of a CSV samplesheet as nf-schema hands them to validation: one object per row, empty
    cells left out (so `required` catches them)."""
    with open(path, newline="") as handle:
        return [{key: value for key, value in row.items() if value not in ("", None)} for row in csv.DictReader(handle)]
