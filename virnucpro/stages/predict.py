"""`virnucpro-predict`: the whole method in one resumable command.

Stages, each in its own folder under DIR, each output written atomically and skipped when it is
already complete, so a run killed at any moment continues where it stopped when re-run and gives
the same final files, and re-running a finished run does nothing:

    DIR/run.json                      each completed stage's settings (written as stages complete)
    DIR/1_translate/<stem>.*          chunks' stop-free frames (virnucpro-translate)
    DIR/2_dnabert/<shard>.dnabert.h5  DNABERT-S embeddings (virnucpro-extract dnabert)
    DIR/3_esm/<shard>.esm.h5          ESM-2 embeddings (virnucpro-extract esm)
    DIR/4_merge/<shard>.features.h5   merged features (virnucpro-merge)
    DIR/prediction_results.tsv, DIR/prediction_results_highestscore.tsv, DIR/sequence_summary.tsv
                                      (virnucpro-classify; DIR/classify.json records their making)
    DIR/report.html                   self-contained report with plots (DIR/report.json likewise)

A rerun with settings that change a completed stage's outputs is refused before any work (use
another DIR or --overwrite), except `--threshold` and `--classifier`, which only classify and
report depend on: those two stages are made again and the embeddings kept. Only one run at a
time may use a DIR. Each model is loaded once per run, for all shards. --overwrite removes only
the files listed above (`names.predict_outputs`); anything else in DIR is left alone.
"""

import contextlib
import logging
import os
import sys
import time

from .. import __version__
from ..errors import UserError
from ..fasta import check_readable
from ..names import (HIGHESTSCORE, PREDICTIONS, REPORT, RUN_RECORD, STAGE_FOLDERS, STAGES, SUMMARY, TIMINGS,
                    embeddings_file, features_file, predict_outputs, shard_of)
from ..outputs import exclusive, file_sha256, read_record, remove_own_temps, write_record
from ..parallel import cap_workers
from ..results import DEFAULT_THRESHOLD, check_threshold

log = logging.getLogger(__name__)

#: The settings each stage's outputs depend on, besides those of the stages before it.
STAGE_SETTINGS = {
    "translate": ("input_name", "input_sha256", "chunk_size", "shard_size", "virnucpro_version"),
    "dnabert": ("dnabert_model", "precision"),
    "esm": ("esm_model",),
    "merge": (),
    "classify": ("classifier_sha256", "threshold"),
    "report": (),
}
#: Stages made again, not refused, when their settings change: cheap, and nothing before them depends on those.
REDONE_WHEN_CHANGED = ("classify", "report")


def _model_setting(model):
    """A local folder is recorded by its absolute path, a hub id as it is."""
    return os.path.abspath(model) if os.path.isdir(str(model)) else str(model)


def preflight(input, outdir, classifier, chunk_size, any_chunk_size, dnabert_model, esm_model, threshold):
    """Everything checked before stage 1, each problem one line naming the option as typed: the
    input FASTA readable, the classifier loadable with the features' input size (768 + 2560) and
    trained on --chunk_size (which it supplies when not given), each model a folder with weights or
    a hub id the cache or the hub has, the output folder writable, the threshold in [0, 1].
    Returns (chunk size, threshold, the names of the test models used)."""
    from ..models.classifier import load_classifier, match_trained_chunk_size
    from .classify import FEATURE_DIM
    from .extract import DEFAULT_MODELS
    from ..models.hub import check_model
    from ..outputs import check_writable_folder

    problems, test_models = [], []

    def check(step, *args):
        try:
            return step(*args)
        except UserError as err:
            problems.append(str(err))
        except OSError as err:
            problems.append(f"{err.filename or ''}: {err.strerror}".lstrip(": "))

    check(check_readable, input)
    model = check(load_classifier, classifier)
    if model is not None:
        if model.input_dim != FEATURE_DIM:
            problems.append(f"--classifier {classifier}: the classifier takes {model.input_dim} features, but VirNucPro "
                            f"features have {FEATURE_DIM} (768 DNABERT-S + 2560 ESM-2)")
        known = len(problems)
        chunk_size = check(match_trained_chunk_size, classifier, model, chunk_size, any_chunk_size)
        if model.virnucpro.get("test_model"):
            test_models.append("classifier")
        if chunk_size is None and len(problems) == known:
            problems.append("--chunk_size is required: 300 or 500, the chunk length the classifier was trained on "
                            "(neither its file name nor its contents say; the published files are 300_model.pth "
                            "and 500_model.pth)")
    for kind, option, given in (("dnabert", "--dnabert_model", dnabert_model), ("esm", "--esm_model", esm_model)):
        check(check_model, given or DEFAULT_MODELS[kind], option)
        if given and _is_test_model(given):
            test_models.append(kind)
    check(check_writable_folder, outdir)
    threshold = check(check_threshold, threshold)
    if problems:
        raise UserError("\n".join(problems))
    return chunk_size, threshold, test_models


