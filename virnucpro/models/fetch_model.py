"""`virnucpro-fetch-model`: snapshot a model from the Hugging Face hub into a folder, once.

The pipeline's FETCH_MODEL process runs it into its permanent store, so cluster and cloud nodes
read the model from there instead of each downloading it (ESM-2 3B is 11 GB). Only what the
extract tool loads is fetched: configs, tokenizer files and one weight format (safetensors,
else PyTorch .bin). The revision is resolved to a commit first and everything is downloaded at
that commit, which is recorded in DIR/virnucpro_model.json. The download goes into a hidden
folder beside DIR that is renamed to DIR when complete, so DIR is never partial; a killed
download of the same model and commit continues from that folder when re-run (one of another is
discarded, never mixed in).
"""

import json
import logging
import os
import shutil

from .. import __version__
from ..errors import UserError
from . import hub
from ..names import MODEL_RECORD as RECORD
from ..outputs import read_record

log = logging.getLogger(__name__)

#: In the partial folder while a download runs: the model@commit it is fetching.
_FETCHING = ".virnucpro_fetching"


def partial_folder(outdir):
    """Where a download into `outdir` is assembled (same parent, so the final rename is atomic)."""
    parent, name = os.path.split(os.path.abspath(outdir))
    return os.path.join(parent, f".{name}.partial")


def _start_partial(outdir, what):
    """The partial folder for fetching `what` (model@commit): an interrupted download of the same
    is continued, one of another model or commit is discarded (its files must not be mixed in)."""
    partial = partial_folder(outdir)
    marker = os.path.join(partial, _FETCHING)
    try:
        with open(marker) as handle:
            previous = handle.read()
    except OSError:
        previous = None
    if previous != what and os.path.exists(partial):
        log.info("discarding %s: an unfinished download of %s", partial, previous or "something else")
        shutil.rmtree(partial)
    os.makedirs(partial, exist_ok=True)
    with open(marker, "w") as handle:
        handle.write(what)
    return partial


def fetch_model_snapshot(model, outdir, revision="main", overwrite=False):
    """Download `model` at `revision` into `outdir` (skipped when already there); returns its record."""
    model, outdir, revision = str(model), str(outdir), str(revision)
    hub.check_hub_id(model)
    record = read_record(os.path.join(outdir, RECORD))
    if record is not None and not overwrite:
        if record.get("model") == model and revision in (record.get("revision"), record.get("commit")):
            log.info("%s@%s already in %s (commit %s), skipping (use --overwrite to fetch again)",
                     model, revision, outdir, record.get("commit"))
            return record
        raise UserError(f"{outdir} holds {record.get('model')}@{record.get('revision')}, not {model}@{revision}; "
                        "use another --outdir or --overwrite")
    if record is None and os.path.exists(outdir) and not overwrite:
        raise UserError(f"{outdir} exists and is not a finished virnucpro-fetch-model download; "
                        "remove it or pass --overwrite")

    commit, files = hub.resolve(model, revision)
    hub.patterns_for(model, revision, files)  # no weights: one line before any folder is made
    partial = _start_partial(outdir, f"{model}@{commit}")
    log.info("fetching %s@%s (commit %s) into %s", model, revision, commit, outdir)
    hub.download(model, revision, local_dir=partial, resolved=(commit, files))
    shutil.rmtree(os.path.join(partial, ".cache"), ignore_errors=True)  # the hub's resume metadata
    os.remove(os.path.join(partial, _FETCHING))
    fetched = sorted(os.path.relpath(os.path.join(root, name), partial)
                     for root, _, names in os.walk(partial) for name in names)
    fetched = [name for name in fetched if name != RECORD]  # a repo's own file of that name is replaced below
    record = dict(model=model, revision=revision, commit=commit, files=fetched, virnucpro_version=__version__)
    with open(os.path.join(partial, RECORD), "w") as handle:
        json.dump(record, handle, indent=1, sort_keys=True)
    if os.path.exists(outdir):  # --overwrite: the old folder goes only once the new one is complete
        shutil.rmtree(outdir)
    os.replace(partial, outdir)
    log.info("%s@%s: %d files in %s", model, revision, len(fetched), outdir)
    return record


def fetch_model(model, outdir=None, revision="main", overwrite=False, resolve=False, verbose=False):
    """Snapshot a Hugging Face hub model into DIR once (what virnucpro-extract loads, nothing else).

    Usage: virnucpro-fetch-model --model HUB_ID --outdir DIR [--revision REV] [--overwrite]
           virnucpro-fetch-model --model HUB_ID --resolve [--revision REV]
    Writes the configs, tokenizer files and one weight format (safetensors, else pytorch_model*.bin)
    into DIR, and DIR/virnucpro_model.json with the model, revision and commit. DIR appears only
    when complete; a DIR already holding this model and revision is kept.

    Args:
      model: hub id, e.g. zhihan1996/DNABERT-S or facebook/esm2_t36_3B_UR50D (a local folder needs no fetching: give it to virnucpro-extract / the pipeline directly).
      outdir: folder to write the snapshot to (required unless --resolve).
      revision: branch, tag or commit; resolved to a commit before downloading.
      overwrite: fetch again even if DIR already holds this model and revision.
      resolve: only print the commit REV resolves to, download nothing (the pipeline keys its store by that commit before fetching).
      verbose: debug logging.
    """
    if resolve:
        hub.check_hub_id(str(model))
        print(hub.resolve(str(model), str(revision))[0])
        return
    if outdir is None:
        raise UserError("--outdir is required (or --resolve to print the commit only)")
    fetch_model_snapshot(model, outdir, revision=revision, overwrite=overwrite)
