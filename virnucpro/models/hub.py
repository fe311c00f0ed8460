"""Models from the Hugging Face hub or a local folder: the one hub-id rule, the one download path
(commit resolution, the files the extract tool loads and nothing else) and a model's revision.

Used by `virnucpro-fetch-model` (a snapshot into a folder, at a resolved commit) and by
`virnucpro-extract` (a hub id given as --model: the hub's own cache, offline from it when it holds the model).
"""

import fnmatch
import hashlib
import json
import os
import re

from ..errors import UserError
from ..names import MODEL_RECORD
from ..outputs import file_sha256, read_record

#: A hub id: `name` or `owner/name` of letters, digits, '-', '_', '.', starting with a letter or digit.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
#: Files every model needs (configs, tokenizer files), then the weights in order of preference.
COMMON_PATTERNS = ["*.json", "*.txt"]
WEIGHT_PATTERNS = (["*.safetensors"], ["pytorch_model*.bin"])
#: A folder of the hub's cache: `.../snapshots/<commit>`.
_SNAPSHOT = re.compile(r"/snapshots/([0-9a-f]{40})/?$")


def is_hub_id(model):
    """True when `model` has the form of a hub id (whether or not such a model exists)."""
    return bool(HUB_ID.fullmatch(str(model)))


def check_hub_id(model):
    """A one-line error unless `model` is a hub id (a local folder is named as such)."""
    if os.path.isdir(model):
        raise UserError(f"{model} is a local folder: nothing to fetch, pass the folder itself as the model "
                        f"(e.g. --dnabert_model {model} or --esm_model {model})")
    if not is_hub_id(model):
        raise UserError(f"{model}: neither a local folder nor a hub id such as facebook/esm2_t36_3B_UR50D")


def resolve(model, revision="main"):
    """(commit hash, file names) of the model at `revision`, from the hub; hub problems as UserErrors."""
    import huggingface_hub
    from huggingface_hub import errors

    try:
        info = huggingface_hub.model_info(model, revision=revision)
    except errors.OfflineModeIsEnabled:
        raise UserError(f"{model}: cannot download with HF_HUB_OFFLINE set; pass a local model folder instead") from None
    except errors.RevisionNotFoundError:
        raise UserError(f"{model}: no revision '{revision}' on the hub") from None
    except errors.GatedRepoError:
        raise UserError(f"{model}: gated on the hub; accept its terms and log in (hf auth login) first") from None
    except errors.RepositoryNotFoundError:
        raise UserError(f"{model}: no such model on the hub (or it is private; log in with hf auth login)") from None
    return info.sha, [sibling.rfilename for sibling in info.siblings or []]


def patterns_for(model, revision, files):
    """The allow-patterns to download: the common files and the first weight format the repo has."""
    for weights in WEIGHT_PATTERNS:
        if any(fnmatch.fnmatch(name, pattern) for name in files for pattern in weights):
            return COMMON_PATTERNS + weights
    raise UserError(f"{model}@{revision} has neither .safetensors nor pytorch_model*.bin weights")


def download(model, revision="main", local_dir=None, resolved=None):
    """(folder, commit) of `model` at `revision`: the configs, tokenizer files and one weight format.

    With `local_dir` (virnucpro-fetch-model): the revision is resolved to a commit on the hub first
    (or `resolved`, what `resolve` gave already) and everything is downloaded at that commit into
    `local_dir`. Without it (a hub id given to virnucpro-extract): the hub's cache, resolved there,
    and offline from the cache when it holds the model.
    """
    import huggingface_hub

    check_hub_id(model)
    if local_dir is not None:
        commit, files = resolved or resolve(model, revision)
        patterns = patterns_for(model, revision, files)
        huggingface_hub.snapshot_download(model, revision=commit, local_dir=local_dir, allow_patterns=patterns)
        return local_dir, commit
    try:
        for weights in WEIGHT_PATTERNS:  # no safetensors on the hub: take the pickle (read with weights_only)
            folder = huggingface_hub.snapshot_download(model, revision=revision, allow_patterns=COMMON_PATTERNS + weights)
            if any(fnmatch.fnmatch(name, pattern) for name in os.listdir(folder) for pattern in weights):
                break
        else:
            raise UserError(f"--model {model}: the hub (or its cache) gave no weight file "
                            f"({', '.join(p for ps in WEIGHT_PATTERNS for p in ps)})")
    except UserError:
        raise
    except Exception as err:  # network, offline mode without cache, unknown repository...
        raise UserError(f"--model {model}: no such model folder, and cannot get it from the Hugging Face hub "
                        f"or its cache: {err}") from None
    match = _SNAPSHOT.search(folder)
    return folder, match.group(1) if match else None


