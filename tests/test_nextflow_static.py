"""Static checks of the Nextflow pipeline (main.nf, modules/, nextflow.config, conf/, schema).

Nextflow cannot run here, so the files are parsed: processes (directives, inputs, outputs,
script and stub blocks), the params declared in nextflow.config, the profiles, and the command
lines each script runs, which are checked against the options the tools themselves accept (the
signature of the function each bin/ script hands to `virnucpro.cli.run`).

The small parser and the script renderer here are also used by test_nextflow_scripts.py.
"""

import ast
import glob
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
MODULES_CONFIG = os.path.join(REPO, "conf", "modules.config")
SCHEMA_INPUT = os.path.join(REPO, "assets", "schema_input.json")
CI_WORKFLOW = os.path.join(REPO, ".github", "workflows", "ci.yml")
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
        self.sections = {name: [l.strip() for l in lines if l.strip()] for name, lines in chunks.items()}
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

    def declared_outputs(self, env=None):
        """[(qualifier, pattern)] of the path and env outputs, e.g. ('path', 'shards/*.nucleotide.fa');
        a "GString" name is rendered with env (the task's values)."""
        found = []
        for line in self.outputs:
            for match in re.finditer(r"path\(?\s*(?:'([^']+)'|\"([^\"]+)\")", line):
                found.append(("path", match.group(1) or render_gstring(match.group(2), env or {})))
            found += [("env", name) for name in re.findall(r"\benv\(\s*'(\w+)'\s*\)", line)]
        return found

    def when(self):
        return " ".join(self.sections.get("when", [])).strip()

    def path_inputs(self):
        """[(name, stageAs or None)] of the path inputs, in order."""
        found = []
        for line in self.inputs:
            for match in re.finditer(r"path\(?\s*(\w+)(?:\s*,\s*stageAs:\s*'([^']+)')?", line):
                found.append((match.group(1), match.group(2)))
        return found

    def val_inputs(self):
        return [m.group(1) for line in self.inputs for m in re.finditer(r"val\((\w+)\)", line)]

    def text(self):
        """The whole process body as written (comments stripped)."""
        return "\n".join(line for lines in self.sections.values() for line in lines)


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


def _expression(expr, env):
    """The value of one ${...} expression: the forms listed above, plus three used by the store paths
    of conf/modules.config: `REF[REF]` (a map field chosen by a value), `REF ? 'a' : 'b'` and
    `(REF ?: 'literal').replaceAll(/REGEX/, 'replacement')`."""
    if re.fullmatch(_REF, expr):
        return _value(env, expr)
    indexed = re.fullmatch(rf"({_REF})\[({_REF})\]", expr)
    if indexed:
        return _value(env, indexed.group(1))[_value(env, indexed.group(2))]
    chosen = re.fullmatch(rf"({_REF})\s*\?\s*'([^']*)'\s*:\s*'([^']*)'", expr)
    if chosen:
        return chosen.group(2) if _value(env, chosen.group(1)) else chosen.group(3)
    replaced = re.fullmatch(rf"\(({_REF})\s*\?:\s*'([^']*)'\)\.replaceAll\(/(.+)/,\s*'([^']*)'\)", expr)
    if replaced:
        ref, fallback, regex, replacement = replaced.groups()
        return re.sub(regex, replacement, _value(env, ref) or fallback)
    raise AssertionError(f"${{{expr}}} is too complex to render; bind it with a simple def")


def render_gstring(raw, env):
    def substitute(match):
        value = _expression(match.group(1).strip(), env)
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
    """The function a bin/ tool hands to virnucpro.cli.run (virnucpro.tools' table, which the
    bin/ wrappers and the console scripts both use; tests/test_packaging.py checks they do)."""
    import virnucpro.tools

    assert os.path.exists(os.path.join(BIN, tool)), f"{tool}: no bin/ wrapper"
    return virnucpro.tools.component(tool)


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


def images():
    """{'cpu': the image conf/base.config gives every process, 'cuda': {the image each GPU profile
    gives the gpu label}} (the images are chosen per profile, not by a param)."""
    base = strip_comments(open(os.path.join(REPO, "conf", "base.config")).read())
    cpu = re.search(r"^\s*container\s*=\s*'([^']+)'", base, re.M).group(1)
    found = profiles()
    cuda = {name: re.search(r"\bcontainer\s*=\s*'([^']+)'", blocks(found[name], r"withLabel:\s*gpu")[0][1]).group(1)
            for name in ("gpu", "awsbatch", "google")}
    return {"cpu": cpu, "cuda": cuda}


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


# ------------------------------------------------------------------ conf/modules.config and main.nf's calls


def called_processes():
    """{name main.nf calls it by: Process}; an aliased include (EXTRACT as EXTRACT_ESM) under its alias."""
    text = strip_comments(open(MAIN_NF).read())
    modules = module_processes()
    return {alias or name: modules[name]
            for name, alias, _ in re.findall(r"include\s*\{\s*(\w+)(?:\s+as\s+(\w+))?\s*\}\s*from\s*'(\./[^']+)'", text)}


def module_settings():
    """[(withName selector, body)] of conf/modules.config, in file order."""
    text = strip_comments(open(MODULES_CONFIG).read())
    ((_, body),) = blocks(text, r"(?m)^process")
    return [(match.group(1), inner) for match, inner in blocks(body, r"withName:\s*'([^']+)'")]


def setting(called, key):
    """The closure body (text) of `key = { ... }` for the process main.nf calls `called`, or None
    (the last matching withName wins, as in Nextflow)."""
    found = None
    for selector, body in module_settings():
        if re.fullmatch(selector, called):
            match = re.search(rf"(?m)^\s*{re.escape(key)}\s*=\s*\{{", body)
            if match:
                found = body[match.end():matching_brace(body, match.end() - 1)].strip()
    return found


def evaluate_closure(body, env):
    """The value of a settings closure: "GString", a ternary, or `[items].join(' ').trim()` of those."""
    listed = re.fullmatch(r"\[(.*)\]\.join\(' '\)\.trim\(\)", body, re.S)
    items = [i.strip() for i in re.split(r",\s*\n", listed.group(1).strip())] if listed else [body]
    values = []
    for item in items:
        if re.fullmatch(r'"[^"]*"', item):
            values.append(render_gstring(item[1:-1], env))
        else:
            scope = dict(env)
            evaluate_def(f"def value = {item}", scope)
            values.append(scope["value"])
    return " ".join(values).strip()


def task_env(called, env):
    """env plus the task's ext.args from conf/modules.config (None where none is set)."""
    args = setting(called, "ext.args")
    return dict(env, **{"task.ext.args": evaluate_closure(args, env) if args else None})