def _is_test_model(folder):
    """True for a model folder of virnucpro-make-test-models (its record says so)."""
    from ..names import MODEL_RECORD

    return bool(os.path.isdir(str(folder)) and (read_record(os.path.join(str(folder), MODEL_RECORD)) or {}).get("test_model"))


def resolved_precision(precision, device, gpus, workers):
    """--precision as extract resolves it on the run's device (auto: bf16 on CUDA, fp32 on a CPU):
    the run records what the embeddings are really made with."""
    from ..engine.devices import plan

    return plan(device, gpus, workers or 1, precision).precision


def run_settings(input, chunk_size, classifier, dnabert_model, esm_model, precision, shard_size, threshold):
    """The run's settings (shown in the report; STAGE_SETTINGS says which stage depends on which)."""
    from .extract import DEFAULT_MODELS

    return {
        "input": os.path.abspath(input),
        "input_name": os.path.basename(input),
        "input_sha256": file_sha256(input),
        "chunk_size": chunk_size,
        "shard_size": shard_size,
        "dnabert_model": _model_setting(dnabert_model or DEFAULT_MODELS["dnabert"]),
        "esm_model": _model_setting(esm_model or DEFAULT_MODELS["esm"]),
        "precision": precision,
        "classifier": os.path.abspath(str(classifier)),
        "classifier_sha256": file_sha256(classifier),
        "threshold": threshold,
        "virnucpro_version": __version__,
    }


def clear(outdir, input):
    """--overwrite: remove what an earlier run wrote, file by file: only the names this tool writes,
    for this input and for the one run.json records (an earlier run of another input file)."""
    recorded = (read_record(os.path.join(outdir, RUN_RECORD)) or {}).get("stages", {}).get("translate", {})
    inputs = {input, recorded.get("input_name")} - {None}
    for path in sorted({path for name in inputs for path in predict_outputs(outdir, name)}):
        os.remove(path)


def _state(paths):
    """(path, size, mtime) of every output file at or under `paths`: what a stage's work would change
    (hidden files, the tools' locks and temporaries, are not outputs)."""
    found = []
    for path in paths:
        if os.path.isdir(path):
            found += [os.path.join(root, name) for root, _, names in os.walk(path) for name in names]
        else:
            found.append(path)
    state = []
    for path in sorted(found):
        with contextlib.suppress(FileNotFoundError):
            if not os.path.basename(path).startswith("."):
                state.append((path, os.stat(path).st_size, os.stat(path).st_mtime_ns))
    return state


