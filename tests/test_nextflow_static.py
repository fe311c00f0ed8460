"""Static checks of the Nextflow pipeline (main.nf, modules/, nextflow.config, conf/, schema).

Nextflow cannot run here, so the files are parsed: processes (directives, inputs, outputs,
script and stub blocks), the params declared in nextflow.config, the profiles, and the command
lines each script runs, which are checked against the options the tools themselves accept (the
signature of the function each bin/ script hands to `virnucpro.cli.run`).

The small parser and the script renderer here are also used by test_nextflow_scripts.py.
"""

import ast
import glob
import importlib
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import textwrap

import pytest

from helpers import BIN, REPO

MODULES = os.path.join(REPO, "modules")
MAIN_NF = os.path.join(REPO, "main.nf")
CONFIG = os.path.join(REPO, "nextflow.config")
SCHEMA = os.path.join(REPO, "nextflow_schema.json")
SECTIONS = ("input", "output", "when", "script", "shell", "exec", "stub")

# ------------------------------------------------------------------ lexing


def _skip_string(text, i):
    """Index just past the string literal starting at text[i] ('...', "...", '''...''', \"\"\"...\"\"\")."""
    quote = text[i]
    if text.startswith(quote * 3, i):
        end = i + 3
        while True:
            end = text.index(quote * 3, end)
            if text[end - 1] != "\\":
                return end + 3
            end += 1
    end = i + 1
    while text[end] != quote:
        end += 2 if text[end] == "\\" else 1
    return end + 1


def _skip_slashy(text, i):
    """Index past a /regex/ literal at text[i] (only where an operator or '(' precedes it)."""
    end = i + 1
    while text[end] != "/":
        end += 2 if text[end] == "\\" else 1
    return end + 1


def strip_comments(text):
    """Groovy text with // and /* */ comments blanked (strings left intact)."""
    out, i = [], 0
    while i < len(text):
        if text[i] in "'\"":
            end = _skip_string(text, i)
            out.append(text[i:end])
            i = end
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
        elif text.startswith("/*", i):
            i = text.index("*/", i) + 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def matching_brace(text, open_index):
    """Index of the '}' closing the '{' at open_index, skipping strings and slashy regexes."""
    depth, i = 0, open_index
    while i < len(text):
        char = text[i]
        if char in "'\"":
            i = _skip_string(text, i)
            continue
        if char == "/" and re.search(r"[=(,~]\s*$", text[max(0, i - 20):i]):
            i = _skip_slashy(text, i)
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise AssertionError(f"unbalanced braces from offset {open_index}")


def blocks(text, pattern):
    """[(match, body)] for each `pattern {` ... `}` at any depth, body without the braces."""
    found = []
    for match in re.finditer(pattern + r"\s*\{", text):
        start = match.end() - 1
        found.append((match, text[start + 1:matching_brace(text, start)]))
    return found


# ------------------------------------------------------------------ processes


class Process:
    """One parsed `process NAME { ... }`."""

    def __init__(self, name, path, body):
        self.name, self.path = name, path
        self.directives, self.inputs, self.outputs = [], [], []
        self.script_defs, self.script, self.stub = [], None, None
        self._parse(body)

    def _parse(self, body):
        section, chunks = "directives", {"directives": []}
        lines = body.split("\n")
        i = 0
        while i < len(lines):
            line = lines[i].strip()
            label = re.fullmatch(r"(\w+):", line)
            if label and label.group(1) in SECTIONS:
                section = label.group(1)
                chunks[section] = []
            else:
                chunks[section].append(lines[i])
            i += 1
        self.directives = [(d.split(None, 1)[0], d.split(None, 1)[1] if " " in d else "")
                           for d in (l.strip() for l in chunks["directives"]) if d]
        self.inputs = [l.strip() for l in chunks.get("input", []) if l.strip()]
        self.outputs = [l.strip() for l in chunks.get("output", []) if l.strip()]
        assert "shell" not in chunks and "exec" not in chunks, f"{self.name}: use script:, not shell:/exec:"
        self.script_defs, self.script = self._split_script("\n".join(chunks.get("script", [])))
        stub_defs, self.stub = self._split_script("\n".join(chunks.get("stub", [])))
        assert not stub_defs, f"{self.name}: stub blocks hold only the string"

    def _split_script(self, text):
        """(['def NAME = EXPR', ...], the triple-quoted GString's raw content) of a script block."""
        if not text.strip():
            return [], None
        start = text.index('"""')
        end = _skip_string(text, start)
        assert not text[end:].strip(), f"{self.name}: nothing may follow the script string"
        defs = [l.strip() for l in text[:start].split("\n") if l.strip()]
        return defs, text[start + 3:end - 3]

    def directive(self, name):
        return [args for key, args in self.directives if key == name]

    def labels(self):
        return [ast.literal_eval(args) for args in self.directive("label")]

    def declared_outputs(self):
        """[(qualifier, pattern)] of the path outputs, e.g. ('path', 'shards/*.nucleotide.fa')."""
        found = []
        for line in self.outputs:
            found += [("path", p) for p in re.findall(r"path\(?\s*'([^']+)'", line)]
        return found

    def path_inputs(self):
        """[(name, stageAs or None)] of the path inputs, in order."""
        found = []
        for line in self.inputs:
            for match in re.finditer(r"path\(?\s*(\w+)(?:\s*,\s*stageAs:\s*'([^']+)')?", line):
                found.append((match.group(1), match.group(2)))
        return found

    def val_inputs(self):
        return [m.group(1) for line in self.inputs for m in re.finditer(r"val\((\w+)\)", line)]


