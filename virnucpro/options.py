"""Every tool's command line, read from the signature of the function it runs (cli.run):
checked whole before the function is called, and shown as a man-style --help page.

fire calls the function first and complains about arguments it could not use only when the
function returns, so a typo such as `--chunksize 300` would cost a whole run made with the
default. Here the command line is read exactly as fire will read it (`--name value`,
`--name=value`, `--name` alone for True, `--noname` for False, `-` and `_` alike) and refused,
with one line naming the option, when an option is unknown (with the closest real one), given
twice, missing, of the wrong kind, or when a bare argument stands where options are long only.

A function takes bare arguments only where it says so: a `*args` parameter (more of the same
files, as `virnucpro-classify --features a.h5 b.h5`), or a `subcommand` attribute naming the
parameter the first bare word fills and its choices (`virnucpro-extract dnabert|esm`).
"""

import difflib
import inspect
import re
import textwrap

#: Options that hold a whole number, or any number, in every tool that has them (a name means
#: the same thing everywhere); other options take the kind of their default.
WHOLE_NUMBERS = {"chunk_size", "workers", "gpus", "threads", "batch_tokens", "max_residues", "block_size",
                 "shard_size", "frames"}
NUMBERS = {"threshold", "min_cosine", "seconds"}
WIDTH = 100


def _is_flag(argument):
    """fire's rule: `--x` or `-x...` is an option; `-1` (a negative number) and `-` are values."""
    return argument.startswith("--") or bool(re.match(r"-[a-zA-Z]", argument))


