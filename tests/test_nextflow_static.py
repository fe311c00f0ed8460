"""Python checks of the Nextflow pipeline that catch real mismatches, where Nextflow is not needed:
every command line a module runs (with its ext.args from conf/modules.config) is accepted by the
tool's own signature, store keys hold everything that determines a stored file, params agree with
nextflow_schema.json and the profiles, images and pins agree across configs, README and CI, and the
pipeline's Groovy functions and config closures run under Groovy. How the pipeline behaves when it
runs is nf-test's job (tests/*.nf.test, modules/*.nf.test; hosted CI), and each module's script run
by bash here is tests/test_nextflow_scripts.py's. The parser and renderer: tests/nextflow_source.py.
"""

import glob
import json
import os
import re
import shlex
import subprocess

import pytest

from helpers import REPO
from nextflow_source import (
    CI_WORKFLOW, CONFIG, MAIN_NF, SCHEMA, SCHEMA_INPUT, PathList, all_pipeline_files, blocks,
    called_processes, check_fire_command, config_number_settings, declared_params, evaluate_closure, first_attempt_gb,
    gpu_accelerators, groovy_command, groovy_value, images, module_processes, module_settings, params_block,
    profiles, render_script, sample_env, schema_properties, setting, store_dir, stored_path,
    strip_comments, task_env, tool_commands, utils_functions, version_tuple,
)


@pytest.fixture(scope="module")
def processes():
    return module_processes()


def nf_test_files():
    """nf-test's config and test files (Groovy DSL)."""
    return ([os.path.join(REPO, "nf-test.config")]
            + sorted(glob.glob(os.path.join(REPO, "tests", "**", "*.nf.test"), recursive=True))
            + sorted(glob.glob(os.path.join(REPO, "tests", "modules", "*.config"))))


@pytest.mark.skipif(groovy_command() is None, reason="no groovy/java here to parse the pipeline files")
def test_every_pipeline_and_nf_test_file_parses_as_groovy(tmp_path):
    """Groovy's parser reads every script, config and nf-test file to its syntax tree (Nextflow's own,
    stricter parser runs as `nextflow lint` in hosted CI, and nf-test runs the tests there)."""
    files = all_pipeline_files() + nf_test_files()
    assert len(nf_test_files()) >= 5
    script = tmp_path / "parse.groovy"
    script.write_text("import org.codehaus.groovy.control.*\n"
                      "args.each { path ->\n"
                      "    def unit = new CompilationUnit()\n"
                      "    unit.addSource(new File(path))\n"
                      "    unit.compile(Phases.CONVERSION)\n"
                      "    println 'parsed ' + path\n"
                      "}\n")
    groovy, env = groovy_command()
    result = subprocess.run([groovy, str(script)] + files, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"parsed {path}" for path in files]


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
        assert process.stub, f"{process.name}: no stub"
        # Versions on the `versions` topic, the package's first; eval where the process is not
        # stored (storeDir keeps only val and path outputs), a stored file where it is.
        versions = process.versions()
        assert versions and versions[0][0] == "virnucpro", f"{process.name}: no virnucpro version on the versions topic"
        stored = any(setting(called, "storeDir") for called, p in called_processes().items() if p.name == process.name)
        assert {kind for _, kind, _ in versions} == {"path" if stored else "eval"}, f"{process.name}: {versions}"
        assert "versions.yml" not in process.script + process.stub, f"{process.name}: still writes versions.yml"


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


