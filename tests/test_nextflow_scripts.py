"""Run each Nextflow process's script block with bash, as Nextflow would run one task.

Nextflow cannot run here, so each task is reproduced by hand, honestly:
- the `script:` (or `stub:`) block is taken from the module file by the parser in
  nextflow_source.py, its `def` lines evaluated and every `${...}` replaced by the value
  Nextflow would bind (staged input names, meta fields, params, task.cpus, task.process, ...;
  the renderer refuses anything more complex than a dotted name, an elvis or a ternary);
- inputs are staged as Nextflow stages them: a symlink named after the file in the task folder,
  or under the `stageAs` pattern (`?/*` -> 1/<name>, 2/<name>, ... in list order);
- the script runs with `bash -ue` (Nextflow's default shell) in that folder, with the project's
  bin/ first on PATH (Nextflow puts it there) and no network (HF_HUB_OFFLINE=1; FETCH_MODEL
  talks to the fake hub of tests/fake_hub.py);
- then every declared output pattern must match at least one file, as Nextflow requires, and
  the versions each task reports on the `versions` topic are read: an eval output's command run
  in the task folder after the script (as Nextflow does), a stored process's version file.
The tasks are chained like the pipeline chains them: TRANSLATE's shards feed the extractions,
their embeddings MERGE, the merged shards are gathered for CLASSIFY, whose tables make the REPORT.
"""

import glob
import hashlib
import json
import os
import re
import subprocess
import sys

import h5py
import pytest

import virnucpro
from virnucpro.fasta import read_fasta

from fake_hub import COMMIT, write_hub_file
from helpers import BIN, REPO, read_fasta_pairs
from nextflow_source import PathList, blocks, called_processes, params_block, profiles, render_script
from nextflow_source import task_env as with_ext_args

EXAMPLE = os.path.join(REPO, "examples", "metagenome_scaffolds.fa")


@pytest.fixture(scope="module")
def processes():
    """{name main.nf calls it by: Process} (EXTRACT twice, as EXTRACT_DNABERT and EXTRACT_ESM)."""
    return called_processes()