class Stages:
    """The run's progress: logs and times each stage, and records a stage's settings in run.json
    once it is complete (so a failed run never blocks the corrected one). A stage is said to be
    skipped only when its outputs are what they were before it ran (so the log says what happened)."""

    def __init__(self, outdir, settings):
        self.path = os.path.join(outdir, RUN_RECORD)
        self.times_path = os.path.join(outdir, TIMINGS)
        self.recorded = (read_record(self.path) or {}).get("stages", {})
        self.times = read_record(self.times_path) or {}
        self.expected, keys = {}, []
        for stage in STAGES:
            keys += STAGE_SETTINGS[stage]
            self.expected[stage] = {key: settings[key] for key in keys}
        self.ran, self.started, self.watched, self.before = {}, None, [], []

    def check(self, outdir):
        """Refuse a change that affects completed early stages; say which later stages are redone."""
        for stage in STAGES:
            before, now = self.recorded.get(stage), self.expected[stage]
            if before is None or before == now:
                continue
            detail = "; ".join(f"{k}: {before.get(k)!r} before, {now[k]!r} now" for k in now if before.get(k) != now[k])
            if stage not in REDONE_WHEN_CHANGED:
                raise UserError(f"{outdir} holds a run made with other settings ({detail}); "
                                "use another --outdir, or --overwrite to start again from scratch")
            log.info("settings changed since the last run (%s): %s are made again, earlier stages kept",
                     detail, " and ".join(REDONE_WHEN_CHANGED))
            return

    def start(self, stage, describe, outputs):
        """`outputs`: the files or folders the stage writes (its work changes them)."""
        log.info("[%d/%d] %s: %s", STAGES.index(stage) + 1, len(STAGES), stage, describe)
        self.current = stage  # named if the stage runs out of memory (`_out_of_memory_names_the_stage`)
        self.watched, self.before = outputs, _state(outputs)
        self.started = time.perf_counter()

    def done(self, stage):
        number = f"[{STAGES.index(stage) + 1}/{len(STAGES)}] {stage}"
        seconds = time.perf_counter() - self.started
        self.ran[stage] = _state(self.watched) != self.before
        if self.recorded.get(stage) != self.expected[stage]:
            self.recorded[stage] = self.expected[stage]
            write_record(self.path, {"stages": self.recorded})
        if not self.ran[stage]:
            log.info("%s: already complete, skipped", number)
            return
        self.times[stage] = round(seconds, 3)
        write_record(self.times_path, self.times)
        log.info("%s: done in %.1f s", number, seconds)


def embed_shards(kind, fastas, shards, folder, model, device, precision, batch_tokens, gpus, workers):
    """Stages 2 and 3: one embeddings file per shard, with the model loaded once for all of them.
    An existing file is reused only when it was made the same way (Embedder.embed checks its
    recorded identity: model revision, precision, pooling, input digest); predict owns the folder,
    so one made otherwise (a run killed mid-stage, rerun with another model) is made again.
    The one place predict calls extract."""
    from .extract import Embedder

    outputs = [os.path.join(folder, embeddings_file(shard, kind)) for shard in shards]
    with Embedder(kind, model=model, device=device, precision=precision, batch_tokens=batch_tokens, gpus=gpus,
                  workers=workers or 1) as embedder:
        for fasta, output in zip(fastas, outputs):
            embedder.embed(fasta, output, redo=True)
    return outputs