def store_dir(called, env):
    body = setting(called, "storeDir")
    return evaluate_closure(body, env) if body else None


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
    includes = re.findall(r"include\s*\{\s*(\w+)(?:\s+as\s+(\w+))?\s*\}\s*from\s*'(\./[^']+)'", text)
    included = set()
    for name, alias, source in includes:
        path = os.path.join(REPO, source + ".nf")
        assert os.path.exists(path), f"main.nf includes missing {source}"
        assert name in [p.name for p in parse_processes(path)], f"{source} has no process {name}"
        included.add(name)
        called = alias or name
        assert re.search(rf"\b{called}\s*\(", text), f"main.nf includes {called} but never calls it"
    assert included == set(processes), f"modules not included: {set(processes) - included}"
    expected = {"TRANSLATE", "RESOLVE_MODEL", "FETCH_MODEL", "MAKE_TEST_MODELS", "CHECK", "EXTRACT_DNABERT",
                "EXTRACT_ESM", "MERGE", "CLASSIFY", "REPORT"}
    assert set(called_processes()) == expected
    # One extraction module, used twice.
    called = called_processes()
    assert called["EXTRACT_DNABERT"].name == called["EXTRACT_ESM"].name == "EXTRACT"


def test_modules_are_nf_core_style(processes):
    """Everything reaches a module through its inputs, task.ext and conf/modules.config: no params,
    no storeDir/publishDir of its own; a tag (where it has inputs), a label, the nf-core `when:`,
    a stub, versions.yml, and task.ext.args passed to its tool."""
    for process in processes.values():
        body = process.text()
        assert "params." not in body, f"{process.name} reads params"
        for directive in ("storeDir", "publishDir"):
            assert not process.directive(directive), f"{process.name}: {directive} belongs in conf/modules.config"
        assert process.labels(), f"{process.name}: no label"
        if process.inputs:
            assert process.directive("tag"), f"{process.name}: no tag"
        assert process.when() == "task.ext.when == null || task.ext.when", f"{process.name}: when: {process.when()!r}"
        assert "def args = task.ext.args ?: ''" in process.script_defs, f"{process.name}: no task.ext.args"
        assert "${args}" in process.script, f"{process.name}: ext.args not passed to its tool"


def test_scripts_follow_the_strict_parser(processes):
    """Nextflow 26.04+ parses with the strict parser by default (docs: strict-syntax): env
    inputs/outputs name their variable in quotes (`env 'FOO'`), and a script holds only
    declarations at its top level (includes, functions, processes, the workflow), no statements."""
    for process in processes.values():
        for line in process.inputs + process.outputs:
            assert not re.search(r"\benv\b\s*\(?\s*\w", line), f"{process.name}: unquoted env name in {line!r}"
    text = strip_comments(open(MAIN_NF).read())
    depth, top_level, i = 0, [], 0
    while i < len(text):
        if text[i] in "'\"":
            end = _skip_string(text, i)
            if depth == 0:
                top_level.append(text[i:end])
            i = end
            continue
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
        elif depth == 0:
            top_level.append(text[i])
        i += 1
    for line in "".join(top_level).splitlines():
        line = line.strip()
        if line and not line.startswith("#!"):
            assert re.match(r"(include\b|def\s+\w+\s*\(|workflow\b|process\s+\w+)", line), \
                f"main.nf: top-level statement {line!r} (move it into the workflow)"


def test_every_process_has_a_stub_and_emits_versions(processes):
    for process in processes.values():
        assert process.script, f"{process.name}: no script block"
        assert process.stub, f"{process.name}: no stub block"
        assert any(re.search(r"path\s*\(?\s*'versions.yml'\s*\)?\s*,\s*emit:\s*versions", line)
                   for line in process.outputs), f"{process.name}: does not emit versions.yml"
        for block in (process.script, process.stub):
            assert "versions.yml" in block and '"${task.process}":' in block, f"{process.name}: versions not written"


def test_every_process_runs_a_tool_with_options_it_accepts():
    """Each script's command lines, rendered with its ext.args from conf/modules.config, every
    optional param set and all unset, are accepted by the tools themselves (fire signatures).
    Processes run only bin/ tools: the hub is reached through virnucpro-fetch-model."""
    for called, process in called_processes().items():
        for optional in (True, False):
            env = sample_env(process, optional=optional, called=called)
            script = render_script(process, env)
            commands = tool_commands(script)
            assert commands, f"{called}: runs no bin/virnucpro-* tool"
            for argv in commands:
                check_fire_command(argv)
            assert not re.search(r"(^|[\s(])(hf|huggingface-cli|wget|curl)\s", script, re.M), \
                f"{called}: downloads without the bin/ tools"


def test_chunk_size_reaches_classify_and_a_classifier_named_for_another_is_refused_first():
    """CLASSIFY checks the classifier against --chunk_size (its recorded metadata), and main.nf
    refuses a published classifier named for another chunk size before any process runs."""
    for optional in (True, False):
        assert "--chunk_size 500" in sample_env(module_processes()["CLASSIFY"], optional=optional)["task.ext.args"]
    main = strip_comments(open(MAIN_NF).read())
    workflow = main[main.index("workflow {"):]
    check = workflow.find(r"=~ /^(\d+)_model\.pth$/")
    assert check > 0, "main.nf does not read the chunk size from a published classifier's name"
    first_process = min(workflow.index(name + "(") for name in ("MAKE_TEST_MODELS", "TRANSLATE", "RESOLVE_MODEL"))
    assert check < first_process and "error" in workflow[check:first_process]


def test_tasks_pass_their_cpus_and_gpus_to_the_tools():
    """task.cpus reaches every tool that runs threads or workers; a GPU task uses the GPUs it was
    granted; the GPU profiles' device reaches extraction, so a node without CUDA fails loudly."""
    wanted = {"TRANSLATE": "--workers", "EXTRACT_DNABERT": "--threads", "EXTRACT_ESM": "--threads"}
    for called, option in wanted.items():
        process = called_processes()[called]
        (argv,) = tool_commands(render_script(process, sample_env(process, called=called, **{"task.cpus": 7})))
        assert argv[argv.index(option) + 1] == "7", f"{called}: {option} is not task.cpus"
    for called in ("EXTRACT_DNABERT", "EXTRACT_ESM"):
        process = called_processes()[called]
        granted = sample_env(process, called=called, **{"task.accelerator": {"request": 3}, "task.accelerator.request": 3})
        (argv,) = tool_commands(render_script(process, granted))
        assert argv[argv.index("--gpus") + 1] == "3"
        (argv,) = tool_commands(render_script(process, sample_env(process, optional=False, called=called)))
        assert "--gpus" not in argv  # no accelerator (CPU profiles): the tool's own choice
        for profile in ("gpu", "awsbatch", "google"):
            profile_params = params_block("params {" + blocks(profiles()[profile], r"\bparams")[0][1] + "}")
            env = sample_env(process, called=called, **{f"params.{k}": v for k, v in profile_params.items()})
            (argv,) = tool_commands(render_script(process, env))
            assert argv[argv.index("--device") + 1] == "cuda", f"{profile}: GPU tasks do not require CUDA"
            assert argv[argv.index("--precision") + 1] == "bf16", f"{profile}: GPU tasks not in bf16"