def task_env():
    """The environment of a task: project bin/ first on PATH, this interpreter's tools, offline."""
    path = os.pathsep.join([BIN, os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    pythonpath = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PATH=path, PYTHONPATH=pythonpath, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


def bindings(called, **values):
    """Nextflow's values for one task of the process main.nf calls `called`, with its ext.args from
    conf/modules.config; `values` holds the per-task ones."""
    env = {
        "params.chunk_size": 500, "params.shard_size": 2, "params.precision": "fp32", "params.device": "cpu",
        "params.batch_tokens": None, "params.gpus": None, "params.threshold": None,
        "task.cpus": 1, "task.process": called, "task.accelerator": None,
        "workflow.manifest.version": virnucpro.__version__,
        "model_meta.kind": {"EXTRACT_DNABERT": "dnabert", "EXTRACT_ESM": "esm"}.get(called),
    }
    env.update(values)
    return with_ext_args(called, env)


def stage(process, workdir, inputs):
    """Link each path input into workdir under the name Nextflow gives it; returns the bindings.
    An input not given is what main.nf passes as nf-core's `[]` for an optional one: nothing staged."""
    bound = {}
    for name, stage_as in process.path_inputs():
        if name not in inputs:
            bound[name] = PathList()
            continue
        sources = inputs[name]
        if stage_as is None:
            assert not isinstance(sources, list), f"{name}: one file expected"
            target = os.path.basename(str(sources))
            os.symlink(os.path.abspath(sources), os.path.join(workdir, target))
            bound[name] = target
        else:
            assert stage_as == "?/*", f"staging pattern {stage_as} not reproduced here"
            staged = PathList()
            for index, source in enumerate(sources, start=1):
                target = f"{index}/{os.path.basename(source)}"
                os.makedirs(os.path.join(workdir, str(index)))
                os.symlink(os.path.abspath(source), os.path.join(workdir, target))
                staged.append(target)
            bound[name] = staged
    return bound


def run_task(called, workdir, inputs=None, stub=False, extra_env=None, **values):
    """Stage, render, run with bash -ue; check every declared output. Returns {output name: [paths]}
    (an env output: {name: its value}; "versions": {tool: the version the task reports})."""
    process = called_processes()[called]
    os.makedirs(workdir)
    env = bindings(called, **values)
    env.update(stage(process, workdir, inputs or {}))
    script = render_script(process, env, stub=stub)
    outputs = process.declared_outputs(env)
    # Nextflow reads an env output after the script; unset, the task fails (bash -u here).
    script += "".join(f'printf "%s" "${name}" > .env.{name}\n' for kind, name in outputs if kind == "env")
    with open(os.path.join(workdir, ".command.sh"), "w") as handle:
        handle.write(script)
    environment = dict(task_env(), **(extra_env or {}))
    result = subprocess.run(["bash", "-ue", ".command.sh"], cwd=workdir, capture_output=True, text=True, env=environment)
    assert result.returncode == 0, f"{called} failed ({result.returncode}):\n{script}\n{result.stderr[-3000:]}"
    found = {"versions": {}}
    for tool, kind, source in process.versions():
        if kind == "eval":
            answer = subprocess.run(["bash", "-c", source], cwd=workdir, capture_output=True, text=True, env=environment)
            assert answer.returncode == 0, f"{called}: {source} failed: {answer.stderr[-2000:]}"
            found["versions"][tool] = answer.stdout.strip()
        else:
            found["versions"][tool] = open(os.path.join(workdir, source)).read().strip()
        assert found["versions"][tool], f"{called}: no {tool} version"
    for kind, pattern in outputs:
        if kind == "eval":
            continue
        if kind == "env":
            found[pattern] = open(os.path.join(workdir, f".env.{pattern}")).read()
            continue
        matched = sorted(glob.glob(os.path.join(workdir, pattern)))
        assert matched, f"{called}: declared output {pattern} not produced\n{script}"
        found[pattern] = matched
    return found


def h5_output(outputs):
    (path,) = [paths[0] for pattern, paths in outputs.items() if pattern.endswith(".h5")]
    return path


def check_versions(outputs, tools):
    """The task reported these versions (and maybe others)."""
    assert {tool: outputs["versions"].get(tool) for tool in tools} == tools, outputs["versions"]


def shard_name(path, suffix):
    return os.path.basename(path)[: -len(suffix)]


@pytest.fixture(scope="module")
def tiny_fasta(tmp_path_factory):
    """Two pieces of the bundled scaffolds: 1100 bp (3 chunks) and 700 bp (2 chunks)."""
    records = list(read_fasta(EXAMPLE))
    path = tmp_path_factory.mktemp("input") / "tiny.fa"
    path.write_text(f">{records[0][0]}\n{records[0][1][:1100]}\n>{records[1][0]}\n{records[1][1][2000:2700]}\n")
    return str(path)


@pytest.fixture(scope="module")
def translated(processes, tiny_fasta, tmp_path_factory):
    work = str(tmp_path_factory.mktemp("tasks") / "translate")
    outputs = run_task("TRANSLATE", work, {"fasta": tiny_fasta}, **{"meta.id": "tiny"})
    return work, outputs


@pytest.fixture(scope="module")
def shards(translated):
    """[(shard name, nucleotide FASTA, protein FASTA)] as main.nf pairs them (by name)."""
    _, outputs = translated
    nucleotides = outputs["shards/*.nucleotide.fa"]
    proteins = {shard_name(p, ".protein.fa"): p for p in outputs["shards/*.protein.fa"]}
    return [(shard_name(n, ".nucleotide.fa"), n, proteins[shard_name(n, ".nucleotide.fa")]) for n in nucleotides]


def test_translate_task_scatters_shards_with_their_checksums(translated, shards):
    work, outputs = translated
    assert len(shards) >= 2, "the test input should scatter into several shards"
    assert [s for s, _, _ in shards] == [f"tiny.{i:05d}" for i in range(1, len(shards) + 1)]
    frames = [read_fasta_pairs(n) for _, n, _ in shards]
    assert all(0 < len(f) <= 2 for f in frames)  # params.shard_size = 2 reached the tool
    # checksums.md5 is what main.nf keys the store with: it must be the md5 of each shard file.
    (checksums,) = outputs["checksums.md5"]
    listed = dict(reversed(line.split()) for line in open(checksums).read().splitlines())
    for _, nucleotide, protein in shards:
        for path in (nucleotide, protein):
            assert listed[os.path.basename(path)] == hashlib.md5(open(path, "rb").read()).hexdigest()
    assert len(listed) == 2 * len(shards)
    (table,) = outputs["shards/*.sequences.tsv"]
    assert os.path.basename(table) == "tiny.sequences.tsv"
    check_versions(outputs, {"virnucpro": virnucpro.__version__})


def test_test_profile_scatters_the_example_into_several_shards_with_sequences_across_them(processes, tmp_path):
    """The TRANSLATE task as `-profile test` runs it (its input, chunk and shard size): several shards,
    and sequences whose frames fall into more than one, so a CI run exercises the gather."""
    test = params_block("params {" + blocks(profiles()["test"], r"\bparams")[0][1] + "}")
    fasta = test["input_fasta"].replace("${projectDir}", REPO)
    outputs = run_task("TRANSLATE", str(tmp_path / "translate"), {"fasta": fasta},
                       **{"meta.id": "metagenome_scaffolds", "params.chunk_size": test["chunk_size"],
                          "params.shard_size": test["shard_size"]})
    shard_ids = [[i for i, _ in read_fasta_pairs(path)] for path in outputs["shards/*.nucleotide.fa"]]
    assert len(shard_ids) >= 3 and all(0 < len(ids) <= test["shard_size"] for ids in shard_ids)
    sequences = [{frame.rsplit("_chunk_", 1)[0] for frame in ids} for ids in shard_ids]
    spanning = {name for one, other in zip(sequences, sequences[1:]) for name in one & other}
    assert len(spanning) >= 2, "no sequence has frames in two shards"


@pytest.fixture(scope="module")
def embedded(processes, shards, test_models, tmp_path_factory):
    """Per shard: DNABERT-S and ESM-2 embeddings from the extraction tasks, then merged features."""
    root = tmp_path_factory.mktemp("tasks")
    merged = []
    for shard, nucleotide, protein in shards:
        meta = {"meta.id": "tiny", "meta.shard": shard}
        # The store's compile-cache folder is staged for one extraction, and not for the other
        # (main.nf passes [] for a store in object storage).
        cache = root / "compile-cache"
        cache.mkdir(exist_ok=True)
        dnabert = h5_output(run_task("EXTRACT_DNABERT", str(root / f"dnabert-{shard}"),
                                     {"fasta": nucleotide, "model": test_models["dnabert"], "compile_cache": cache}, **meta))
        esm = h5_output(run_task("EXTRACT_ESM", str(root / f"esm-{shard}"),
                                 {"fasta": protein, "model": test_models["esm"]}, **meta))
        assert (os.path.basename(dnabert), os.path.basename(esm)) == (f"{shard}.dnabert.h5", f"{shard}.esm.h5")
        features = h5_output(run_task("MERGE", str(root / f"merge-{shard}"), {"dnabert": dnabert, "esm": esm}, **meta))
        merged.append((shard, nucleotide, dnabert, esm, features))
    return merged


def test_extract_and_merge_tasks_embed_every_frame_of_their_shard(embedded):
    for shard, nucleotide, dnabert, esm, features in embedded:
        ids = [i for i, _ in read_fasta_pairs(nucleotide)]
        with h5py.File(dnabert) as h5:
            assert [i.decode() if isinstance(i, bytes) else i for i in h5["ids"][:]] == ids
            assert h5["embeddings"].shape == (len(ids), 768) and h5.attrs["kind"] == "dnabert"
            assert h5.attrs["precision"] == "fp32"
        with h5py.File(esm) as h5:
            assert h5["embeddings"].shape == (len(ids), 2560) and h5.attrs["kind"] == "esm"
        with h5py.File(features) as h5:
            assert [i.decode() if isinstance(i, bytes) else i for i in h5["ids"][:]] == ids
            assert h5["features"].shape == (len(ids), 3328)
        assert open(os.path.join(os.path.dirname(dnabert), "virnucpro.version")).read() == virnucpro.__version__ + "\n"


def test_classify_task_scores_the_gathered_shards_in_order(processes, embedded, translated, test_models, tmp_path):
    _, outputs = translated
    (sequences,) = outputs["shards/*.sequences.tsv"]
    features = [f for _, _, _, _, f in embedded]
    result = run_task("CLASSIFY", str(tmp_path / "classify"),
                      {"features": features, "sequences": sequences, "classifier": test_models["classifier"]},
                      **{"meta.id": "tiny"})
    rows = open(result["prediction_results.tsv"][0]).read().splitlines()
    frame_ids = [i for _, nucleotide, _, _, _ in embedded for i, _ in read_fasta_pairs(nucleotide)]
    assert rows[0].split("\t") == ["Sequence_ID", "Prediction", "score1", "score2"]
    assert [row.split("\t")[0] for row in rows[1:]] == frame_ids  # shard order kept through staging
    summary = open(result["sequence_summary.tsv"][0]).read().splitlines()
    assert len(summary) == 1 + 2  # both input sequences, each with one verdict
    assert open(result["prediction_results_highestscore.tsv"][0]).readline().split() == ["Modified_ID", "Is_Virus"]


def test_classify_task_passes_the_threshold_when_given(processes, embedded, translated, test_models, tmp_path):
    _, outputs = translated
    features = [f for _, _, _, _, f in embedded]
    common = {"features": features, "sequences": outputs["shards/*.sequences.tsv"][0],
              "classifier": test_models["classifier"]}
    strict = run_task("CLASSIFY", str(tmp_path / "strict"), common,
                      **{"meta.id": "tiny", "params.threshold": 1.0})
    lenient = run_task("CLASSIFY", str(tmp_path / "lenient"), common,
                       **{"meta.id": "tiny", "params.threshold": 0.0})
    def rows(result):
        return [line.split("\t") for line in open(result["sequence_summary.tsv"][0]).read().splitlines()[1:]]
    # The verdict is virus when at least --threshold of the scored chunks are viral: at 1.0 all of them.
    assert [row[-1] for row in rows(strict)] == ["virus" if row[4] == row[3] else "others" for row in rows(strict)]
    assert "others" not in [row[-1] for row in rows(lenient)]


def test_check_task_passes_here_and_fails_with_its_report_where_the_gpu_is_missing(processes, test_models, tmp_path):
    """CHECK as main.nf runs it in a test run: virnucpro-check on both models; its report is the
    output, and when the node cannot run the pipeline the task fails with the report in its log."""
    import torch

    inputs = {"dnabert_model": test_models["dnabert"], "esm_model": test_models["esm"], "compile_cache": tmp_path / "cache"}
    (tmp_path / "cache").mkdir()
    outputs = run_task("CHECK", str(tmp_path / "check"), inputs, **{"meta.id": "x", "dnabert_meta.id": "test-x"})
    report = open(outputs["check.txt"][0]).read().splitlines()
    assert report[-1].startswith("verdict: OK") and any(line.startswith("esm:") and "cosine" in line for line in report)
    # The version read from the installed package's metadata (torch is not imported) is torch's own.
    check_versions(outputs, {"virnucpro": virnucpro.__version__, "torch": torch.__version__})
    if not torch.cuda.is_available():
        with pytest.raises(AssertionError, match=r"(?s)CHECK failed \(1\).*device: +FAIL: --device cuda: no CUDA GPU.*verdict: FAIL"):
            run_task("CHECK", str(tmp_path / "on_gpu"), inputs, **{"params.device": "cuda", "params.precision": "bf16"})


def test_make_test_models_task_writes_the_models(processes, test_models, tmp_path):
    outputs = run_task("MAKE_TEST_MODELS", str(tmp_path / "make"))
    for name in ("dnabert", "esm"):
        (folder,) = outputs[name]
        assert sorted(os.listdir(folder)) == sorted(os.listdir(test_models[name]))
        assert open(os.path.join(folder, "config.json")).read() == open(os.path.join(test_models[name], "config.json")).read()
    assert os.path.getsize(outputs["classifier.pth"][0]) > 0


def test_report_task_writes_a_self_contained_report(processes, embedded, translated, test_models, tmp_path):
    """REPORT on what CLASSIFY publishes, staged under the names CLASSIFY gives them."""
    _, outputs = translated
    classified = run_task("CLASSIFY", str(tmp_path / "classify"),
                          {"features": [f for _, _, _, _, f in embedded], "sequences": outputs["shards/*.sequences.tsv"][0],
                           "classifier": test_models["classifier"]}, **{"meta.id": "tiny"})
    result = run_task("REPORT", str(tmp_path / "report"),
                      {"predictions": classified["prediction_results.tsv"][0], "summary": classified["sequence_summary.tsv"][0]},
                      **{"meta.id": "tiny", "params.threshold": 0.25})
    page = open(result["report.html"][0]).read()
    assert "VirNucPro report: tiny" in page and "<td>threshold</td><td>0.25</td>" in page
    assert len(re.findall(r"src='data:image/png;base64,", page)) >= 4
    assert not re.search(r"<(script|link)\b", page)
    for sequence in open(classified["sequence_summary.tsv"][0]).read().splitlines()[1:]:
        assert sequence.split("\t")[0] in page
    check_versions(result, {"virnucpro": virnucpro.__version__})


def fake_hub_env(tmp_path, repos):
    """Task environment additions that make the tools see a fake hub (tests/fake_hub.py), not the network."""
    env = write_hub_file(tmp_path / "hub.json", repos)
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], task_env()["PYTHONPATH"]])
    return env


