"""A stand-in for the Hugging Face hub, so tests of virnucpro-fetch-model never reach the network.

`FakeHub(repos)` serves local folders as hub models: `model_info` (revision -> commit, file list)
and `snapshot_download` (copies the files matching `allow_patterns` into `local_dir`, with the
hub's `.cache/` resume metadata beside them, as the real one does). `install(hub)` puts both on
`huggingface_hub`. For a tool run in a subprocess, `fake_hub_site/sitecustomize.py` installs a
hub described by the JSON file named in $VIRNUCPRO_FAKE_HUB (see `write_hub_file`).
"""

import fnmatch
import json
import os
import shutil
from types import SimpleNamespace

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SITE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_hub_site")


def _not_found(kind, message):
    from huggingface_hub import errors

    response = SimpleNamespace(headers={}, status_code=404, request=None)
    return getattr(errors, kind)(message, response=response)


class FakeHub:
    """repos: {repo_id: {"folder": path, "revisions": {"main": commit}}}; every call is logged in `calls`."""

    def __init__(self, repos, fail_after=None):
        self.repos = repos
        self.calls = []
        self.fail_after = fail_after  # copy this many files, then fail as a dropped connection would

    def _repo(self, repo_id):
        if repo_id not in self.repos:
            raise _not_found("RepositoryNotFoundError", f"404: {repo_id}")
        return self.repos[repo_id]

    def _commit(self, repo, revision):
        revisions = repo["revisions"]
        if revision in revisions.values():
            return revision
        if revision not in revisions:
            raise _not_found("RevisionNotFoundError", f"404: revision {revision}")
        return revisions[revision]

    def _files(self, repo):
        folder = repo["folder"]
        return sorted(os.path.relpath(os.path.join(root, name), folder)
                      for root, _, names in os.walk(folder) for name in names)

    def model_info(self, repo_id, revision=None, **kwargs):
        self.calls.append(("model_info", repo_id, revision))
        repo = self._repo(repo_id)
        commit = self._commit(repo, revision or "main")
        return SimpleNamespace(id=repo_id, sha=commit, siblings=[SimpleNamespace(rfilename=f) for f in self._files(repo)])

    def snapshot_download(self, repo_id, revision=None, local_dir=None, allow_patterns=None, **kwargs):
        self.calls.append(("snapshot_download", repo_id, revision, local_dir, tuple(allow_patterns or ())))
        assert local_dir, "the fake hub only serves local_dir downloads"
        repo = self._repo(repo_id)
        commit = self._commit(repo, revision or "main")
        wanted = [f for f in self._files(repo) if allow_patterns is None
                  or any(fnmatch.fnmatch(f, p) for p in allow_patterns)]
        for number, name in enumerate(wanted):
            if self.fail_after is not None and number == self.fail_after:
                raise ConnectionError("fake hub: connection dropped")
            target = os.path.join(local_dir, name)
            if os.path.exists(target):  # the real hub resumes too: complete files are kept
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(os.path.join(repo["folder"], name), target)
            metadata = os.path.join(local_dir, ".cache", "huggingface", "download", name + ".metadata")
            os.makedirs(os.path.dirname(metadata), exist_ok=True)
            with open(metadata, "w") as handle:
                handle.write(f"{commit}\netag\n0\n")
        return local_dir


def install(hub, setattr_=setattr):
    """Replace the hub calls of huggingface_hub with `hub`'s (pass monkeypatch.setattr to undo them)."""
    import huggingface_hub

    setattr_(huggingface_hub, "model_info", hub.model_info)
    setattr_(huggingface_hub, "snapshot_download", hub.snapshot_download)


def write_hub_file(path, repos):
    """A JSON description of a fake hub for a subprocess, and the environment that installs it."""
    with open(path, "w") as handle:
        json.dump(repos, handle)
    pythonpath = os.pathsep.join(filter(None, [SITE, os.path.dirname(SITE), os.environ.get("PYTHONPATH")]))
    return {"VIRNUCPRO_FAKE_HUB": str(path), "PYTHONPATH": pythonpath}