def predict_run(
    input,
    outdir,
    chunk_size=None,
    classifier=None,
    dnabert_model=None,
    esm_model=None,
    device="auto",
    precision="auto",
    workers=None,
    gpus=None,
    batch_tokens=None,
    shard_size=0,
    threshold=None,
    overwrite=False,
    any_chunk_size=False,
):
    """Run every stage for one FASTA file into `outdir`; returns a dict with paths, counts, times.
    `chunk_size` None: the one the classifier records (else an error)."""
    from .classify import classify_features
    from .merge import merge_features
    from .report import make_report, read_results
    from .translate import translate_fasta

    started = time.perf_counter()
    input, outdir = str(input), str(outdir)
    if classifier is None:
        raise UserError("--classifier is required (the published 300_model.pth or 500_model.pth, or a test model)")
    chunk_size, threshold, test_models = preflight(input, outdir, classifier, chunk_size, any_chunk_size,
                                                   dnabert_model, esm_model, threshold)
    workers = cap_workers(workers) if workers else workers  # one warning here, none again in each stage
    precision = resolved_precision(precision, device, gpus, workers)
    settings = run_settings(input, chunk_size, classifier, dnabert_model, esm_model, precision, shard_size, threshold)
    settings["test_models"] = ", ".join(test_models) or "none"
    folder = {stage: os.path.join(outdir, name) for stage, name in STAGE_FOLDERS.items()}
    running = {}
    with exclusive(outdir, f"prediction folder {outdir}", folder=True), _out_of_memory_names_the_stage(running):
        if overwrite:
            clear(outdir, input)
        stages = running["stages"] = Stages(outdir, settings)
        stages.check(outdir)
        for name in (RUN_RECORD, TIMINGS):
            remove_own_temps(os.path.join(outdir, name))

        stages.start("translate", f"{input} into {chunk_size} bp chunks, six frames", [folder["translate"]])
        translated = translate_fasta(input, folder["translate"], chunk_size=chunk_size, workers=workers,
                                     shard_size=shard_size, redo=True, input_sha256=settings["input_sha256"])
        shards = [shard_of(path) for path in translated["nucleotide"]]
        stages.done("translate")

        stages.start("dnabert", f"DNABERT-S embeddings ({settings['dnabert_model']})", [folder["dnabert"]])
        dnabert = embed_shards("dnabert", translated["nucleotide"], shards, folder["dnabert"], settings["dnabert_model"],
                               device, precision, batch_tokens, gpus, workers)
        stages.done("dnabert")

        stages.start("esm", f"ESM-2 embeddings ({settings['esm_model']})", [folder["esm"]])
        esm = embed_shards("esm", translated["protein"], shards, folder["esm"], settings["esm_model"],
                           device, precision, batch_tokens, gpus, workers)
        stages.done("esm")

        stages.start("merge", "join embeddings by frame id", [folder["merge"]])
        features = [merge_features(nucleotide, protein, os.path.join(folder["merge"], features_file(shard)), redo=True)
                    for shard, nucleotide, protein in zip(shards, dnabert, esm)]
        stages.done("merge")

        stages.start("classify", f"score frames with {os.path.basename(str(classifier))}",
                     [os.path.join(outdir, name) for name in (PREDICTIONS, HIGHESTSCORE, SUMMARY)])
        tables = classify_features(features, classifier, outdir, sequences=translated["sequences"], threshold=threshold,
                                   chunk_size=chunk_size, redo=True)
        stages.done("classify")

        stages.start("report", "report.html with plots", [os.path.join(outdir, REPORT)])
        results = read_results(tables, threshold)
        times = {stage: f"{stages.times[stage]:.1f}" + ("" if stages.ran.get(stage) else " (an earlier run)")
                 for stage in STAGES[:-1] if stage in stages.times}
        report = make_report(tables["predictions"], tables["summary"], outdir, chunk_size=chunk_size, threshold=threshold,
                             settings=settings, times=times, results=results, redo=True, started=stages.started)
        stages.done("report")

    return dict(results.counts(), outdir=outdir, tables=tables, report=report, times=dict(stages.times),
                ran=stages.ran, seconds=time.perf_counter() - started)


@contextlib.contextmanager
def _out_of_memory_names_the_stage(running):
    """Out of memory (host or GPU) in a stage is one line naming the stage and what to lower."""
    from ..errors import is_out_of_memory, out_of_memory_line

    try:
        yield
    except (MemoryError, RuntimeError, OSError) as err:
        if not is_out_of_memory(err):
            raise
        raise UserError(out_of_memory_line(getattr(running.get("stages"), "current", None))) from None