@pytest.mark.parametrize("kind, weights", [("dnabert", "pytorch_model.bin"), ("esm", "model.safetensors")])
def test_fetch_model_task_snapshots_a_hub_model(processes, test_models, tmp_path, kind, weights):
    """From a fake hub: the test DNABERT-S has only pytorch_model.bin, the test ESM-2 model.safetensors."""
    source = test_models[kind]
    env = fake_hub_env(tmp_path, {f"test-org/{kind}": {"folder": source, "revisions": {"main": COMMIT}}})
    work = str(tmp_path / "fetch")
    resolved = run_task("RESOLVE_MODEL", str(tmp_path / "resolve"), extra_env=env,
                        **{"model_meta.model": f"test-org/{kind}", "model_meta.revision": "main"})
    assert resolved["commit"] == COMMIT
    from importlib.metadata import version

    check_versions(resolved, {"virnucpro": virnucpro.__version__, "huggingface_hub": version("huggingface_hub")})
    outputs = run_task("FETCH_MODEL", work, extra_env=env,
                       **{"model_meta.model": f"test-org/{kind}", "model_meta.commit": resolved["commit"],
                          "model_meta.id": f"test-org--{kind}@{COMMIT}"})
    (model,) = outputs["model"]
    # The test models carry a record of their own; the fetch writes its own record over it.
    wanted = [n for n in os.listdir(source) if (n.endswith((".json", ".txt")) or n == weights) and n != "virnucpro_model.json"]
    assert sorted(os.listdir(model)) == sorted(wanted + ["virnucpro_model.json"])
    for name in wanted:
        assert open(os.path.join(model, name), "rb").read() == open(os.path.join(source, name), "rb").read()
    record = json.load(open(os.path.join(model, "virnucpro_model.json")))
    assert record["commit"] == COMMIT and record["model"] == f"test-org/{kind}"
    check_versions(outputs, {"virnucpro": virnucpro.__version__})


