"""`virnucpro-predict`: the whole method in one resumable command.

Stages, each in its own folder under DIR, each output written atomically and skipped when it is
already complete, so a run killed at any moment continues where it stopped when re-run and gives
the same final files, and re-running a finished run does nothing:

    DIR/run.json                      settings of the run (a re-run must use the same ones)
    DIR/1_translate/<stem>.*          chunks' stop-free frames (virnucpro-translate)
    DIR/2_dnabert/<shard>.dnabert.h5  DNABERT-S embeddings (virnucpro-extract dnabert)
    DIR/3_esm/<shard>.esm.h5          ESM-2 embeddings (virnucpro-extract esm)
    DIR/4_merge/<shard>.features.h5   merged features (virnucpro-merge)
    DIR/prediction_results.tsv, DIR/prediction_results_highestscore.tsv, DIR/sequence_summary.tsv
    DIR/report.html                   self-contained report with plots
"""

import hashlib
import json
import logging
import os
import shutil
import sys
import time

from . import __version__
from .errors import UserError
from .fasta import check_readable, stem
from .outputs import atomic_paths

log = logging.getLogger(__name__)

STAGES = ("translate", "dnabert", "esm", "merge", "classify", "report")
FOLDERS = {"translate": "1_translate", "dnabert": "2_dnabert", "esm": "3_esm", "merge": "4_merge"}
RUN_FILE = "run.json"
TIMINGS_FILE = "timings.json"
#: Settings that decide the content of the outputs: a re-run into the same DIR must match them.
CONTENT_SETTINGS = ("input_name", "input_sha256", "chunk_size", "dnabert_model", "esm_model", "precision",
                    "classifier_sha256", "threshold", "shard_size", "virnucpro_version")


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _model_setting(model):
    """A local folder is recorded by its absolute path, a hub id as it is."""
    return os.path.abspath(model) if os.path.isdir(str(model)) else str(model)


def _write_json(path, data):
    with atomic_paths([path]) as (tmp,):
        with open(tmp, "w") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)


def _read_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _check_same_run(outdir, settings):
    """A DIR holds one run: refuse to mix outputs made with other settings."""
    previous = _read_json(os.path.join(outdir, RUN_FILE))
    if previous is None:
        return
    differs = [k for k in CONTENT_SETTINGS if previous.get(k) != settings.get(k)]
    if differs:
        detail = "; ".join(f"{k}: {previous.get(k)!r} before, {settings.get(k)!r} now" for k in differs)
        raise UserError(
            f"{outdir} holds a run made with other settings ({detail}); use another --outdir or --overwrite"
        )


def _clear(outdir):
    """--overwrite: remove what an earlier run wrote (only the files this tool makes)."""
    from .classify import HIGHESTSCORE, PREDICTIONS, SUMMARY

    for folder in FOLDERS.values():
        shutil.rmtree(os.path.join(outdir, folder), ignore_errors=True)
    for name in (PREDICTIONS, HIGHESTSCORE, SUMMARY, "report.html", RUN_FILE, TIMINGS_FILE):
        path = os.path.join(outdir, name)
        if os.path.exists(path):
            os.remove(path)


def _remove_leftover_temporaries(outdir):
    """A killed run leaves its temporary files (`.<name>.XXXX.tmp`, never a final name) behind;
    they are of no use to the re-run, which starts those outputs again."""
    removed = 0
    for folder in [outdir] + [os.path.join(outdir, name) for name in FOLDERS.values()]:
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            if name.startswith(".") and name.endswith(".tmp"):
                os.remove(os.path.join(folder, name))
                removed += 1
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run", removed)


def shard_name(nucleotide_fasta):
    """`x/8seq.00001.nucleotide.fa` -> `8seq.00001`: the name a shard's later files share."""
    name = os.path.basename(nucleotide_fasta)
    return name[: -len(".nucleotide.fa")] if name.endswith(".nucleotide.fa") else stem(name)