def parse_processes(path):
    text = strip_comments(open(path).read())
    return [Process(match.group(1), path, body) for match, body in blocks(text, r"\bprocess\s+(\w+)")]


def module_processes():
    """{NAME: Process} over modules/*.nf (one process per file)."""
    found = {}
    for path in sorted(glob.glob(os.path.join(MODULES, "*.nf"))):
        for process in parse_processes(path):
            found[process.name] = process
    return found


# ------------------------------------------------------------------ rendering Groovy strings
#
# A script block is rendered the way Nextflow would, for an honest bash run: the block's
# `def NAME = EXPR` lines are evaluated, then every `${a.b.c}` in the GString is replaced by
# the value bound to that expression, escapes (\$, \\, \") are undone and the common
# indentation is stripped (Groovy's stripIndent, which Nextflow applies). Only these forms are
# understood, on purpose, so that the substitution stays honest:
#   ${name} / ${name.field...}                      a value from `env` (None is an error: Groovy would print 'null')
#   def x = REF ?: 'literal'                        elvis
#   def x = REF ? "gstring" : 'literal'             ternary on truthiness
#   def x = REF != null ? "gstring" : 'literal'     ternary on null
# Anything else fails the test with "too complex to render": keep the modules that simple.

_REF = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"


class PathList(list):
    """Staged file names of a multi-file path input: Nextflow renders them space-separated."""


def _value(env, ref):
    if ref not in env:
        raise KeyError(f"no value bound for ${{{ref}}}")
    return env[ref]


def render_gstring(raw, env):
    def substitute(match):
        expr = match.group(1).strip()
        if not re.fullmatch(_REF, expr):
            raise AssertionError(f"${{{expr}}} is too complex to render; bind it with a simple def")
        value = _value(env, expr)
        if value is None:
            raise AssertionError(f"${{{expr}}} is null here: Groovy would write 'null' into the script")
        if isinstance(value, PathList):
            return " ".join(map(str, value))
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    out, i = [], 0
    while i < len(raw):
        if raw.startswith("\\$", i):
            out.append("$")
            i += 2
        elif raw.startswith("\\\\", i):
            out.append("\\")
            i += 2
        elif raw.startswith('\\"', i):
            out.append('"')
            i += 2
        elif raw.startswith("${", i):
            end = raw.index("}", i)
            out.append(substitute(re.match(r"\$\{([^}]*)\}", raw[i:end + 1])))
            i = end + 1
        elif raw[i] == "$" and re.match(r"\$[A-Za-z_]", raw[i:i + 2]):
            raise AssertionError(f"bare ${raw[i + 1:i + 12]}... in a script: write \\$ for bash or ${{...}}")
        else:
            out.append(raw[i])
            i += 1
    return "".join(out)


def _literal(text):
    text = text.strip()
    if text.startswith('"'):
        return ("gstring", text[1:-1])
    return ("literal", ast.literal_eval(text))


def evaluate_def(line, env):
    """Bind the variable of one `def NAME = EXPR` line in env (forms listed above)."""
    match = re.fullmatch(r"def\s+(\w+)\s*=\s*(.+)", line)
    assert match, f"not a simple def: {line}"
    name, expr = match.groups()
    elvis = re.fullmatch(rf"({_REF})\s*\?:\s*('[^']*')", expr)
    ternary = re.fullmatch(rf"({_REF})(\s*!=\s*null)?\s*\?\s*(\"[^\"]*\")\s*:\s*('[^']*')", expr)
    if elvis:
        value = _value(env, elvis.group(1))
        env[name] = value if value else ast.literal_eval(elvis.group(2))
    elif ternary:
        ref, null_test, when_true, when_false = ternary.groups()
        value = _value(env, ref)
        chosen = when_true if (value is not None if null_test else bool(value)) else when_false
        kind, text = _literal(chosen)
        env[name] = render_gstring(text, env) if kind == "gstring" else text
    else:
        raise AssertionError(f"too complex to render: {line}")