def test_fetch_model_task_fails_clearly_without_weights(processes, tmp_path):
    config_only = tmp_path / "config_only"
    config_only.mkdir()
    (config_only / "config.json").write_text("{}")
    env = fake_hub_env(tmp_path, {"test-org/empty": {"folder": str(config_only), "revisions": {"main": COMMIT}}})
    with pytest.raises(AssertionError, match="neither .safetensors nor pytorch_model"):
        run_task("FETCH_MODEL", str(tmp_path / "fetch"), extra_env=env,
                 **{"model_meta.model": "test-org/empty", "model_meta.commit": COMMIT, "model_meta.id": "test-org--empty@x"})


def test_every_stub_produces_the_declared_outputs(processes, tmp_path):
    """`nextflow run -stub` runs these instead of the scripts: they must satisfy the outputs too."""
    dummy = tmp_path / "dummy"
    dummy.mkdir()
    for name in ("sample.fa", "dnabert.h5", "esm.h5", "features.h5", "sample.sequences.tsv", "classifier.pth",
                 "prediction_results.tsv", "sequence_summary.tsv"):
        (dummy / name).write_text("")
    for folder in ("model", "dnabert", "esm", "compile-cache"):
        (dummy / folder).mkdir()
    inputs = {"fasta": dummy / "sample.fa", "model": dummy / "model", "dnabert_model": dummy / "dnabert",
              "esm_model": dummy / "esm", "compile_cache": dummy / "compile-cache", "dnabert": dummy / "dnabert.h5",
              "esm": dummy / "esm.h5", "features": [str(dummy / "features.h5")],
              "sequences": dummy / "sample.sequences.tsv", "classifier": dummy / "classifier.pth",
              "predictions": dummy / "prediction_results.tsv", "summary": dummy / "sequence_summary.tsv"}
    for called, process in processes.items():
        needed = {name: inputs[name] for name, _ in process.path_inputs()}
        run_task(called, str(tmp_path / called), needed, stub=True,
                 **{"meta.id": "sample", "meta.shard": "sample.00001", "model_meta.model": "org/model",
                    "model_meta.revision": "main", "model_meta.commit": COMMIT, "model_meta.id": "k"})


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_extract_tasks_run_as_the_gpu_profile_configures_them(processes, embedded, test_models, tmp_path, precision):
    """GPU twin of the extraction tasks above: the device the `gpu` profile sets, one GPU per task;
    the embeddings match the CPU tasks' (cosine)."""
    import numpy as np

    gpu_params = params_block("params {" + blocks(profiles()["gpu"], r"\bparams")[0][1] + "}")
    shard, nucleotide, cpu_dnabert, cpu_esm, _ = embedded[0]
    protein = nucleotide.replace(".nucleotide.fa", ".protein.fa")
    for name, fasta, model, cpu_output in (("EXTRACT_DNABERT", nucleotide, test_models["dnabert"], cpu_dnabert),
                                           ("EXTRACT_ESM", protein, test_models["esm"], cpu_esm)):
        outputs = run_task(name, str(tmp_path / name), {"fasta": fasta, "model": model},
                           **{"params.device": gpu_params["device"], "params.precision": precision, "meta.shard": shard,
                              "task.accelerator": {"request": 1}, "task.accelerator.request": 1})
        gpu_output = h5_output(outputs)
        with h5py.File(gpu_output) as on_gpu, h5py.File(cpu_output) as on_cpu:
            a, b = on_gpu["embeddings"][:].astype(np.float64), on_cpu["embeddings"][:].astype(np.float64)
            assert on_gpu.attrs["precision"] == precision
        cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cosine.min() >= (0.9999 if precision == "fp32" else 0.99), (name, cosine)


def test_the_tools_answer_version_without_importing_torch():
    """Every task asks its tool `--version` (an eval output, or a stored version file): answered
    before the tool's module is imported, so no task pays for importing torch to report it."""
    tools = {command.split()[0] for process in called_processes().values()
             for _, kind, command in process.versions() if kind == "eval" and command.startswith("virnucpro-")}
    tools |= {tool for process in called_processes().values()  # the stored processes write theirs
              for tool in re.findall(r"(virnucpro-[\w-]+) --version", process.script)}
    assert len(tools) >= 8, tools
    for tool in sorted(tools):
        result = subprocess.run([sys.executable, "-X", "importtime", os.path.join(BIN, tool), "--version"],
                                capture_output=True, text=True, env=task_env())
        assert result.returncode == 0 and result.stdout == virnucpro.__version__ + "\n", (tool, result.stderr[-500:])
        imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
        assert not imported & {"torch", "transformers", "h5py", "numpy", "fire"}, (tool, imported & {"torch", "numpy"})