class _Stages:
    """Runs stages in order, logs progress, and keeps per-stage times across resumed runs."""

    def __init__(self, outdir):
        self.path = os.path.join(outdir, TIMINGS_FILE)
        self.times = _read_json(self.path) or {}
        self.ran = {}

    def run(self, number, stage, describe, work):
        log.info("[%d/%d] %s: %s", number, len(STAGES), stage, describe)
        start = time.perf_counter()
        did_work, result = work()
        seconds = time.perf_counter() - start
        if did_work:
            self.times[stage] = round(seconds, 3)
            _write_json(self.path, self.times)
            log.info("[%d/%d] %s: done in %.1f s", number, len(STAGES), stage, seconds)
        else:
            log.info("[%d/%d] %s: already complete, skipped", number, len(STAGES), stage)
        self.ran[stage] = did_work
        return result


def predict_run(
    input,
    outdir,
    chunk_size=500,
    classifier=None,
    dnabert_model=None,
    esm_model=None,
    device="auto",
    precision="fp32",
    workers=None,
    gpus=None,
    batch_tokens=None,
    shard_size=0,
    threshold=None,
    overwrite=False,
):
    """Run every stage for one FASTA file into `outdir`; returns a dict with paths, counts, times."""
    from .classify import DEFAULT_THRESHOLD, classify_features
    from .extract import DEFAULT_MODELS, extract_embeddings
    from .merge import merge_features
    from .translate import translate_fasta

    started = time.perf_counter()
    input, outdir = str(input), str(outdir)
    if classifier is None:
        raise UserError("--classifier is required (the published 300_model.pth or 500_model.pth, or a test model)")
    check_readable(input)
    if not os.path.isfile(str(classifier)):
        raise UserError(f"{classifier}: no such classifier file")
    from .classifier import load_classifier

    load_classifier(classifier)  # fail now, not after hours of embedding
    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    settings = {
        "input": os.path.abspath(input),
        "input_name": os.path.basename(input),
        "input_sha256": _sha256(input),
        "chunk_size": chunk_size,
        "shard_size": shard_size,
        "dnabert_model": _model_setting(dnabert_model or DEFAULT_MODELS["dnabert"]),
        "esm_model": _model_setting(esm_model or DEFAULT_MODELS["esm"]),
        "precision": precision,
        "classifier": os.path.abspath(str(classifier)),
        "classifier_sha256": _sha256(classifier),
        "threshold": threshold,
        "virnucpro_version": __version__,
    }
    if overwrite:
        _clear(outdir)
    os.makedirs(outdir, exist_ok=True)
    _check_same_run(outdir, settings)
    _remove_leftover_temporaries(outdir)
    run_path = os.path.join(outdir, RUN_FILE)
    if not os.path.exists(run_path):
        _write_json(run_path, settings)
    stages = _Stages(outdir)
    folder = {stage: os.path.join(outdir, name) for stage, name in FOLDERS.items()}

    def translate():
        manifest = os.path.join(folder["translate"], f"{stem(input)}.translate.json")
        before = os.path.exists(manifest)
        result = translate_fasta(input, folder["translate"], chunk_size=chunk_size, workers=workers, shard_size=shard_size)
        return not before, result

    translated = stages.run(1, "translate", f"{input} into {chunk_size} bp chunks, six frames", translate)
    shards = [shard_name(path) for path in translated["nucleotide"]]

    def extract(kind, fastas):
        def work():
            outputs, did = [], False
            os.makedirs(folder[kind], exist_ok=True)
            for shard, fasta in zip(shards, fastas):
                output = os.path.join(folder[kind], f"{shard}.{kind}.h5")
                if not os.path.exists(output):  # run.json guarantees an existing one is ours
                    extract_embeddings(
                        kind, fasta, output, model=settings[f"{kind}_model"], device=device, precision=precision,
                        batch_tokens=batch_tokens, gpus=gpus, workers=workers or 1,
                    )
                    did = True
                outputs.append(output)
            return did, outputs

        return work

    model_names = {kind: settings[f"{kind}_model"] for kind in ("dnabert", "esm")}
    dnabert = stages.run(2, "dnabert", f"DNABERT-S embeddings ({model_names['dnabert']})", extract("dnabert", translated["nucleotide"]))
    esm = stages.run(3, "esm", f"ESM-2 embeddings ({model_names['esm']})", extract("esm", translated["protein"]))

    def merge():
        outputs, did = [], False
        for shard, nucl, prot in zip(shards, dnabert, esm):
            output = os.path.join(folder["merge"], f"{shard}.features.h5")
            did |= not os.path.exists(output)
            outputs.append(merge_features(nucl, prot, output))
        return did, outputs

    features = stages.run(4, "merge", "join embeddings by frame id", merge)

    def classify():
        from .classify import HIGHESTSCORE, PREDICTIONS, SUMMARY

        done = all(os.path.exists(os.path.join(outdir, name)) for name in (PREDICTIONS, HIGHESTSCORE, SUMMARY))
        result = classify_features(features, classifier, outdir, sequences=translated["sequences"], threshold=threshold)
        return not done, result

    tables = stages.run(5, "classify", f"score frames with {os.path.basename(str(classifier))}", classify)

    from .report import read_results, write_report

    results = read_results(tables, threshold)
    report_path = os.path.join(outdir, "report.html")

    def report():
        if os.path.exists(report_path):
            return False, report_path
        return True, write_report(report_path, results, settings, stages.times, chunk_size)

    stages.run(6, "report", "report.html with plots", report)
    summary = dict(results.counts(), outdir=outdir, tables=tables, report=report_path, times=dict(stages.times),
                   ran=stages.ran, seconds=time.perf_counter() - started)
    return summary


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
        f"{c['verdicts'].get('unscored', 0)} unscored (sequence score >= {threshold} is virus)",
        f"  stage times {times}",
        "  outputs     prediction_results.tsv, prediction_results_highestscore.tsv, sequence_summary.tsv, report.html",
    ]
    return "\n".join(lines)