def test_a_gpu_test_run_checks_the_node_before_any_extraction():
    """CHECK (virnucpro-check on the models extraction will use, with its device and precision) runs
    when a test run asks for a GPU, and both extractions take their models only from its output,
    so none starts before the check passed."""
    text = strip_comments(open(MAIN_NF).read())
    ((_, workflow),) = blocks(text, r"(?m)^workflow")
    ((match, gated),) = blocks(workflow, r"if\s*\(\s*checkFirst\(\)\s*\)")
    assert re.search(r"CHECK\(ch_dnabert,\s*ch_esm,\s*compile_cache\)", gated)
    for channel in ("ch_dnabert", "ch_esm"):
        assert re.search(rf"{channel}\s*=\s*CHECK\.out\.report\.combine\({channel}\)", gated), channel
    assert workflow.index(match.group(0)) < workflow.index("EXTRACT_DNABERT(") < workflow.index("EXTRACT_ESM(")
    ((_, body),) = blocks(text, r"def\s+checkFirst\s*\(\s*\)")
    assert "flag(params.make_test_models)" in body and "params.device.toString().startsWith('cuda')" in body
    check = called_processes()["CHECK"]
    assert check.labels() == ["gpu"]
    for profile in ("gpu", "awsbatch", "google"):
        profile_params = params_block("params {" + blocks(profiles()[profile], r"\bparams")[0][1] + "}")
        env = sample_env(check, called="CHECK", **{f"params.{k}": v for k, v in profile_params.items()})
        (argv,) = tool_commands(render_script(check, env))
        assert argv[:5] == ["virnucpro-check", "--dnabert_model", "dnabert", "--esm_model", "esm"]
        assert argv[argv.index("--device") + 1] == "cuda" and argv[argv.index("--precision") + 1] == "bf16"
    # The test profile alone stays on the CPU (no check); `-profile test,gpu` (gpu comes later in
    # nextflow.config, so its device wins) asks for a GPU with the test models: the check runs.
    test_params = params_block("params {" + blocks(profiles()["test"], r"\bparams")[0][1] + "}")
    gpu_params = params_block("params {" + blocks(profiles()["gpu"], r"\bparams")[0][1] + "}")
    assert test_params["make_test_models"] is True and test_params["device"] == "cpu" and gpu_params["device"] == "cuda"
    assert list(profiles()).index("test") < list(profiles()).index("gpu")


def test_gpu_tasks_keep_compiled_kernels_in_the_store_and_get_a_writable_home():
    """EXTRACT and CHECK point torch.compile's Inductor and Triton caches into the store's
    compile-cache folder (staged like any input: a symlink, mounted in containers) when main.nf
    passes one, and nothing when it passes [] (object storage); a HOME that cannot be written
    (docker -u uid:gid gives HOME=/) becomes the task folder."""
    text = strip_comments(open(MAIN_NF).read())
    ((_, body),) = blocks(text, r"def\s+compileCache\s*\(\s*\)")
    assert '"${store}/compile-cache"' in body and "return []" in body and "isObjectStorage(store)" in body
    assert re.search(r"EXTRACT_DNABERT\([^\n]*, ch_dnabert, compile_cache\)", text)
    assert re.search(r"EXTRACT_ESM\([^\n]*, ch_esm, compile_cache\)", text)
    for called in ("EXTRACT_DNABERT", "EXTRACT_ESM", "CHECK"):
        process = called_processes()[called]
        assert ("compile_cache", None) in process.path_inputs()
        with_cache = render_script(process, sample_env(process, called=called))
        assert "export TORCHINDUCTOR_CACHE_DIR=$PWD/compile-cache/inductor TRITON_CACHE_DIR=$PWD/compile-cache/triton\n" in with_cache
        without = render_script(process, sample_env(process, called=called, compile_cache=PathList()))
        assert "TORCHINDUCTOR_CACHE_DIR" not in without and "TRITON_CACHE_DIR" not in without
        for script in (with_cache, without):
            assert script.startswith('[ -w "${HOME:-/}" ] || export HOME="$PWD"\n')
            assert script.index("export HOME") < script.index(tool_commands(script)[0][0])


def test_tool_options_checker_rejects_what_the_tools_reject():
    """The checker above must be able to fail: unknown options, missing required ones."""
    check_fire_command(["virnucpro-merge", "--nucleotide", "a.h5", "--protein", "b.h5", "--output", "c.h5"])
    with pytest.raises(AssertionError, match="does not accept --nucleotides"):
        check_fire_command(["virnucpro-merge", "--nucleotides", "a.h5", "--protein", "b.h5", "--output", "c.h5"])
    with pytest.raises(AssertionError, match="required"):
        check_fire_command(["virnucpro-translate", "--outdir", "x"])
    with pytest.raises(AssertionError, match="no such tool"):
        check_fire_command(["virnucpro-nothing", "--input", "x"])


def test_extraction_processes_and_only_they_are_labelled_gpu():
    """And the node check, which runs on the GPU the extractions will get."""
    for called, process in called_processes().items():
        runs_on_gpu = any(argv[0] in ("virnucpro-extract", "virnucpro-check")
                          for argv in tool_commands(render_script(process, sample_env(process, called=called))))
        assert runs_on_gpu == ("gpu" in process.labels()), f"{called}: labels {process.labels()}"


def stored_path(called, env):
    """Where a task's main output lands in the store: storeDir / its declared file name."""
    process = called_processes()[called]
    (output,) = [pattern for kind, pattern in process.declared_outputs(env) if kind == "path" and pattern != "versions.yml"][:1]
    return f"{store_dir(called, env)}/{output}"