def render_script(process, env, stub=False):
    """The bash script Nextflow would run for `process` with these bound values."""
    env = dict(env)
    if not stub:
        for line in process.script_defs:
            evaluate_def(line, env)
    raw = process.stub if stub else process.script
    return textwrap.dedent(render_gstring(raw, env)).strip("\n") + "\n"


def directive_string(process, name, env):
    """A directive's "GString" argument rendered with env, e.g. the storeDir path."""
    (args,) = process.directive(name)
    match = re.fullmatch(r'"([^"]*)"', args.strip())
    assert match, f"{process.name}: {name} should be one double-quoted string, got {args}"
    return render_gstring(match.group(1), env)


# ------------------------------------------------------------------ tool command lines


def tool_function(tool):
    """The function a bin/ script hands to virnucpro.cli.run (parsed from the script, not guessed)."""
    source = open(os.path.join(BIN, tool)).read()
    tree = ast.parse(source)
    imports = {alias.asname or alias.name: node.module for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) for alias in node.names}
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
             and getattr(node.func, "id", None) == "run" and imports.get("run") == "virnucpro.cli"]
    assert len(calls) == 1, f"{tool}: expected one run(...) call"
    name = calls[0].args[0].id
    return getattr(importlib.import_module(imports[name]), name)


def tool_commands(script):
    """[[argv...]] of every virnucpro-* command in a rendered bash script."""
    commands = []
    joined = re.sub(r"\\\n", " ", script)
    for line in joined.split("\n"):
        for match in re.finditer(r"(?:^|[\s(=$]|\$\()(virnucpro-[\w-]+\s[^|;&)<>]*)", line):
            commands.append(shlex.split(match.group(1)))
    return commands