def test_chunk_size_reaches_classify():
    """CLASSIFY checks the classifier against --chunk_size (its recorded metadata); main.nf refusing a
    published classifier named for another chunk size is tests/main.nf.test's."""
    for optional in (True, False):
        assert "--chunk_size 500" in sample_env(module_processes()["CLASSIFY"], optional=optional)["task.ext.args"]


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
    ((match, gated),) = blocks(workflow, r"if\s*\(\s*checkFirst\(params\.make_test_models,\s*params\.device\)\s*\)")
    assert re.search(r"CHECK\(ch_dnabert,\s*ch_esm,\s*compile_cache\)", gated)
    for channel in ("ch_dnabert", "ch_esm"):
        assert re.search(rf"{channel}\s*=\s*CHECK\.out\.report\.combine\({channel}\)", gated), channel
    assert workflow.index(match.group(0)) < workflow.index("EXTRACT_DNABERT(") < workflow.index("EXTRACT_ESM(")
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
    # compileCache itself (the folder, or [] for object storage): test_utils_functions_run_under_groovy.
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
    another store folder, so two tasks never write one path at once, version files included
    (storeDir moves every output of a task, its version files too, into its folder)."""
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
            assert "virnucpro.version" in outputs and stored_path(called, env).startswith(folder + "/")


def test_hub_models_are_resolved_then_fetched_at_the_commit():
    """RESOLVE_MODEL asks for the commit, FETCH_MODEL downloads that commit (the key `id@commit`:
    hubKey, run under Groovy below)."""
    (resolve_argv,) = tool_commands(render_script(called_processes()["RESOLVE_MODEL"],
                                                  sample_env(called_processes()["RESOLVE_MODEL"], called="RESOLVE_MODEL")))
    assert "--resolve" in resolve_argv
    (fetch_argv,) = tool_commands(render_script(called_processes()["FETCH_MODEL"],
                                                sample_env(called_processes()["FETCH_MODEL"], called="FETCH_MODEL")))
    assert fetch_argv[fetch_argv.index("--revision") + 1] == "c" * 40, "FETCH_MODEL must download the resolved commit"


def test_nf_schema_is_pinned_gives_help_and_knows_the_samplesheet_schema():
    config = strip_comments(open(CONFIG).read())
    assert re.search(r"plugins\s*\{\s*id\s*'nf-schema@\d+\.\d+\.\d+'\s*\}", config), "nf-schema not pinned"
    ((_, validation),) = blocks(config, r"(?m)^validation")
    assert re.search(r"help\s*\{[^}]*enabled\s*=\s*true", validation), "--help not generated from the schema"
    schema = json.load(open(SCHEMA))
    spec = schema_properties()["input"]
    assert spec["schema"] == "assets/schema_input.json" and spec["format"] == "file-path"
    assert os.path.exists(os.path.join(REPO, spec["schema"]))


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


def test_samplesheet_schema_describes_sample_and_fasta():
    schema = json.load(open(SCHEMA_INPUT))
    assert schema["$schema"].startswith("https://json-schema.org/draft/2020-12") and schema["type"] == "array"
    items = schema["items"]
    assert set(items["required"]) == {"sample", "fasta"}
    assert items["properties"]["sample"]["meta"] == ["id"]
    assert items["properties"]["fasta"]["format"] == "file-path" and items["properties"]["fasta"]["exists"] is True
    assert schema["uniqueEntries"] == ["sample"]


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
    for path in all_pipeline_files() + nf_test_files() + [SCHEMA, SCHEMA_INPUT, CI_WORKFLOW]:
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


@pytest.mark.skipif(groovy_command() is None, reason="no groovy/java here to run the pipeline's helper functions")
def test_utils_functions_run_under_groovy(tmp_path):
    """The pipeline's own functions (subworkflows/local/utils_virnucpro_pipeline, not a copy), run by
    Groovy: sample names, checksum parsing, shard pairing and numeric order (past 99,999 shards), meta
    kept, model keys, the store's digest and compile caches, the versions file."""
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

    script = utils_functions("withoutSuffix", "fastaStem", "md5Hex", "readChecksums", "shardIndex", "shardItems",
                             "shardFields", "sampleMeta", "featuresKey", "folderDigest", "isLocalModel", "isCommit",
                             "hubKey", "flag", "isObjectStorage", "digestCache", "compileCache", "versionText",
                             "versionsYaml") + f"""
// What Nextflow provides around these functions: file() and Path.name/.parent.
ExpandoMetaClass.enableGlobally()
java.nio.file.Path.metaClass.getName = {{ -> delegate.fileName.toString() }}
java.nio.file.Path.metaClass.mkdirs = {{ -> java.nio.file.Files.createDirectories(delegate); true }}
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
// The store's caches: folders in a file-system store (the compile cache made), else the launch
// folder's .nextflow/ for digests and no compile cache ([]: no such input) in object storage.
println "caches\\t" + [digestCache('{tmp_path}/store', '/launch'), digestCache('s3://b/store', '/launch'), compileCache('{tmp_path}/store'), compileCache('s3://b/store')].join(',')
println "madecache\\t" + java.nio.file.Files.isDirectory(file('{tmp_path}/store/compile-cache'))
println "flag\\t" + [flag(true), flag('true'), flag(false), flag('false')].join(',')
def listed = {{ dir, suffix -> java.nio.file.Files.list(file(dir)).toArray().findAll {{ p -> p.toString().endsWith(suffix) }}.reverse() }}
def meta = [id: 'sample', group: 'g1']
def items = shardItems(meta, listed('{shards}', '.nucleotide.fa'), listed('{shards}', '.protein.fa'), file('{tmp_path / "checksums.md5"}'))
items.each {{ item -> println "shard\\t" + item[0].shard + "\\t" + item[0].shard_index + "\\t" + item[0].shard_count + "\\t" + item[0].md5.dnabert + "\\t" + item[0].md5.esm + "\\t" + item[1].fileName + "\\t" + item[2].fileName }}
println "back\\t" + items.collect {{ item -> sampleMeta(item[0] + [features_key: 'k']) == meta }}.join(',')
def one = shardItems(meta, file('{single}/s.nucleotide.fa'), file('{single}/s.protein.fa'), file('{tmp_path / "single.md5"}'))
println "single\\t" + one.size() + "\\t" + one[0][0].shard + "\\t" + one[0][0].shard_index
println "features\\t" + featuresKey(file('/store/a/x.h5'), file('/store/b/y.h5')) + "\\t" + featuresKey(file('/store/a/z.h5'), file('/store/b/w.h5')) + "\\t" + featuresKey(file('/store/a2/x.h5'), file('/store/b/y.h5'))
// Last: the versions file (several lines).
def stored_version = file('{tmp_path}/torch.version')
stored_version.text = '2.13.0\\n'
def entries = [['MERGE', 'virnucpro', ' 0.1.0\\n'], ['EXTRACT_ESM', 'torch', stored_version], ['EXTRACT_ESM', 'torch', '2.12.0'], ['EXTRACT_ESM', 'virnucpro', '0.1.0']]
print versionsYaml(entries.collect {{ e -> [e[0], e[1], versionText(e[2])] }}, '0.1.0', '25.10.0')
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
    assert [l[1:] for l in lines if l[0] == "caches"] == [[f"{tmp_path}/store/digests,/launch/.nextflow/virnucpro-digests,"
                                                          f"{tmp_path}/store/compile-cache,[]"]]
    assert [l[1] for l in lines if l[0] == "madecache"] == ["true"]
    # Versions by process (a file's text or an eval's output, trimmed), tools in name order, two
    # versions of one tool both listed, then the pipeline's own.
    yaml_text = result.stdout[result.stdout.index('"EXTRACT_ESM":'):]
    assert yaml_text == ('"EXTRACT_ESM":\n    torch: 2.12.0, 2.13.0\n    virnucpro: 0.1.0\n"MERGE":\n    virnucpro: 0.1.0\n'
                         '"Workflow":\n    Nextflow: 25.10.0\n    virnucpro: 0.1.0\n')
    import yaml

    assert yaml.safe_load(yaml_text)["Workflow"] == {"Nextflow": "25.10.0", "virnucpro": "0.1.0"}


@pytest.mark.skipif(groovy_command() is None, reason="no groovy/java here to run the pipeline's checkFirst")
def test_check_first_runs_under_groovy_for_the_profiles(tmp_path):
    lines = [utils_functions("flag", "checkFirst")]
    cases = {"test": (True, "cpu"), "test,gpu": (True, "cuda"), "gpu": (False, "cuda"), "test,gpu cli string": ("true", "cuda:1"),
             "standard": (False, "auto")}
    for name, (make, device) in cases.items():
        lines.append(f"params = [make_test_models: {groovy_value(make)}, device: {groovy_value(device)}]")
        lines.append(f"println '{name}\\t' + checkFirst(params.make_test_models, params.device)")
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