def test_store_dirs_are_keyed_by_everything_that_determines_the_content():
    """Render each storeDir (conf/modules.config) with distinct values for every key part: each
    must change the path; what does not determine the content (CPUs, GPUs granted) must not."""
    keyed = {
        "EXTRACT_DNABERT": ["meta.md5", "model_meta.id", "params.precision", "params.device", "params.batch_tokens",
                            "task.ext.args", "workflow.manifest.version"],
        "EXTRACT_ESM": ["meta.md5", "model_meta.id", "params.precision", "params.device", "params.batch_tokens",
                        "task.ext.args", "workflow.manifest.version"],
        "MERGE": ["meta.features_key", "task.ext.args", "workflow.manifest.version"],
        "FETCH_MODEL": ["model_meta.id"],
        "MAKE_TEST_MODELS": ["workflow.manifest.version"],
    }
    rendered = {}
    for called, parts in keyed.items():
        process = called_processes()[called]
        env = sample_env(process, called=called)
        base = store_dir(called, env)
        assert base.startswith(env["params.store_dir"] + "/")
        for part in parts:
            if part == "meta.md5":
                other = {k: v + "-other" for k, v in env[part].items()}
            else:
                other = str(env[part]) + "-other"
            changed = dict(env, **{part: other})
            if part.startswith("params."):
                changed = task_env(called, changed)  # a param reaches the key through ext.args
            assert store_dir(called, changed) != base, f"{called}: storeDir ignores {part}"
        for part in ("task.cpus", "params.gpus", "task.accelerator.request"):
            assert store_dir(called, task_env(called, dict(env, **{part: 99}))) == base, f"{called}: key depends on {part}"
        # A -stub run's empty stand-ins live apart, so a real run never takes them for results.
        stub = store_dir(called, dict(env, **{"workflow.stubRun": True}))
        assert stub.startswith(env["params.store_dir"] + "/stub/") and not base.startswith(env["params.store_dir"] + "/stub/")
        rendered[called] = base
    assert len(set(rendered.values())) == len(rendered), "two processes share a store path"
    # The other kind's md5 does not enter an extraction key (the dnabert key uses the nucleotide md5).
    env = sample_env(called_processes()["EXTRACT_DNABERT"], called="EXTRACT_DNABERT")
    assert env["meta.md5"]["dnabert"] in store_dir("EXTRACT_DNABERT", env)
    assert env["meta.md5"]["esm"] not in store_dir("EXTRACT_DNABERT", env)
    for called in ("TRANSLATE", "RESOLVE_MODEL", "CLASSIFY", "REPORT"):
        assert setting(called, "storeDir") is None, f"{called} should not be stored"
    for called in ("CLASSIFY", "REPORT"):
        assert any(re.fullmatch(sel, called) and "publishDir" in body for sel, body in module_settings()), \
            f"{called}: final outputs are published"
    assert called_processes()["RESOLVE_MODEL"].directive("cache") == ["false"], "a branch must be re-resolved every run"


def test_two_shards_with_identical_content_never_write_one_store_folder():
    """Same md5 (and so the same features_key), other sample or other shard of the same sample:
    another store folder, so two tasks never write one path at once, versions.yml included
    (storeDir moves every output of a task, versions.yml too, into its folder)."""
    for called in ("EXTRACT_DNABERT", "EXTRACT_ESM", "MERGE"):
        process = called_processes()[called]
        one = sample_env(process, called=called)
        others = [dict(one, **{"meta.id": "other", "meta.shard": "other.00001"}),
                  dict(one, **{"meta.shard": "sample.00002", "meta.shard_index": 2})]
        folders = [store_dir(called, env) for env in [one] + others]
        assert len(set(folders)) == len(folders), f"{called}: {folders}"
        for env, folder in zip([one] + others, folders):
            assert folder.endswith("/" + env["meta.shard"]), f"{called}: {folder} is not the shard's own folder"
            outputs = [pattern for kind, pattern in process.declared_outputs(env) if kind == "path"]
            assert "versions.yml" in outputs and stored_path(called, env).startswith(folder + "/")


def test_main_keys_hub_models_by_their_resolved_commit():
    text = strip_comments(open(MAIN_NF).read())
    assert re.search(r"RESOLVE_MODEL\(", text) and re.search(r"FETCH_MODEL\(ch_hub\)", text)
    assert re.search(r"RESOLVE_MODEL\.out\.commit", text)
    assert re.search(r"id:\s*hubKey\(request\.model,\s*commit\)", text), "the model key is not id@commit"
    (resolve_argv,) = tool_commands(render_script(called_processes()["RESOLVE_MODEL"],
                                                  sample_env(called_processes()["RESOLVE_MODEL"], called="RESOLVE_MODEL")))
    assert "--resolve" in resolve_argv
    (fetch_argv,) = tool_commands(render_script(called_processes()["FETCH_MODEL"],
                                                sample_env(called_processes()["FETCH_MODEL"], called="FETCH_MODEL")))
    assert fetch_argv[fetch_argv.index("--revision") + 1] == "c" * 40, "FETCH_MODEL must download the resolved commit"


def test_main_passes_meta_through_and_fails_on_mismatched_joins():
    text = strip_comments(open(MAIN_NF).read())
    joins = re.findall(r"\.join\((?!\s*['\"])([^()]*(?:\([^()]*\))?[^()]*)\)", text)  # channel joins, not String.join
    assert len(joins) >= 3
    for args in joins:
        assert "failOnMismatch: true" in args, f"join without failOnMismatch: .join({args})"
    # meta is built once, for a sample from --input_fasta; never rebuilt from its id downstream.
    assert len(re.findall(r"\[\s*id\s*:", text)) == 1
    assert re.search(r"groupKey\(sampleMeta\(meta\), meta\.shard_count\)", text)
    assert re.search(r"\[key\.getGroupTarget\(\),", text)
    assert re.search(r"\.join\(TRANSLATE\.out\.sequences", text)


def test_main_uses_nf_schema_for_parameters_help_and_samplesheet():
    text = strip_comments(open(MAIN_NF).read())
    assert re.search(r"include\s*\{\s*validateParameters;\s*paramsSummaryLog;\s*samplesheetToList\s*\}\s*from\s*'plugin/nf-schema'", text)
    assert "validateParameters()" in text and "paramsSummaryLog(workflow)" in text
    assert re.search(r"samplesheetToList\(params\.input,\s*\"\$\{projectDir\}/assets/schema_input\.json\"\)", text)
    assert "JsonSlurper" not in text and "nextflow_schema.json" not in text, "schema read by hand"
    config = strip_comments(open(CONFIG).read())
    assert re.search(r"plugins\s*\{\s*id\s*'nf-schema@\d+\.\d+\.\d+'\s*\}", config), "nf-schema not pinned"
    ((_, validation),) = blocks(config, r"(?m)^validation")
    assert re.search(r"help\s*\{[^}]*enabled\s*=\s*true", validation), "--help not generated from the schema"
    schema = json.load(open(SCHEMA))
    spec = schema_properties()["input"]
    assert spec["schema"] == "assets/schema_input.json" and spec["format"] == "file-path"
    assert os.path.exists(os.path.join(REPO, spec["schema"]))


def version_tuple(text):
    return tuple(int(part) for part in text.split("."))