def model_folder(model):
    """(local folder, revision) for a hub id or a folder. A folder is used as it is, offline; a hub
    id is fetched (or found in the cache). The revision is the hub commit (of a cache folder, or
    recorded by virnucpro-fetch-model), else a SHA-256 of the weight files."""
    model = str(model)
    if os.path.isdir(model):
        folder, commit = os.path.abspath(model), None
    elif is_hub_id(model) and not os.path.exists(model):
        folder, commit = download(model, revision="main")
    else:
        raise UserError(f"--model {model}: no such model folder")
    if not commit:
        match = _SNAPSHOT.search(folder)
        commit = match.group(1) if match else None
    return folder, commit or fetched_commit(folder) or weights_digest(folder)


def fetched_commit(folder):
    """The hub commit recorded by virnucpro-fetch-model in the folder, if it made it (saves
    hashing 11 GB of ESM-2 weights in every extraction task)."""
    commit = (read_record(os.path.join(folder, MODEL_RECORD)) or {}).get("commit")
    return commit or None  # the same form as a hub cache folder's revision: the same weights, the same key


def weight_files(folder):
    """The checkpoint's weight files: safetensors preferred over `.bin`, shards via their index."""
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if os.path.isfile(os.path.join(folder, single)):
            return [os.path.join(folder, single)]
        index_path = os.path.join(folder, index)
        if os.path.isfile(index_path):
            with open(index_path) as handle:
                shards = sorted(set(json.load(handle)["weight_map"].values()))
            return [os.path.join(folder, shard) for shard in shards]
    raise UserError(f"{folder}: no weights (model.safetensors or pytorch_model.bin)")


_DIGESTS = {}


def weights_digest(folder):
    """'sha256:<hex>' over the weight files (cached per file size and mtime)."""
    combined = hashlib.sha256()
    for path in weight_files(folder):
        stat = os.stat(path)
        key = (path, stat.st_size, stat.st_mtime_ns)
        if key not in _DIGESTS:
            _DIGESTS[key] = file_sha256(path)
        combined.update(_DIGESTS[key].encode())
    return "sha256:" + combined.hexdigest()


def _cached_folder(model):
    """The hub cache's snapshot folder of `model` when it holds the configs and a weight file, else None
    (never the network)."""
    import huggingface_hub

    for weights in WEIGHT_PATTERNS:
        try:
            folder = huggingface_hub.snapshot_download(model, allow_patterns=COMMON_PATTERNS + weights,
                                                       local_files_only=True)
        except Exception:  # not cached (LocalEntryNotFoundError and the like)
            continue
        if any(fnmatch.fnmatch(name, pattern) for name in os.listdir(folder) for pattern in weights):
            return folder
    return None


def check_model(model, option):
    """Before any work: `model` (as given to `option`, e.g. --esm_model) is a model folder with its
    weights, or a hub id that the local cache holds or the hub has; else one line naming `option`.
    Returns the cached folder of a hub id, or None."""
    import huggingface_hub.constants

    model = str(model)
    if os.path.isdir(model):
        if not os.path.isfile(os.path.join(model, "config.json")):
            raise UserError(f"{option} {model}: not a model folder (no config.json)")
        try:
            weight_files(model)
        except UserError:
            raise UserError(f"{option} {model}: a model folder without weights "
                            "(model.safetensors or pytorch_model.bin)") from None
        return None
    if os.path.exists(model):
        raise UserError(f"{option} {model}: a file, not a model folder or a hub id")
    if not is_hub_id(model):
        raise UserError(f"{option} {model}: no such model folder (nor a hub id such as facebook/esm2_t36_3B_UR50D)")
    cached = _cached_folder(model)
    if cached:
        return cached
    fetch = (f"fetch it on a machine with network (virnucpro-fetch-model --model {model} --outdir DIR) "
             f"and pass {option} DIR")
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise UserError(f"{option} {model}: no such model folder, and not in the local Hugging Face cache "
                        f"(HF_HUB_OFFLINE is set, so nothing is downloaded); {fetch}")
    try:
        resolve(model)
    except UserError as err:
        raise UserError(f"{option} {model}: no such model folder, and the hub says: {str(err).split(': ', 1)[-1]}") from None
    except Exception as err:  # network down, proxy, DNS...
        raise UserError(f"{option} {model}: no such model folder, not in the local Hugging Face cache, and the hub "
                        f"cannot be reached ({type(err).__name__}); {fetch}") from None
    return None
