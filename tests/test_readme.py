"""The README's quick start is what CI runs, and every tool it documents exists."""

import os
import re

from helpers import REPO


def quickstart_commands():
    with open(os.path.join(REPO, "README.md")) as handle:
        readme = handle.read()
    section = readme.split("<!-- section: quickstart -->")[1].split("<!-- end: quickstart -->")[0]
    first_block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in first_block.splitlines() if line.strip() and not line.startswith("#")]


def test_ci_runs_the_readme_quick_start_verbatim():
    commands = quickstart_commands()
    assert len(commands) == 2
    with open(os.path.join(REPO, ".ci", "run")) as handle:
        ci_lines = [line.strip() for line in handle]
    for command in commands:
        assert command.strip() in ci_lines, command


def test_ci_pins_the_cpu_torch_wheel():
    with open(os.path.join(REPO, ".ci", "run")) as handle:
        ci = handle.read()
    installs = re.findall(r"pip install[^&\n]*torch[^&\n]*", ci)
    assert installs and all("torch==2.13.0" in line for line in installs)


def test_every_tool_in_the_quick_start_is_a_bin_script():
    tools = set(re.findall(r"\b(virnucpro-[a-z-]+)", " ".join(quickstart_commands())))
    assert tools
    for tool in tools:
        assert os.access(os.path.join(REPO, "bin", tool), os.X_OK), tool