def test_command_line_numbers_pass_validation_on_the_strict_parser():
    """From Nextflow 26.04 the strict parser passes a command-line value of a param whose default is
    null as a string (nextflow PR #6765); nf-schema casts such values before validating from 2.7.2
    (changelog: cast_cli_params), and nf-schema >= 2.6.0 needs Nextflow >= 25.10.0. 3.x dropped
    the `validation.help` configuration this pipeline uses."""
    config = strip_comments(open(CONFIG).read())
    pinned = version_tuple(re.search(r"id\s*'nf-schema@([\d.]+)'", config).group(1))
    assert (2, 7, 2) <= pinned < (3,), f"nf-schema {pinned}: needs 2.7.2 or later 2.x"
    ((_, manifest),) = blocks(config, r"\bmanifest")
    minimum = re.search(r"nextflowVersion\s*=\s*'!>=([\d.]+)'", manifest)
    assert minimum, "manifest.nextflowVersion must be a hard minimum ('!>=...')"
    assert version_tuple(minimum.group(1)) >= (25, 10, 0)
    readme = open(os.path.join(REPO, "README.md")).read()
    assert f"Nextflow >= {minimum.group(1)}" in readme, "README states another minimum Nextflow version"
    import yaml

    workflow = yaml.safe_load(open(CI_WORKFLOW))
    versions = workflow["jobs"]["pipeline"]["strategy"]["matrix"]["nextflow"]
    assert minimum.group(1) in versions and "latest-stable" in versions, "CI must run the minimum and the latest"
    # CI gives such a param on the command line (a number without a config default), so the
    # latest-stable job validates a value the strict parser passed as a string.
    numbers_without_default = {name for name, value in declared_params().items()
                               if value is None and schema_properties()[name]["type"] in ("integer", "number")}
    runs = "\n".join(step.get("run", "") for step in workflow["jobs"]["pipeline"]["steps"])
    given = set(re.findall(r"--(\w+)", " ".join(l for l in runs.splitlines() if l.strip().startswith("nextflow run"))))
    assert given & numbers_without_default, f"CI passes none of {sorted(numbers_without_default)}"


def config_number_settings():
    """[(file, setting, expression)] of every plain (not closure) config setting whose value is
    computed from an integer param, e.g. ('conf/gpu.config', 'accelerator', '(params.gpus ?: 1) as Integer')."""
    integers = {name for name, spec in schema_properties().items() if spec["type"] == "integer"}
    found = []
    for path in [CONFIG] + sorted(glob.glob(os.path.join(REPO, "conf", "*.config"))):
        for match in re.finditer(r"(?m)^\s*([\w.]+)\s*=\s*(.+?)\s*$", strip_comments(open(path).read())):
            setting, expression = match.groups()
            used = set(re.findall(r"\bparams\.(\w+)", expression)) & integers
            if used and not expression.startswith("{"):
                found.append((os.path.relpath(path, REPO), setting, expression))
    return found


def test_samplesheet_schema_describes_sample_and_fasta():
    schema = json.load(open(SCHEMA_INPUT))
    assert schema["$schema"].startswith("https://json-schema.org/draft/2020-12") and schema["type"] == "array"
    items = schema["items"]
    assert set(items["required"]) == {"sample", "fasta"}
    assert items["properties"]["sample"]["meta"] == ["id"]
    assert items["properties"]["fasta"]["format"] == "file-path" and items["properties"]["fasta"]["exists"] is True
    assert schema["uniqueEntries"] == ["sample"]
    # What it accepts and rejects, by a real validator with nf-schema's keywords: tests/test_schemas.py.


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
        if value is None or value is False:  # nf-core: no schema default for null or false
            assert "default" not in spec, f"{name}: schema default {spec['default']} but config {value}"
            continue
        assert spec.get("default") == value, f"{name}: schema default {spec.get('default')!r} != config {value!r}"
        assert isinstance(value, types[spec["type"]]) and not (spec["type"] != "boolean" and isinstance(value, bool))
        if "enum" in spec:
            assert value in spec["enum"]


def test_gpu_shard_size_default_loads_the_model_in_at_most_5_percent_of_a_task():
    """The documented estimate, recomputed from the figures the schema states (worst case:
    the slowest load with the fastest GPU)."""
    spec = schema_properties()["shard_size"]
    load_s, tokens_per_s, residues = 25, 100_000, 166
    assert all(f in spec["help_text"] for f in ("10-25 s", "60-100K tokens/s", "166 residues", "estimate"))
    compute_s = spec["default"] * (residues + 2) / tokens_per_s
    assert load_s / (load_s + compute_s) <= 0.05


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
            assert images()["cuda"][name].endswith("-cuda"), f"{name}: GPU tasks not in the CUDA image"
    ((_, gpu_label),) = blocks(found["gpu"], r"withLabel:\s*gpu")
    assert "'--nv'" in gpu_label and "'--gpus all'" in gpu_label
    # Nextflow 26.10+ gives each local GPU task its GPUs in CUDA_VISIBLE_DEVICES; Docker must pass it on.
    assert re.search(r"docker\.envWhitelist\s*=\s*'[^']*\bCUDA_VISIBLE_DEVICES\b", found["gpu"])
    assert "--gres=gpu:" in found["slurm"]
    for name in ("gpu", "awsbatch", "google"):
        assert re.search(r"params\s*\{[^}]*device\s*=\s*'cuda'", found[name]), f"{name}: GPU tasks may fall back to CPU"
    assert "GPU sharing" in open(os.path.join(REPO, "conf", "gpu.config")).read(), "the GPU-sharing decision is not documented"


def test_retries_on_preemption_exit_codes():
    base = strip_comments(open(os.path.join(REPO, "conf", "base.config")).read())
    strategy = re.search(r"errorStrategy\s*=\s*\{(.+?)\}\s*$", base, re.M).group(1)
    codes = {int(c) for c in re.search(r"\[([\d,\s]+)\]", strategy).group(1).split(",")}
    assert {137, 143, 50001} <= codes  # SIGKILL/SIGTERM (preemption, OOM, limits), Google spot
    assert "'retry'" in strategy and re.search(r"maxRetries\s*=\s*params\.max_retries", base)
    assert "maxSpotAttempts" in profiles()["awsbatch"] and "maxSpotAttempts" in profiles()["google"]


def test_test_profile_uses_bundled_data_and_test_models_within_small_limits():
    test = profiles()["test"]
    values = params_block("params {" + blocks(test, r"\bparams")[0][1] + "}")
    assert values["make_test_models"] is True
    assert values["device"] == "cpu" and values["shard_size"] > 0
    bundled = values["input_fasta"].replace("${projectDir}", REPO)
    assert os.path.isfile(bundled), bundled
    limits = re.search(r"resourceLimits\s*=\s*\[cpus:\s*(\d+),\s*memory:\s*(\d+)\.GB", test)
    assert limits and int(limits.group(1)) <= 2 and int(limits.group(2)) <= 6, "test run must fit 2 CPUs, 6 GB"


def first_attempt_gb(body):
    """The GB a `memory = { N.GB * task.attempt }` setting in a config block asks for at the first attempt."""
    return int(re.search(r"memory\s*=\s*\{\s*(\d+)\.GB\s*\*\s*task\.attempt\s*\}", body).group(1))