def check_fire_command(argv):
    """Assert that a fire tool accepts argv: each --option is a parameter, positionals fit, the
    required parameters are given. Returns the bound arguments."""
    tool, args = argv[0], argv[1:]
    assert os.path.exists(os.path.join(BIN, tool)), f"{tool}: no such tool in bin/"
    function = tool_function(tool)
    signature = inspect.signature(function)
    parameters = signature.parameters
    has_varargs = any(p.kind is p.VAR_POSITIONAL for p in parameters.values())
    named, positional, i = {}, [], 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0].replace("-", "_")
            assert name in parameters and parameters[name].kind is not inspect.Parameter.VAR_POSITIONAL, \
                f"{tool} does not accept --{name} (it accepts {', '.join(parameters)})"
            values = []
            if "=" not in arg:
                while i + 1 < len(args) and not args[i + 1].startswith("--"):
                    values.append(args[i + 1])
                    i += 1
            if len(values) > 1:  # fire gives the extra words to *args, if the function has one
                assert has_varargs, f"{tool}: --{name} given {len(values)} values"
                positional += values[1:]
            named[name] = values[0] if values else True
        else:
            positional.append(arg)
        i += 1
    free = [p for p in parameters.values() if p.name not in named
            and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not has_varargs:
        assert len(positional) <= len(free), f"{tool}: too many positional arguments {positional}"
    bound = dict(named)
    bound.update({p.name: value for p, value in zip(free, positional)})
    missing = [p.name for p in parameters.values() if p.default is p.empty
               and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in bound]
    assert not missing, f"{tool}: required option(s) not given: {missing}"
    return bound


# ------------------------------------------------------------------ config


def _groovy_literal(text):
    text = text.strip()
    if text == "null":
        return None
    if text in ("true", "false"):
        return text == "true"
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?\d+\.\d*", text):
        return float(text)
    if text[0] in "'\"":
        return text[1:-1]
    return ("expression", text)


def params_block(text):
    """{name: default} of the assignments in the first `params { }` block of config text."""
    ((_, body),) = blocks(text, r"(?m)^params")[:1]
    return dict((m.group(1), _groovy_literal(m.group(2)))
                for m in re.finditer(r"^\s*(\w+)\s*=\s*(.+?)\s*$", body, re.M))


def declared_params():
    return params_block(strip_comments(open(CONFIG).read()))


def profiles():
    """{name: profile body text, with its includeConfig files inlined}."""
    text = strip_comments(open(CONFIG).read())
    ((_, body),) = blocks(text, r"\bprofiles")
    found = {}
    for name, inner in top_level_blocks(body):
        for include in re.findall(r"includeConfig\s+'([^']+)'", inner):
            inner += "\n" + strip_comments(open(os.path.join(REPO, include)).read())
        found[name] = inner
    return found


def top_level_blocks(body):
    """[(name, inner text)] of the `name { ... }` blocks directly inside body."""
    found, i = [], 0
    while i < len(body):
        if body[i] in "'\"":
            i = _skip_string(body, i)
            continue
        match = re.compile(r"(\w+)\s*\{").match(body, i)
        if match and (i == 0 or not re.match(r"[\w.]", body[i - 1])):
            close = matching_brace(body, match.end() - 1)
            found.append((match.group(1), body[match.end():close]))
            i = close + 1
            continue
        i += 1
    return found


def all_pipeline_files():
    return ([MAIN_NF, CONFIG] + sorted(glob.glob(os.path.join(MODULES, "*.nf")))
            + sorted(glob.glob(os.path.join(REPO, "conf", "*.config"))))


def schema_properties():
    schema = json.load(open(SCHEMA))
    return {name: spec for group in schema["$defs"].values() for name, spec in group["properties"].items()}


# ================================================================== tests


@pytest.fixture(scope="module")
def processes():
    return module_processes()


def test_every_pipeline_file_parses_with_balanced_braces():
    for path in all_pipeline_files():
        text = strip_comments(open(path).read())
        depth = 0
        i = 0
        while i < len(text):
            if text[i] in "'\"":
                i = _skip_string(text, i)
                continue
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            assert depth >= 0, f"{path}: '}}' without '{{' near offset {i}"
            i += 1
        assert depth == 0, f"{path}: {depth} unclosed '{{'"


def test_one_process_per_module_file_named_after_it():
    for path in glob.glob(os.path.join(MODULES, "*.nf")):
        found = parse_processes(path)
        assert len(found) == 1, f"{path}: {len(found)} processes"
        assert os.path.basename(path) == found[0].name.lower() + ".nf"


def test_main_includes_every_module_and_calls_every_process(processes):
    text = strip_comments(open(MAIN_NF).read())
    includes = re.findall(r"include\s*\{\s*(\w+)(?:\s+as\s+(\w+))?\s*\}\s*from\s*'([^']+)'", text)
    assert includes
    included = set()
    for name, alias, source in includes:
        path = os.path.join(REPO, source + ".nf")
        assert os.path.exists(path), f"main.nf includes missing {source}"
        assert name in [p.name for p in parse_processes(path)], f"{source} has no process {name}"
        included.add(name)
        called = alias or name
        assert re.search(rf"\b{called}\s*\(", text), f"main.nf includes {called} but never calls it"
    assert included == set(processes), f"modules not included: {set(processes) - included}"
    expected = {"TRANSLATE", "FETCH_MODEL", "MAKE_TEST_MODELS", "EXTRACT_DNABERT", "EXTRACT_ESM", "MERGE",
                "CLASSIFY", "REPORT"}
    assert expected <= set(processes)


def test_every_process_has_a_stub_and_emits_versions(processes):
    for process in processes.values():
        assert process.script, f"{process.name}: no script block"
        assert process.stub, f"{process.name}: no stub block"
        assert any(re.search(r"path\s*\(?\s*'versions.yml'\s*\)?\s*,\s*emit:\s*versions", line)
                   for line in process.outputs), f"{process.name}: does not emit versions.yml"
        for block in (process.script, process.stub):
            assert "versions.yml" in block and '"${task.process}":' in block, f"{process.name}: versions not written"


def test_every_process_runs_a_tool_with_options_it_accepts(processes):
    """Each script's command lines, rendered with every optional option on and with all off,
    are accepted by the tools themselves (fire signatures). Processes run only bin/ tools: the hub
    is reached through virnucpro-fetch-model, not a hub client of its own."""
    for process in processes.values():
        for optional in (True, False):
            env = sample_env(process, optional=optional)
            script = render_script(process, env)
            commands = tool_commands(script)
            assert commands, f"{process.name}: runs no bin/virnucpro-* tool"
            for argv in commands:
                check_fire_command(argv)
            assert not re.search(r"(^|[\s(])(hf|huggingface-cli|wget|curl)\s", script, re.M), \
                f"{process.name}: downloads without the bin/ tools"


def test_tool_options_checker_rejects_what_the_tools_reject():
    """The checker above must be able to fail: unknown options, missing required ones."""
    check_fire_command(["virnucpro-merge", "--nucleotide", "a.h5", "--protein", "b.h5", "--output", "c.h5"])
    with pytest.raises(AssertionError, match="does not accept --nucleotides"):
        check_fire_command(["virnucpro-merge", "--nucleotides", "a.h5", "--protein", "b.h5", "--output", "c.h5"])
    with pytest.raises(AssertionError, match="required"):
        check_fire_command(["virnucpro-translate", "--outdir", "x"])
    with pytest.raises(AssertionError, match="no such tool"):
        check_fire_command(["virnucpro-nothing", "--input", "x"])


def test_extraction_processes_and_only_they_are_labelled_gpu(processes):
    for process in processes.values():
        runs_extract = any(argv[0] == "virnucpro-extract"
                           for argv in tool_commands(render_script(process, sample_env(process))))
        assert runs_extract == ("gpu" in process.labels()), f"{process.name}: labels {process.labels()}"
    assert "gpu" in processes["EXTRACT_DNABERT"].labels() and "gpu" in processes["EXTRACT_ESM"].labels()


def test_store_dirs_are_keyed_by_everything_that_determines_the_content(processes):
    """Render each storeDir with distinct values for every key part: each must change the path."""
    keyed = {
        "EXTRACT_DNABERT": ["meta.nucleotide_md5", "meta.dnabert_key", "params.precision", "workflow.manifest.version"],
        "EXTRACT_ESM": ["meta.protein_md5", "meta.esm_key", "params.precision", "workflow.manifest.version"],
        "MERGE": ["meta.nucleotide_md5", "meta.protein_md5", "meta.dnabert_key", "meta.esm_key",
                  "params.precision", "workflow.manifest.version"],
        "FETCH_MODEL": ["key"],
        "MAKE_TEST_MODELS": ["workflow.manifest.version"],
    }
    rendered = {}
    for name, parts in keyed.items():
        process = processes[name]
        env = sample_env(process)
        base = directive_string(process, "storeDir", env)
        assert base.startswith(env["params.store_dir"] + "/")
        for part in parts:
            changed = dict(env, **{part: str(env[part]) + "-other"})
            assert directive_string(process, "storeDir", changed) != base, f"{name}: storeDir ignores {part}"
        # Nothing that does not determine the content (shard name, sample id) may be in the key,
        # or identical content under another name would be computed again.
        for part in ("meta.shard", "meta.id"):
            if part in env:
                assert directive_string(process, "storeDir", dict(env, **{part: "renamed"})) == base, \
                    f"{name}: storeDir depends on {part}"
        rendered[name] = base
    assert len(set(rendered.values())) == len(rendered), "two processes share a store path"
    for name in ("TRANSLATE", "CLASSIFY", "REPORT"):
        assert not processes[name].directive("storeDir"), f"{name} should not be stored"
    for name in ("CLASSIFY", "REPORT"):
        assert processes[name].directive("publishDir"), f"{name}: final outputs are published"


def test_main_builds_the_meta_keys_the_store_dirs_use():
    text = strip_comments(open(MAIN_NF).read())
    for key in ("nucleotide_md5", "protein_md5", "dnabert_key", "esm_key", "shard", "shard_count"):
        assert re.search(rf"\b{key}\s*:", text), f"main.nf never sets meta.{key}"
    assert re.search(r"shardItems\(meta, nucleotides, proteins, checksums, dnabert, esm\)", text)
    assert re.search(r"\.combine\(dnabert_key\)\s*\.combine\(esm_key\)", text)
    # Test models are keyed by their content too, not by a name.
    assert re.search(r'dnabert_key = dnabert_model\.map \{ folder -> "test-\$\{folderDigest\(folder\)\}"', text)
    assert re.search(r"inShardOrder\(shards, features\)", text)


def test_every_param_used_is_declared_and_documented():
    declared = declared_params()
    schema = schema_properties()
    used = set()
    for path in all_pipeline_files():
        used |= set(re.findall(r"\bparams\.(\w+)\b(?!\s*\()", strip_comments(open(path).read())))
    assert used - set(declared) == set(), f"used but not declared in nextflow.config: {used - set(declared)}"
    assert set(declared) - used == set(), f"declared but never used: {set(declared) - used}"
    assert set(declared) == set(schema), f"config vs schema: {set(declared) ^ set(schema)}"
    # Profiles only change declared params.
    for name, body in profiles().items():
        for block_match, block in blocks(body, r"\bparams"):
            for param in re.findall(r"^\s*(\w+)\s*=", block, re.M):
                assert param in declared, f"profile {name} sets undeclared param {param}"


def test_schema_is_nf_core_style_and_matches_the_config_defaults():
    schema = json.load(open(SCHEMA))
    assert schema["$schema"].startswith("https://json-schema.org/draft/2020-12")
    assert schema["type"] == "object"
    groups = schema["$defs"]
    assert [ref["$ref"] for ref in schema["allOf"]] == [f"#/$defs/{name}" for name in groups]
    types = {"string": str, "integer": int, "number": (int, float), "boolean": bool}
    for name, value in declared_params().items():
        spec = schema_properties()[name]
        assert spec.get("description"), f"{name}: no description"
        if value is None:
            assert "default" not in spec, f"{name}: schema default {spec['default']} but config null"
            continue
        assert spec.get("default") == value, f"{name}: schema default {spec.get('default')!r} != config {value!r}"
        assert isinstance(value, types[spec["type"]]) and not (spec["type"] != "boolean" and isinstance(value, bool))
        if "enum" in spec:
            assert value in spec["enum"]
    assert "input" in groups["input_output_options"]["required"]


def test_profiles_users_need_exist_and_do_what_they_say():
    found = profiles()
    assert {"standard", "test", "gpu", "docker", "singularity", "slurm", "awsbatch", "google"} <= set(found)
    assert "docker.enabled = true" in re.sub(r"\s+", " ", found["docker"])
    assert "singularity.enabled = true" in re.sub(r"\s+", " ", found["singularity"])
    executors = {name: re.findall(r"executor\s*=\s*'([\w-]+)'", body) for name, body in found.items()}
    assert executors["standard"] == ["local"]
    assert executors["slurm"] == ["slurm"] and executors["awsbatch"] == ["awsbatch"]
    assert executors["google"] == ["google-batch"]
    for name in ("gpu", "slurm", "awsbatch", "google"):
        ((_, gpu_label),) = blocks(found[name], r"withLabel:\s*gpu")
        assert re.search(r"\bmaxForks\s*=", gpu_label), f"{name}: no maxForks for GPU tasks"
        if name != "slurm":
            assert re.search(r"\baccelerator\s*=", gpu_label), f"{name}: gpu label gets no accelerator"
            assert "params.container_cuda" in gpu_label, f"{name}: GPU tasks not in the CUDA image"
    ((_, gpu_label),) = blocks(found["gpu"], r"withLabel:\s*gpu")
    assert "'--nv'" in gpu_label and "'--gpus all'" in gpu_label
    assert "--gres=gpu:" in found["slurm"]
    assert re.search(r"params\s*\{[^}]*device\s*=\s*'cuda'", found["gpu"])


def test_retries_on_preemption_exit_codes():
    base = strip_comments(open(os.path.join(REPO, "conf", "base.config")).read())
    strategy = re.search(r"errorStrategy\s*=\s*\{(.+?)\}\s*$", base, re.M).group(1)
    codes = {int(c) for c in re.search(r"\[([\d,\s]+)\]", strategy).group(1).split(",")}
    assert {137, 143, 50001} <= codes  # SIGKILL/SIGTERM (preemption, OOM, limits), Google spot
    assert "'retry'" in strategy and re.search(r"maxRetries\s*=\s*params\.max_retries", base)
    assert "maxSpotAttempts" in profiles()["awsbatch"] and "maxSpotAttempts" in profiles()["google"]


def test_test_profile_uses_bundled_data_and_test_models():
    test = profiles()["test"]
    values = params_block("params {" + blocks(test, r"\bparams")[0][1] + "}")
    assert values["make_test_models"] is True
    assert values["device"] == "cpu" and values["shard_size"] > 0
    bundled = values["input"].replace("${projectDir}", REPO)
    assert os.path.isfile(bundled), bundled
    assert re.search(r"resourceLimits\s*=", test)


def test_pipeline_version_is_the_package_version():
    import virnucpro

    text = strip_comments(open(CONFIG).read())
    assert re.search(r"version\s*=\s*'([^']+)'", blocks(text, r"\bmanifest")[0][1]).group(1) == virnucpro.__version__
    declared = declared_params()
    assert declared["container"].endswith(":" + virnucpro.__version__)
    assert declared["container_cuda"].endswith(":" + virnucpro.__version__ + "-cuda")


def test_no_machine_paths_in_pipeline_files():
    for path in all_pipeline_files() + [SCHEMA]:
        assert "/work/" not in open(path).read(), path


# ------------------------------------------------------------------ sample values


def sample_env(process, optional=True):
    """Values for every ${...} a process uses, as Nextflow would bind them for one task: inputs
    staged under their names, meta fields, params (optional ones set or null), task fields."""
    env = {
        "params.chunk_size": 500, "params.shard_size": 4, "params.precision": "fp32", "params.device": "cpu",
        "params.batch_tokens": 2048 if optional else None, "params.gpus": 1 if optional else None,
        "params.threshold": 0.5 if optional else None, "params.store_dir": "/store",
        "params.outdir": "/results", "params.publish_dir_mode": "copy",
        "task.cpus": 1, "task.process": process.name, "task.ext.args": None,
        "workflow.manifest.version": "0.1.0",
        "meta.id": "sample", "meta.shard": "sample.00001", "meta.shard_count": 2,
        "meta.nucleotide_md5": "0" * 32, "meta.protein_md5": "1" * 32,
        "meta.dnabert_key": "local-" + "2" * 32, "meta.esm_key": "local-" + "3" * 32,
        "key": "org--model@main", "model_id": "org/model", "revision": "main",
    }
    staged = {"fasta": "sample.fa", "model": "model", "dnabert": "dnabert.h5", "esm": "esm.h5",
              "features": PathList(["1/features.h5", "2/features.h5"]), "sequences": "sample.sequences.tsv",
              "classifier": "classifier.pth", "summary": "sequence_summary.tsv",
              "predictions": "prediction_results.tsv"}
    for name, stage_as in process.path_inputs():
        env[name] = staged[name]
    return env


def test_main_names_samples_by_the_tools_stem_rule():
    """main.nf's fastaStem must give the names the tools give (SPEC 3), or outputs would not match."""
    from virnucpro.fasta import FASTA_EXTENSIONS

    text = strip_comments(open(MAIN_NF).read())
    ((_, body),) = blocks(text, r"def\s+fastaStem\s*\(\s*String\s+name\s*\)")
    extensions = ast.literal_eval(re.search(r"(\[[^\]]*\])\.find", body).group(1))
    assert tuple(extensions) == tuple(FASTA_EXTENSIONS)
    assert "'.gz'" in body


def groovy_command():
    """(groovy, environment) when a Groovy interpreter and Java are installed (they are not needed
    otherwise; `apt-get install groovy` provides them), else None."""
    groovy, java = shutil.which("groovy"), shutil.which("java")
    if not groovy or not java:
        return None
    java_home = os.path.dirname(os.path.dirname(os.path.realpath(java)))
    return groovy, dict(os.environ, JAVA_HOME=os.environ.get("JAVA_HOME", java_home))


def main_functions(*names):
    """The source of the named top-level functions of main.nf."""
    text = open(MAIN_NF).read()
    sources = []
    for name in names:
        ((match, body),) = blocks(text, rf"(?m)^def\s+{name}\s*\([^)]*\)")
        sources.append(f"{match.group(0)}{body}}}\n")
    return "\n".join(sources)


@pytest.mark.skipif(groovy_command() is None, reason="no groovy/java here to run main.nf's helper functions")
def test_main_helper_functions_run_under_groovy(tmp_path):
    """main.nf's own functions (not a copy), run by Groovy: sample names, checksum parsing and
    model keys, compared with what Python computes the same way."""
    import hashlib

    from virnucpro.fasta import stem

    names = ["reads.fasta.gz", "a.b.fa", "x.fna", "x.faa.gz", "plain", "y.fas", "z.fa.gz.fa"]
    shards = tmp_path / "shards"
    shards.mkdir()
    for index, content in enumerate([b">a\nACGT\n", b"", b">b\nMK\n"]):
        (shards / f"s.{index:05d}.nucleotide.fa").write_bytes(content)
        (shards / f"s.{index:05d}.protein.fa").write_bytes(content[::-1])
    md5sum = subprocess.run("md5sum -- *.nucleotide.fa *.protein.fa", shell=True, cwd=shards, capture_output=True, text=True, check=True).stdout
    (tmp_path / "checksums.md5").write_text(md5sum)
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / ".cache").mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    (model / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 5000)
    (model / ".cache" / "ignored").write_text("download metadata")

    script = main_functions("withoutSuffix", "fastaStem", "readChecksums", "folderDigest", "isLocalModel",
                            "modelKey", "flag", "shardItems", "inShardOrder") + f"""
// What Nextflow provides around these functions: file() and Path.name.
ExpandoMetaClass.enableGlobally()
java.nio.file.Path.metaClass.getName = {{ -> delegate.fileName.toString() }}
def file(String path) {{ java.nio.file.Paths.get(path) }}
{json.dumps(names)}.each {{ name -> println "stem\\t" + name + "\\t" + fastaStem(name) }}
readChecksums(file('{tmp_path / "checksums.md5"}')).each {{ name, hash -> println "md5\\t" + name + "\\t" + hash }}
println "key\\t" + modelKey('{model}', 'main')
println "key\\t" + modelKey('org/name', 'abc123')
println "flag\\t" + [flag(true), flag('true'), flag(false), flag('false')].join(',')
def listed = {{ suffix -> java.nio.file.Files.list(file('{shards}')).toArray().findAll {{ p -> p.toString().endsWith(suffix) }}.reverse() }}
def items = shardItems([id: 's'], listed('.nucleotide.fa'), listed('.protein.fa'), file('{tmp_path / "checksums.md5"}'), 'kd', 'ke')
items.each {{ item -> println "shard\\t" + item[0].shard + "\\t" + item[0].shard_count + "\\t" + item[0].nucleotide_md5 + "\\t" + item[0].protein_md5 + "\\t" + item[1].fileName + "\\t" + item[2].fileName + "\\t" + item[0].dnabert_key + item[0].esm_key + item[0].id }}
def one = shardItems([id: 's'], file('{shards}/s.00000.nucleotide.fa'), file('{shards}/s.00000.protein.fa'), file('{tmp_path / "checksums.md5"}'), 'kd', 'ke')
println "single\\t" + one.size() + "\\t" + one[0][0].shard
println "order\\t" + inShardOrder(['s.00002', 's.00000', 's.00001'], ['f2', 'f0', 'f1']).join(',')
"""
    (tmp_path / "check.groovy").write_text(script)
    groovy, env = groovy_command()
    result = subprocess.run([groovy, str(tmp_path / "check.groovy")], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert {name: got for kind, name, got in (l for l in lines if l[0] == "stem")} == {n: stem(n) for n in names}
    expected_md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in shards.iterdir()}
    assert {name: got for kind, name, got in (l for l in lines if l[0] == "md5")} == expected_md5
    digest = hashlib.md5()
    for relative in ("config.json", "sub/weights.bin"):
        digest.update(f"{relative}\n".encode())
        digest.update((model / relative).read_bytes())
    keys = [l[1] for l in lines if l[0] == "key"]
    assert keys == [f"local-{digest.hexdigest()}", "org--name@abc123"]
    assert [l[1] for l in lines if l[0] == "flag"] == ["true,true,false,false"]
    # Shards paired by name whatever order the files come in, each with its own checksums.
    shard_lines = [l[1:] for l in lines if l[0] == "shard"]
    assert shard_lines == [[f"s.{i:05d}", "3", expected_md5[f"s.{i:05d}.nucleotide.fa"],
                            expected_md5[f"s.{i:05d}.protein.fa"], f"s.{i:05d}.nucleotide.fa",
                            f"s.{i:05d}.protein.fa", "kdkes"] for i in range(3)]
    assert [l[1:] for l in lines if l[0] == "single"] == [["1", "s.00000"]]
    assert [l[1] for l in lines if l[0] == "order"] == ["f0,f1,f2"]


