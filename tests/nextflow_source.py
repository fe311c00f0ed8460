"""The Nextflow pipeline's source, read for the Python checks (tests/test_nextflow_static.py,
test_nextflow_scripts.py, test_names.py, test_schemas.py, ...): a small parser of processes
(directives, inputs, outputs, script and stub blocks), a renderer of their scripts as Nextflow
would bind them, the tools' own signatures to check command lines against, the params, profiles
and images of the configs, and a Groovy runner for the pipeline's functions. Not a test module:
tests import from here, never from each other."""

import ast
import glob
import inspect
import json
import os
import re
import shlex
import shutil
import textwrap

from helpers import BIN, REPO

MODULES = os.path.join(REPO, "modules")
MAIN_NF = os.path.join(REPO, "main.nf")
UTILS_NF = os.path.join(REPO, "subworkflows", "local", "utils_virnucpro_pipeline", "main.nf")
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

# An eval output's command: eval('...') or eval("..." with \" escapes).
_EVAL = re.compile(r"""\beval\(\s*(?:'([^']*)'|"((?:[^"\\]|\\.)*)")\s*\)""")


def eval_commands(line):
    """The shell commands of the eval outputs on one output line."""
    return [m.group(1) if m.group(1) is not None else re.sub(r"\\(.)", r"\1", m.group(2))
            for m in _EVAL.finditer(line)]


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
        """[(qualifier, pattern)] of the path, env and eval outputs, e.g. ('path', 'shards/*.nucleotide.fa'),
        ('eval', 'virnucpro-merge --version'); a "GString" name is rendered with env (the task's values)."""
        found = []
        for line in self.outputs:
            for match in re.finditer(r"path\(?\s*(?:'([^']+)'|\"([^\"]+)\")", line):
                found.append(("path", match.group(1) or render_gstring(match.group(2), env or {})))
            found += [("env", name) for name in re.findall(r"\benv\(\s*'(\w+)'\s*\)", line)]
            found += [("eval", command) for command in eval_commands(line)]
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

    def versions(self):
        """[(tool, qualifier, source)] of the process's `versions` topic outputs:
        `tuple val("${task.process}"), val('TOOL'), eval('CMD') or path('FILE'), ..., topic: versions`."""
        found = []
        for line in self.outputs:
            if not re.search(r"\btopic:\s*versions\b", line):
                continue
            match = re.match(r"""tuple val\("\$\{task\.process\}"\), val\('([\w-]+)'\), (eval|path)\(""", line)
            assert match, f"{self.name}: a versions topic output is not (task.process, tool, eval or path): {line}"
            ((kind, source),) = [(k, s) for k, s in Process._outputs_of(line)]
            found.append((match.group(1), kind, source))
        return found

    @staticmethod
    def _outputs_of(line):
        """[(qualifier, pattern)] of one output line, unrendered."""
        found = [("path", m.group(1)) for m in re.finditer(r"path\(\s*'([^']+)'\s*\)", line)]
        found += [("eval", command) for command in eval_commands(line)]
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
    either = re.fullmatch(rf"({_REF})\s*\?:\s*({_REF})", expr)
    if either:
        return _value(env, either.group(1)) or _value(env, either.group(2))
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
    elvis = re.fullmatch(rf"({_REF})\s*\?:\s*('[^']*'|{_REF})", expr)
    ternary = re.fullmatch(rf"({_REF})(\s*!=\s*null)?\s*\?\s*(\"[^\"]*\")\s*:\s*('[^']*')", expr)
    if elvis:
        value = _value(env, elvis.group(1))
        fallback = elvis.group(2)
        env[name] = value if value else (ast.literal_eval(fallback) if fallback.startswith("'") else _value(env, fallback))
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
    """[[argv...]] of every virnucpro-* command in a rendered bash script, but `TOOL --version` (the
    version a stored process records; tools.main answers it before the tool's options are read)."""
    commands = []
    joined = re.sub(r"\\\n", " ", script)
    for line in joined.split("\n"):
        for match in re.finditer(r"(?:^|[\s(=$]|\$\()(virnucpro-[\w-]+\s[^|;&)<>]*)", line):
            argv = shlex.split(match.group(1))
            if argv[1:] != ["--version"]:
                commands.append(argv)
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
            + sorted(glob.glob(os.path.join(REPO, "subworkflows", "**", "*.nf"), recursive=True))
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
    """env plus the task's ext.args and ext.prefix from conf/modules.config (None where none is set;
    an ext.prefix given in env is kept)."""
    args, prefix = setting(called, "ext.args"), setting(called, "ext.prefix")
    env = dict(env, **{"task.ext.args": evaluate_closure(args, env) if args else None})
    env.setdefault("task.ext.prefix", None)
    if prefix:
        env["task.ext.prefix"] = evaluate_closure(prefix, env)
    return env


def store_dir(called, env):
    body = setting(called, "storeDir")
    return evaluate_closure(body, env) if body else None


def schema_properties():
    schema = json.load(open(SCHEMA))
    return {name: spec for group in schema["$defs"].values() for name, spec in group["properties"].items()}


# ------------------------------------------------------------------ more helpers


def stored_path(called, env):
    """Where a task's main output lands in the store: storeDir / its declared file name."""
    process = called_processes()[called]
    (output,) = [pattern for kind, pattern in process.declared_outputs(env) if kind == "path" and pattern != "versions.yml"][:1]
    return f"{store_dir(called, env)}/{output}"


def version_tuple(text):
    return tuple(int(part) for part in text.split("."))


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


def first_attempt_gb(body):
    """The GB a `memory = { N.GB * task.attempt }` setting in a config block asks for at the first attempt."""
    return int(re.search(r"memory\s*=\s*\{\s*(\d+)\.GB\s*\*\s*task\.attempt\s*\}", body).group(1))


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


def groovy_command():
    """(groovy, environment) when a Groovy interpreter and Java are installed (they are not needed
    otherwise; `apt-get install groovy` provides them), else None."""
    groovy, java = shutil.which("groovy"), shutil.which("java")
    if not groovy or not java:
        return None
    java_home = os.path.dirname(os.path.dirname(os.path.realpath(java)))
    return groovy, dict(os.environ, JAVA_HOME=os.environ.get("JAVA_HOME", java_home))


def utils_functions(*names):
    """The source of the named functions of subworkflows/local/utils_virnucpro_pipeline/main.nf."""
    text = open(UTILS_NF).read()
    sources = []
    for name in names:
        ((match, body),) = blocks(text, rf"(?m)^def\s+{name}\s*\([^)]*\)")
        sources.append(f"{match.group(0)}{body}}}\n")
    return "\n".join(sources)


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