def test_extraction_memory_fits_a_workstation_and_limits_are_the_users_to_set():
    """ESM-2 3B loads through host memory (up to its 11.4 GB fp32 checkpoint) before going to the GPU,
    so its tasks ask for more than that; DNABERT-S (0.5 GB of weights) asks for less, so that one
    task of each (they may share a GPU) fit together on a 32 GB workstation (Nextflow sees ~31 GB,
    and the local executor refuses a request above the machine's memory). resourceLimits caps
    every request; README shows how to set a machine's own."""
    base = strip_comments(open(os.path.join(REPO, "conf", "base.config")).read())
    ((_, gpu_label),) = blocks(base, r"withLabel:\s*gpu")
    ((_, dnabert),) = blocks(base, r"withName:\s*'EXTRACT_DNABERT'")
    esm_gb, dnabert_gb = first_attempt_gb(gpu_label), first_attempt_gb(dnabert)
    assert esm_gb >= 12, "ESM-2 3B's 11.4 GB checkpoint passes through host memory"
    assert dnabert_gb < esm_gb and esm_gb + dnabert_gb <= 28, "one ESM-2 and one DNABERT-S task must fit 32 GB"
    assert re.search(r"resourceLimits\s*=\s*\[cpus:\s*\d+,\s*memory:\s*\d+\.GB,\s*time:\s*\d+\.h\]", base)
    readme = open(os.path.join(REPO, "README.md")).read()
    section = readme.split("<!-- section: nextflow -->")[1].split("<!-- end: nextflow -->")[0]
    example = re.search(r"process\.resourceLimits = \[cpus: (\d+), memory: (\d+)\.GB, time: \d+\.h\]", section)
    assert example and int(example.group(2)) >= esm_gb + dnabert_gb, "README: a workstation's resourceLimits"
    assert re.search(r"nextflow run \. -profile gpu,docker -c workstation\.config", section)


def test_schemas_have_absolute_ids_at_the_pipelines_home():
    """nf-core style: each schema's $id is the URL it is published at (raw file on the default
    branch of the repository manifest.homePage names), not a path relative to some folder."""
    config = strip_comments(open(CONFIG).read())
    ((_, manifest),) = blocks(config, r"\bmanifest")
    home = re.search(r"homePage\s*=\s*'https://github\.com/([\w.-]+/[\w.-]+)'", manifest)
    assert home, "manifest.homePage should be the GitHub repository"
    for path in (SCHEMA, SCHEMA_INPUT):
        schema_id = json.load(open(path))["$id"]
        relative = os.path.relpath(path, REPO)
        assert schema_id == f"https://raw.githubusercontent.com/{home.group(1)}/main/{relative}", schema_id


def test_pipeline_version_is_the_package_version():
    import virnucpro

    text = strip_comments(open(CONFIG).read())
    assert re.search(r"version\s*=\s*'([^']+)'", blocks(text, r"\bmanifest")[0][1]).group(1) == virnucpro.__version__
    assert images()["cpu"].endswith(":" + virnucpro.__version__)
    assert set(images()["cuda"].values()) == {images()["cpu"] + "-cuda"}
    assert not {"container", "container_cuda"} & set(declared_params()), "nf-core: images per profile, not params"


def test_no_machine_paths_in_pipeline_files():
    for path in all_pipeline_files() + [SCHEMA, SCHEMA_INPUT, CI_WORKFLOW]:
        assert "/work/" not in open(path).read(), path


def test_ci_workflow_runs_the_tests_the_test_profile_and_a_stub_run():
    """.github/workflows/ci.yml, parsed (PyYAML comes with transformers): the Python tests on CPU
    torch, the pipeline's -stub run and its test profile in the CPU image the config names."""
    import yaml

    workflow = yaml.safe_load(open(CI_WORKFLOW))
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key `on` as true
    assert {"push", "pull_request"} <= set(triggers)
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    for job in workflow["jobs"].values():
        assert job["runs-on"] == "ubuntu-latest"
        assert any(step.get("uses", "").startswith("actions/checkout@") for step in job["steps"])
    runs = "\n".join(step.get("run", "") for step in steps)
    assert re.search(r"pip install torch==2\.13\.0 --index-url https://download\.pytorch\.org/whl/cpu", runs)
    assert re.search(r"^pytest\b", runs, re.M)
    assert any(step.get("uses", "").startswith("nf-core/setup-nextflow@") for step in steps)
    commands = [shlex.split(line) for line in runs.splitlines() if line.strip().startswith("nextflow run")]
    declared, known = declared_params(), profiles()
    for words in commands:
        for word in words:
            if word.startswith("--"):
                assert word[2:] in declared, f"ci.yml passes undeclared --{word[2:]}"
        if "-profile" in words:
            assert all(name in known for name in words[words.index("-profile") + 1].split(","))
    assert any("-stub" in words for words in commands)
    assert any("-profile" in words and words[words.index("-profile") + 1] == "test,docker" for words in commands)
    built = re.search(r"docker build -f containers/Dockerfile -t (\S+) \.", runs).group(1)
    assert built == images()["cpu"]


# ------------------------------------------------------------------ sample values