def format_summary(summary, threshold):
    """The final one-screen summary."""
    c = summary
    times = " | ".join(f"{stage} {c['times'][stage]:.1f} s" + ("" if c["ran"].get(stage) else " (earlier run)")
                       for stage in STAGES if stage in c["times"])
    lines = [
        f"VirNucPro prediction finished in {c['seconds']:.1f} s: results in {c['outdir']}",
        f"  sequences   {c['sequences']} ({c['chunks']} chunks; {c['chunks_unscored']} without a stop-free frame get no score)",
        f"  frames      {c['frames']} scored; {c['frames_virus']} predicted virus",
        f"  chunks      {c['chunks_viral']} of {c['chunks_scored']} scored chunks called viral",
        f"  verdicts    {c['verdicts'].get('virus', 0)} virus, {c['verdicts'].get('others', 0)} others, "
        f"{c['verdicts'].get('unscored', 0)} unscored (virus: viral chunks >= {threshold} of a sequence's scored chunks)",
        f"  stage times {times}",
        f"  outputs     {PREDICTIONS}, {HIGHESTSCORE}, {SUMMARY}, {REPORT}",
    ]
    return "\n".join(lines)


def predict(
    input,
    outdir,
    classifier,
    chunk_size=None,
    dnabert_model=None,
    esm_model=None,
    device="auto",
    precision="auto",
    workers=None,
    gpus=None,
    batch_tokens=None,
    shard_size=0,
    threshold=None,
    any_chunk_size=False,
    overwrite=False,
    verbose=False,
):
    """Run the whole VirNucPro method on a FASTA file: translate, embed, merge, classify, report.

    Usage: virnucpro-predict --input FASTA --outdir DIR --classifier PTH --chunk_size 300|500
             --dnabert_model ID_OR_DIR --esm_model ID_OR_DIR
    Writes DIR/prediction_results.tsv, DIR/prediction_results_highestscore.tsv,
    DIR/sequence_summary.tsv and DIR/report.html, with each stage's files in DIR/1_translate ...
    DIR/4_merge. Every input is checked before the first stage. Re-run the same command after an
    interruption: finished work is kept. Another --threshold or --classifier redoes only classify
    and report; other changed settings are refused.

    Args:
      input: FASTA file of DNA (plain or .gz).
      outdir: output folder (created if needed).
      classifier: the published 300_model.pth / 500_model.pth, a state dict or safetensors; loaded without running pickled code.
      chunk_size: 300 or 500, the chunk length the classifier was trained on; may be left out when the classifier says it (its file name 300_model.pth / 500_model.pth, or its recorded metadata), and must agree with it.
      dnabert_model: hub id or local folder. Default: zhihan1996/DNABERT-S.
      esm_model: hub id or local folder. Default: facebook/esm2_t36_3B_UR50D.
      device: auto (a GPU if there is one), cpu, cuda or cuda:N; --gpus N for several.
      precision: auto, fp32, bf16 or fp16; auto = bf16 on a GPU, fp32 (exact) on a CPU (the resolved one is recorded).
      workers: CPU processes for translation and CPU embedding. Default: all CPUs available to this job.
      gpus: how many GPUs to embed on with --device cuda. Default: every visible one.
      batch_tokens: padded tokens per embedding batch. Default: by model and device.
      shard_size: frames per shard (0: one shard); a killed run resumes shard by shard.
      threshold: a sequence is called virus when at least this fraction of its scored chunks is viral. Default: 0.5.
      any_chunk_size: accept a --chunk_size other than 300 or 500, or other than the one the classifier says (for a classifier of your own).
      overwrite: start again from scratch in DIR (removes only the files this tool writes there).
      verbose: debug logging.
    """
    summary = predict_run(
        input, outdir, chunk_size=chunk_size, classifier=classifier, dnabert_model=dnabert_model,
        esm_model=esm_model, device=device, precision=precision, workers=workers, gpus=gpus,
        batch_tokens=batch_tokens, shard_size=shard_size, threshold=threshold, overwrite=overwrite,
        any_chunk_size=any_chunk_size,
    )
    print(format_summary(summary, DEFAULT_THRESHOLD if threshold is None else threshold), file=sys.stderr)