def _parameters(function):
    """{name: inspect.Parameter} of the options (everything but *args and **kwargs)."""
    return {name: p for name, p in inspect.signature(function).parameters.items()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _var_positional(function):
    return next((p for p in inspect.signature(function).parameters.values() if p.kind == p.VAR_POSITIONAL), None)


def _subcommand(function):
    """(parameter name, choices) of the function's one bare-word argument, or None."""
    return getattr(function, "subcommand", None)


def kind_of(name, parameter):
    """'switch', 'whole number', 'number' or 'text': what an option's value must be."""
    if isinstance(parameter.default, bool):
        return "switch"
    if name in WHOLE_NUMBERS or (type(parameter.default) is int):
        return "whole number"
    if name in NUMBERS or isinstance(parameter.default, float):
        return "number"
    return "text"


def required(parameter):
    return parameter.default is parameter.empty


def _value_problem(option, kind, value, raw):
    """Why `value` (as fire parsed the text `raw`) is not a valid `kind`, or None."""
    if kind == "switch":
        if not isinstance(value, bool):
            return f"{option} is a switch and takes no value (got {raw!r}); give {option} or --no{option[2:]}"
    elif raw is None:
        return f"{option} needs a value"
    elif kind == "whole number" and (isinstance(value, bool) or not isinstance(value, int)):
        return f"{option} takes a whole number, got {raw!r}"
    elif kind == "number" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return f"{option} takes a number, got {raw!r}"
    return None


def _unknown(option, names):
    close = difflib.get_close_matches(option.lstrip("-").replace("-", "_"), names, n=1, cutoff=0.6)
    hint = f"; did you mean --{close[0]}?" if close else "; see --help for the options"
    return f"unknown option {option}{hint}"


def command_line_problem(function, args):
    """The first problem with `args` as a command line of `function`, as one line, or None."""
    from fire.parser import DefaultParseValue

    if "--" in args:
        return "'--' is not accepted (fire's own flags are not available; every option is a long --option)"
    parameters = _parameters(function)
    subcommand = _subcommand(function)
    given, bare = {}, []
    index = 0
    while index < len(args):
        argument = args[index]
        index += 1
        if not _is_flag(argument):
            bare.append(argument)
            continue
        if not argument.startswith("--"):
            return f"{argument.split('=')[0]}: options are long only (--option)"
        key, equals, text = argument[2:].partition("=")
        name = key.replace("-", "_")
        value_follows = not equals and index < len(args) and not _is_flag(args[index])
        if name not in parameters and name.startswith("no") and name[2:] in parameters and not equals \
                and not value_follows and kind_of(name[2:], parameters[name[2:]]) == "switch":
            name, raw = name[2:], "False"
        elif name not in parameters:
            return _unknown(f"--{key}", list(parameters))
        elif equals:
            raw = text
        elif value_follows:
            raw = args[index]
            index += 1
        else:
            raw = None  # fire: True
        if name in given:
            return f"--{name} is given twice"
        kind = kind_of(name, parameters[name])
        value = True if raw is None else DefaultParseValue(raw)
        problem = _value_problem(f"--{name}", kind, value, raw)
        if problem:
            return problem
        given[name] = value
    if subcommand and subcommand[0] not in given and bare:
        name, choices = subcommand
        word = bare.pop(0)
        if word not in choices:
            return f"{word!r} is not one of {', '.join(choices)} (the first word names what to do)"
        given[name] = word
    if bare and not _var_positional(function):
        wanted = [name for name, p in parameters.items() if required(p) and name not in given]
        meant = f" (did you mean --{wanted[0]} {bare[0]}?)" if wanted else ""
        return f"unexpected argument {bare[0]!r}: options are long only{meant}; see --help"
    missing = [f"--{name}" if not subcommand or name != subcommand[0] else "|".join(subcommand[1])
               for name, p in parameters.items() if required(p) and name not in given]
    if missing:
        return f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required"
    return None


# ---- the help page ---------------------------------------------------------------------------

def _docstring(function):
    """(summary, description without its Usage lines, {argument: description}, the Usage lines as one string)."""
    from fire import docstrings

    info = docstrings.parse(inspect.getdoc(function) or "")
    lines = (info.description or "").splitlines()
    usage, rest = [], []
    for line in lines:
        if line.startswith("Usage:") or (usage and line.startswith(" ") and len(rest) == 0):
            usage.append(line)
        else:
            rest.append(line)
    described = {arg.name.lstrip("*"): " ".join((arg.description or "").split()) for arg in info.args or []}
    return info.summary or "", "\n".join(rest).strip(), described, " ".join(usage)


def _metavar(name, parameter, usage):
    """What an option's value looks like: from the docstring's Usage line (`--input FASTA`), else by kind."""
    match = re.search(rf"--{name} ([^\s\[\]-][^\s\[\]]*)", usage)
    if match:
        return match.group(1)
    kind = kind_of(name, parameter)
    return {"whole number": "N", "number": "X"}.get(kind, name.upper())


def _wrap(text, indent):
    return textwrap.fill(text, WIDTH, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False,
                         break_long_words=False)


def help_page(function, tool):
    """NAME, SYNOPSIS, DESCRIPTION and OPTIONS (each once, with its real default) of a tool."""
    summary, description, described, usage = _docstring(function)
    parameters = _parameters(function)
    subcommand = _subcommand(function)
    rest = _var_positional(function)
    words, options = [], []
    if subcommand:
        words.append("|".join(subcommand[1]))
    for name, parameter in parameters.items():
        if subcommand and name == subcommand[0]:
            continue
        kind = kind_of(name, parameter)
        shown = f"--{name}" if kind == "switch" else f"--{name} {_metavar(name, parameter, usage)}"
        words.append(shown if required(parameter) else f"[{shown}]")
        text = described.get(name, "").rstrip(".")
        if kind == "switch":
            text += ". A switch: off unless given" if parameter.default is False else f". A switch: on unless --no{name}"
        elif required(parameter):
            text += ". Required"
        elif parameter.default is not None:
            text += f". Default: {parameter.default}"
        options.append((shown, text + "."))
    if rest is not None:  # more of the first option's values: shown right after it
        metavar = rest.name.upper()
        words.insert(2 if subcommand else 1, f"[{metavar} ...]")
        options.append((f"{metavar} ...", described.get(rest.name, "").rstrip(".") + "."))
    page = ["NAME", _wrap(f"{tool} - {summary}", "    "), "", "SYNOPSIS"]
    synopsis = textwrap.fill(" ".join([tool] + [word.replace(" ", "\u00a0") for word in words]), WIDTH,
                             initial_indent="    ", subsequent_indent="        ", break_on_hyphens=False,
                             break_long_words=False)
    page.append(synopsis.replace("\u00a0", " "))  # an option and its value are never split over two lines
    if subcommand:
        page += ["", "COMMANDS", _wrap(f"{'|'.join(subcommand[1])}: {described.get(subcommand[0], '')}", "    ")]
    if description:
        page += ["", "DESCRIPTION"]
        for paragraph in re.split(r"\n\s*\n", description):
            page.append(_wrap(" ".join(paragraph.split()), "    "))
    page += ["", "OPTIONS"]
    for shown, text in options:
        page += [f"    {shown}", _wrap(text, "        ")]
    return "\n".join(page) + "\n"