def sample_env(process, optional=True, called=None, **values):
    """Values for every ${...} a task of `process` (called `called` in main.nf) uses, as Nextflow
    binds them: inputs staged under their names, meta and model fields, params (optional ones set
    or null), task fields, and the task's ext.args from conf/modules.config."""
    called = called or process.name
    kind = {"EXTRACT_DNABERT": "dnabert", "EXTRACT_ESM": "esm"}.get(called, "dnabert")
    env = {
        "params.chunk_size": 500, "params.shard_size": 4, "params.precision": "fp32", "params.device": "cpu",
        "params.batch_tokens": 2048 if optional else None, "params.gpus": 1 if optional else None,
        "params.threshold": 0.5 if optional else None, "params.store_dir": "/store",
        "params.outdir": "/results", "params.publish_dir_mode": "copy",
        "task.cpus": 2, "task.process": called,
        "task.accelerator": {"request": 1} if optional else None, "task.accelerator.request": 1,
        "workflow.manifest.version": "0.1.0", "workflow.stubRun": False,
        "meta.id": "sample", "meta.shard": "sample.00001", "meta.shard_index": 1, "meta.shard_count": 2,
        "meta.md5": {"dnabert": "0" * 32, "esm": "1" * 32}, "meta.features_key": "4" * 32,
        "model_meta.kind": kind, "model_meta.id": "org--model@" + "c" * 40, "model_meta.model": "org/model",
        "model_meta.revision": "main", "model_meta.commit": "c" * 40,
    }
    staged = {"fasta": "sample.fa", "model": "model", "dnabert_model": "dnabert", "esm_model": "esm",
              "compile_cache": "compile-cache", "dnabert": "sample.00001.dnabert.h5",
              "esm": "sample.00001.esm.h5", "features": PathList(["1/features.h5", "2/features.h5"]),
              "sequences": "sample.sequences.tsv", "classifier": "classifier.pth",
              "summary": "sequence_summary.tsv", "predictions": "prediction_results.tsv"}
    for name, stage_as in process.path_inputs():
        env[name] = staged[name]
    env.update(values)
    return task_env(called, env)


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
    """main.nf's own functions (not a copy), run by Groovy: sample names, checksum parsing, shard
    pairing and numeric order (past 99,999 shards), meta kept, model keys."""
    import hashlib

    from virnucpro.fasta import stem

    names = ["reads.fasta.gz", "a.b.fa", "x.fna", "x.faa.gz", "plain", "y.fas", "z.fa.gz.fa"]
    shards = tmp_path / "shards"
    shards.mkdir()
    numbers = [1, 2, 99999, 100000, 100001]
    for number in numbers:
        (shards / f"s.{number:05d}.nucleotide.fa").write_bytes(f">n{number}\nACGT\n".encode())
        (shards / f"s.{number:05d}.protein.fa").write_bytes(f">p{number}\nMK\n".encode())
    md5sum = subprocess.run("md5sum -- *.nucleotide.fa *.protein.fa", shell=True, cwd=shards, capture_output=True, text=True, check=True).stdout
    (tmp_path / "checksums.md5").write_text(md5sum)
    single = tmp_path / "single"
    single.mkdir()
    (single / "s.nucleotide.fa").write_text(">a\nACGT\n")
    (single / "s.protein.fa").write_text(">a\nMK\n")
    (tmp_path / "single.md5").write_text(subprocess.run("md5sum -- *.fa", shell=True, cwd=single, capture_output=True, text=True, check=True).stdout)
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / ".cache").mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    (model / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 5000)
    (model / ".cache" / "ignored").write_text("download metadata")

    script = main_functions("withoutSuffix", "fastaStem", "md5Hex", "readChecksums", "shardIndex", "shardItems",
                            "shardFields", "sampleMeta", "featuresKey", "folderDigest", "isLocalModel", "isCommit",
                            "hubKey", "flag", "isObjectStorage") + f"""
// What Nextflow provides around these functions: file() and Path.name/.parent.
ExpandoMetaClass.enableGlobally()
java.nio.file.Path.metaClass.getName = {{ -> delegate.fileName.toString() }}
def file(String path) {{ java.nio.file.Paths.get(path) }}
{json.dumps(names)}.each {{ name -> println "stem\\t" + name + "\\t" + fastaStem(name) }}
readChecksums(file('{tmp_path / "checksums.md5"}')).each {{ name, hash -> println "md5\\t" + name + "\\t" + hash }}
println "key\\t" + hubKey('org/name', 'abc123')
println "commit\\t" + [isCommit('{"c" * 40}'), isCommit('main'), isCommit('v1.0')].join(',')
println "local\\t" + isLocalModel('{model}') + "," + isLocalModel('org/name')
// Digested once: the second call reads the cache (proved by a planted value), a changed
// modification time makes it read the folder again.
def digests = file('{tmp_path / "digests"}')
println "digest\\t" + folderDigest(file('{model}'), digests)
def cached = java.nio.file.Files.list(digests).toArray().findAll {{ p -> p.toString().endsWith('.md5') }}
println "cachefiles\\t" + cached.size()
cached[0].text = 'planted'
println "cachehit\\t" + folderDigest(file('{model}'), digests)
def weights = file('{model / "sub" / "weights.bin"}')
java.nio.file.Files.setLastModifiedTime(weights, java.nio.file.attribute.FileTime.fromMillis(java.nio.file.Files.getLastModifiedTime(weights).toMillis() + 5000))
println "changed\\t" + folderDigest(file('{model}'), digests)
println "objects\\t" + [isObjectStorage('s3://bucket/store'), isObjectStorage('gs://b/s'), isObjectStorage('virnucpro-store'), isObjectStorage('/scratch/store')].join(',')
println "flag\\t" + [flag(true), flag('true'), flag(false), flag('false')].join(',')
def listed = {{ dir, suffix -> java.nio.file.Files.list(file(dir)).toArray().findAll {{ p -> p.toString().endsWith(suffix) }}.reverse() }}
def meta = [id: 'sample', group: 'g1']
def items = shardItems(meta, listed('{shards}', '.nucleotide.fa'), listed('{shards}', '.protein.fa'), file('{tmp_path / "checksums.md5"}'))
items.each {{ item -> println "shard\\t" + item[0].shard + "\\t" + item[0].shard_index + "\\t" + item[0].shard_count + "\\t" + item[0].md5.dnabert + "\\t" + item[0].md5.esm + "\\t" + item[1].fileName + "\\t" + item[2].fileName }}
println "back\\t" + items.collect {{ item -> sampleMeta(item[0] + [features_key: 'k']) == meta }}.join(',')
def one = shardItems(meta, file('{single}/s.nucleotide.fa'), file('{single}/s.protein.fa'), file('{tmp_path / "single.md5"}'))
println "single\\t" + one.size() + "\\t" + one[0][0].shard + "\\t" + one[0][0].shard_index
println "features\\t" + featuresKey(file('/store/a/x.h5'), file('/store/b/y.h5')) + "\\t" + featuresKey(file('/store/a/z.h5'), file('/store/b/w.h5')) + "\\t" + featuresKey(file('/store/a2/x.h5'), file('/store/b/y.h5'))
"""
    (tmp_path / "check.groovy").write_text(script)
    groovy, env = groovy_command()
    result = subprocess.run([groovy, str(tmp_path / "check.groovy")], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert {name: got for kind, name, got in (l for l in lines if l[0] == "stem")} == {n: stem(n) for n in names}
    expected_md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in shards.iterdir()}
    assert {name: got for kind, name, got in (l for l in lines if l[0] == "md5")} == expected_md5
    assert [l[1] for l in lines if l[0] == "key"] == ["org--name@abc123"]
    assert [l[1] for l in lines if l[0] == "commit"] == ["true,false,false"]
    assert [l[1] for l in lines if l[0] == "local"] == ["true,false"]
    digest = hashlib.md5()
    for relative in ("config.json", "sub/weights.bin"):
        digest.update(f"{relative}\n".encode())
        digest.update((model / relative).read_bytes())
    assert [l[1] for l in lines if l[0] == "digest"] == [digest.hexdigest()]
    assert [l[1] for l in lines if l[0] == "cachefiles"] == ["1"]
    assert [l[1] for l in lines if l[0] == "cachehit"] == ["planted"]  # not read again
    assert [l[1] for l in lines if l[0] == "changed"] == [digest.hexdigest()]  # read again, same bytes
    assert [l[1] for l in lines if l[0] == "objects"] == ["true,true,false,false"]
    assert not [p for p in (tmp_path / "digests").iterdir() if p.name.endswith(".tmp")]
    assert [l[1] for l in lines if l[0] == "flag"] == ["true,true,false,false"]
    # Paired by number whatever order the files come in, in numeric order, names padded to the
    # widest number so they sort too, each shard with its own checksums.
    shard_lines = [l[1:] for l in lines if l[0] == "shard"]
    assert shard_lines == [[f"sample.{n:06d}", str(n), "5", expected_md5[f"s.{n:05d}.nucleotide.fa"],
                            expected_md5[f"s.{n:05d}.protein.fa"], f"s.{n:05d}.nucleotide.fa", f"s.{n:05d}.protein.fa"]
                           for n in numbers]
    assert sorted(l[0] for l in shard_lines) == [l[0] for l in shard_lines]
    assert [l[1] for l in lines if l[0] == "back"] == ["true,true,true,true,true"]  # the sample's meta, unchanged
    assert [l[1:] for l in lines if l[0] == "single"] == [["1", "sample.00001", "1"]]
    (features,) = [l[1:] for l in lines if l[0] == "features"]
    assert features[0] == features[1] != features[2]  # keyed by the embeddings' store folders