def gpu_accelerators():
    """{profile: the right-hand side of `accelerator = ...` for the gpu label} where one is set."""
    found = {}
    for name, body in profiles().items():
        for _, gpu_label in blocks(body, r"withLabel:\s*gpu"):
            match = re.search(r"\baccelerator\s*=\s*(.+?)\s*$", gpu_label, re.M)
            if match:
                found[name] = match.group(1)
    return found


def test_gpu_tasks_get_as_many_gpus_as_extraction_uses():
    """`--gpus N` makes each extraction task use N GPUs, so every executor must be asked for N
    (a task given fewer fails: the tool refuses --gpus above the GPUs it can see)."""
    accelerators = gpu_accelerators()
    assert {"gpu", "awsbatch", "google"} <= set(accelerators)
    for name, expression in accelerators.items():
        assert "params.gpus" in expression, f"{name}: accelerator = {expression} ignores --gpus"


@pytest.mark.skipif(groovy_command() is None, reason="no groovy/java here to evaluate the config expressions")
def test_gpu_accelerator_requests_evaluate_to_the_gpus_param(tmp_path):
    accelerators = gpu_accelerators()
    lines = []
    for gpus in ("null", "2"):
        for name, expression in sorted(accelerators.items()):
            lines.append(f"def check{len(lines)}() {{\n"
                         f"    def params = [gpus: {gpus}, google_gpu_type: 'nvidia-l4']\n"
                         f"    def value = {expression}\n"
                         f"    println '{name} ' + (value instanceof Map ? value.request : value)\n"
                         f"}}\ncheck{len(lines)}()")
    script = tmp_path / "accelerators.groovy"
    script.write_text("\n".join(lines) + "\n")
    groovy, env = groovy_command()
    result = subprocess.run([groovy, str(script)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    expected = [f"{name} {count}" for count in (1, 2) for name in sorted(accelerators)]
    assert result.stdout.split("\n")[:-1] == expected


def test_readme_commands_use_declared_params_and_existing_profiles():
    readme = open(os.path.join(REPO, "README.md")).read()
    section = readme.split("<!-- section: nextflow -->")[1].split("<!-- end: nextflow -->")[0]
    commands = re.findall(r"^nextflow run .*?(?<!\\)$", re.sub(r"\\\n\s*", " ", section), re.M)
    assert len(commands) >= 6
    declared, known_profiles = declared_params(), profiles()
    for command in commands:
        words = shlex.split(command.split("#")[0])
        for word in words:
            if word.startswith("--"):
                assert word[2:] in declared, f"README passes undeclared --{word[2:]}: {command}"
        for name in words[words.index("-profile") + 1].split(","):
            assert name in known_profiles, f"README uses unknown profile {name}"