def predict(
    input,
    outdir,
    chunk_size=500,
    classifier=None,
    dnabert_model=None,
    esm_model=None,
    device="auto",
    precision="fp32",
    workers=None,
    gpus=None,
    batch_tokens=None,
    shard_size=0,
    threshold=None,
    overwrite=False,
    verbose=False,
):
    """Run the whole VirNucPro method on a FASTA file: translate, embed, merge, classify, report.

    Usage: virnucpro-predict --input FASTA --outdir DIR --chunk_size 300|500 --classifier PTH
             [--dnabert_model ID_OR_DIR] [--esm_model ID_OR_DIR]
      --classifier     the published 300_model.pth / 500_model.pth (match --chunk_size), a state
                       dict or safetensors; loaded without running pickled code
      --dnabert_model  hub id or local folder (default zhihan1996/DNABERT-S)
      --esm_model      hub id or local folder (default facebook/esm2_t36_3B_UR50D)
      --device         auto (a GPU if there is one), cpu, cuda or cuda:N; --gpus N for several
      --precision      fp32 (default), bf16 or fp16 (GPU)
      --workers        CPU processes for translation and CPU embedding
      --batch_tokens   padded tokens per embedding batch (default by model and device)
      --shard_size     frames per shard (0: one shard); a killed run resumes shard by shard
      --threshold      sequence verdict cut on its score (default 0.5)
      --overwrite      start again from scratch in DIR
    Writes DIR/prediction_results.tsv, DIR/prediction_results_highestscore.tsv,
    DIR/sequence_summary.tsv and DIR/report.html, with each stage's files in DIR/1_translate ...
    DIR/4_merge. Re-run the same command after an interruption: finished work is kept.
    """
    summary = predict_run(
        input, outdir, chunk_size=chunk_size, classifier=classifier, dnabert_model=dnabert_model,
        esm_model=esm_model, device=device, precision=precision, workers=workers, gpus=gpus,
        batch_tokens=batch_tokens, shard_size=shard_size, threshold=threshold, overwrite=overwrite,
    )
    from .classify import DEFAULT_THRESHOLD

    print(format_summary(summary, DEFAULT_THRESHOLD if threshold is None else threshold), file=sys.stderr)