@pytest.mark.skipif(groovy_command() is None, reason="no groovy/java here to run main.nf's checkFirst")
def test_check_first_runs_under_groovy_for_the_profiles(tmp_path):
    lines = [main_functions("flag", "checkFirst")]
    cases = {"test": (True, "cpu"), "test,gpu": (True, "cuda"), "gpu": (False, "cuda"), "test,gpu cli string": ("true", "cuda:1"),
             "standard": (False, "auto")}
    for name, (make, device) in cases.items():
        lines.append(f"params = [make_test_models: {groovy_value(make)}, device: {groovy_value(device)}]")
        lines.append(f"println '{name}\\t' + checkFirst()")
    (tmp_path / "first.groovy").write_text("\n".join(lines) + "\n")
    groovy, env = groovy_command()
    result = subprocess.run([groovy, str(tmp_path / "first.groovy")], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert dict(line.split("\t") for line in result.stdout.splitlines()) == {
        "test": "false", "test,gpu": "true", "gpu": "false", "test,gpu cli string": "true", "standard": "false"}


@pytest.mark.skipif(groovy_command() is None, reason="no groovy/java here to evaluate conf/modules.config's closures")
@pytest.mark.parametrize("optional", [True, False])
def test_modules_config_closures_evaluate_under_groovy_as_rendered_here(tmp_path, optional):
    """Groovy itself evaluates every ext.args and storeDir closure of conf/modules.config (their
    text, not a copy) with one task's values: the same strings the Python rendering above gives."""
    checks, expected = [], []
    for called, process in sorted(called_processes().items()):
        env = sample_env(process, optional=optional, called=called)
        bound = {
            "params": {k.split(".", 1)[1]: v for k, v in env.items() if k.startswith("params.")},
            "meta": {k.split(".", 1)[1]: v for k, v in env.items() if k.startswith("meta.")},
            "model_meta": {k.split(".", 1)[1]: v for k, v in env.items() if k.startswith("model_meta.")},
        }
        lines = [f"def {name} = {groovy_value(value)}" for name, value in bound.items()]
        lines.append("def workflow = [manifest: [version: '0.1.0'], stubRun: false]")
        lines.append(f"def task = [ext: [args: {groovy_value(env['task.ext.args'])}]]")
        for key in ("ext.args", "storeDir"):
            body = setting(called, key)
            if body:
                lines.append(f"println '{called} {key}\t' + {{ {body} }}.call()")
                expected.append(f"{called} {key}\t{evaluate_closure(body, env)}")
        checks.append(f"def check{len(checks)}() {{\n" + "\n".join(lines) + f"\n}}\ncheck{len(checks)}()")
    script = tmp_path / "closures.groovy"
    script.write_text("\n".join(checks) + "\n")
    groovy, genv = groovy_command()
    result = subprocess.run([groovy, str(script)], capture_output=True, text=True, env=genv)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected


def groovy_value(value):
    """A Python value as a Groovy literal (None, bool, numbers, strings, dicts)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "[" + ", ".join(f"{k}: {groovy_value(v)}" for k, v in value.items()) + "]" if value else "[:]"
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


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


@pytest.mark.skipif(groovy_command() is None, reason="no groovy/java here to evaluate the config expressions")
def test_config_settings_from_integer_params_are_integers_even_from_command_line_strings(tmp_path):
    """Directives such as accelerator and maxForks need numbers; nf-schema's cast is for validation
    only (params keep the string the strict parser gave), so every setting computed from an integer
    param must cast it: evaluated by Groovy with each such param unset, a number and a string."""
    settings = config_number_settings()
    assert {s for _, s, _ in settings} >= {"accelerator", "maxForks", "maxRetries"}, settings
    integers = sorted(name for name, spec in schema_properties().items() if spec["type"] == "integer")
    defaults = declared_params()
    lines = []
    # unset (null for a param without default, else its default), a number, a string from the command line
    givens = {"unset": None, "number": "3", "string": "'3'"}
    for given, literal in givens.items():
        bound = ", ".join(f"{name}: {literal or groovy_value(defaults[name])}" for name in integers)
        for path, setting, expression in settings:
            lines.append(f"def check{len(lines)}() {{\n"
                         f"    def params = [{bound}, google_gpu_type: 'nvidia-l4']\n"
                         f"    def value = {expression}\n"
                         f"    def number = value instanceof Map ? value.request : value\n"
                         f"    println '{path} {setting} {given} ' + number.getClass().simpleName + ' ' + number\n"
                         f"}}\ncheck{len(lines)}()")
    script = tmp_path / "numbers.groovy"
    script.write_text("\n".join(lines) + "\n")
    groovy, env = groovy_command()
    result = subprocess.run([groovy, str(script)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    for line in result.stdout.splitlines():
        path, setting, given, kind, number = line.split(" ")
        assert kind == "Integer", f"{path}: {setting} is a {kind} when the param is {given}"
        if given != "unset":
            assert number == "3", line
    assert len(result.stdout.splitlines()) == len(givens) * len(settings)


def test_readme_commands_use_declared_params_and_existing_profiles():
    readme = open(os.path.join(REPO, "README.md")).read()
    section = readme.split("<!-- section: nextflow -->")[1].split("<!-- end: nextflow -->")[0]
    commands = re.findall(r"^nextflow run .*?(?<!\\)$", re.sub(r"\\\n\s*", " ", section), re.M)
    assert len(commands) >= 6
    declared, known_profiles = declared_params(), profiles()
    for command in commands:
        words = shlex.split(command.split("#")[0])
        for word in words:
            if word.startswith("--") and word != "--help":  # --help: nf-schema's, from the schema
                assert word[2:] in declared, f"README passes undeclared --{word[2:]}: {command}"
        if "-profile" in words:
            for name in words[words.index("-profile") + 1].split(","):
                assert name in known_profiles, f"README uses unknown profile {name}"
