"""Merge stage (SPEC 1.5): features = nucleotide embedding followed by protein embedding, per id.

Rows follow the nucleotide file's order. Unlike the original (which silently misaligned rows when
an id was missing from one side), an id present in only one input is an error naming it, unless
`skip_missing` is set. Inputs are HDF5 embedding files (SPEC 2) or the original tool's `.pt`
files; torch is only imported when a `.pt` file is read. HDF5 inputs are processed in row blocks,
so memory stays bounded whatever the shard size.
"""

import logging
import os

import numpy as np

from .. import __version__
from ..errors import UserError
from ..names import EMBEDDING_EXTENSIONS, MADE_FROM, as_path_list, features_file, shard_key
from ..outputs import atomic_paths, input_identity, make_once
from ..parallel import ordered_map, plan_pool
from ..pt_io import is_hdf5, read_pt_embeddings

log = logging.getLogger(__name__)

#: Rows per block: about 55 MB of output features per block at 3328 columns.
BLOCK_ROWS = 4096
#: Shards with at least this many rows get a progress bar.
PROGRESS_ROWS = 200_000
_EXPECTED_KIND = {"nucleotide": "dnabert", "protein": "esm"}


class EmbeddingInput:
    """One side of a merge: ids, width and row access, from HDF5 (read lazily) or `.pt` (in memory)."""

    def __init__(self, path, side):
        self.path = str(path)
        self.side = side
        self._h5 = None
        if is_hdf5(self.path):
            self._open_h5()
        else:
            kind, self.ids, self._matrix = read_pt_embeddings(self.path)
            self.kind = kind
            self.dim = 0 if self._matrix is None else self._matrix.shape[1]
            self.attrs = {"model": "original VirNucPro .pt", "kind": kind}
        expected = _EXPECTED_KIND[side]
        if self.kind and self.kind != expected:
            raise UserError(
                f"{self.path}: holds {self.kind} embeddings but was given as --{side} "
                f"(expected {expected}; are --nucleotide and --protein swapped?)"
            )

    def _open_h5(self):
        import h5py

        from ..embeddings_h5 import decode_ids, text_attrs

        try:
            self._h5 = h5py.File(self.path, "r")
            ids = self._h5["ids"]
            self._rows = self._h5["embeddings"]
        except KeyError as err:
            raise UserError(f"{self.path}: not an embeddings HDF5 file (missing dataset {err})") from None
        except OSError as err:
            raise UserError(f"{self.path}: cannot read HDF5 ({err})") from None
        if self._rows.ndim != 2 or self._rows.shape[0] != ids.shape[0]:
            raise UserError(f"{self.path}: {ids.shape[0]} ids but embeddings of shape {self._rows.shape}")
        self.ids = decode_ids(ids[()])
        self.dim = int(self._rows.shape[1])
        self.attrs = text_attrs(self._h5.attrs)
        self.kind = self.attrs.get("kind")

    def read_into(self, indices, out, columns):
        """Copy the rows at `indices` (any order) into `out[:, columns]` (float32)."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) == 0:
            return
        if self._h5 is None:
            out[:, columns] = self._matrix[indices]
            return
        low, high = int(indices.min()), int(indices.max()) + 1
        if high - low == len(indices) and np.all(np.diff(indices) == 1):
            # The usual case (both files in translate order): straight from disk into place.
            self._rows.read_direct(out, np.s_[low:high], np.s_[:, columns])
        elif high - low <= 4 * len(indices) + 1024:
            # Nearly contiguous: one slice read, reordered in memory.
            out[:, columns] = self._rows[low:high][indices - low]
        else:
            order = np.unique(indices)  # h5py wants increasing, unique indices
            out[:, columns] = self._rows[order][np.searchsorted(order, indices)]

    def close(self):
        if self._h5 is not None:
            self._h5.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _index_of(inp):
    """id -> row; duplicate ids make the join ambiguous, so they are an error."""
    index = {}
    for row, record_id in enumerate(inp.ids):
        if record_id in index:
            raise UserError(f"{inp.path}: duplicate id '{record_id}' (rows {index[record_id] + 1} and {row + 1})")
        index[record_id] = row
    return index


def _name_some(ids, limit=5):
    shown = ", ".join(f"'{i}'" for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def _join(nucl, prot, skip_missing):
    """Return (nucleotide rows, protein rows) to merge, in nucleotide order."""
    nucl_index = _index_of(nucl)
    prot_index = _index_of(prot)
    only_nucl = [i for i in nucl.ids if i not in prot_index]
    only_prot = [i for i in prot.ids if i not in nucl_index]
    problems = []
    if only_nucl:
        problems.append(f"{len(only_nucl)} id(s) only in {nucl.path}: {_name_some(only_nucl)}")
    if only_prot:
        problems.append(f"{len(only_prot)} id(s) only in {prot.path}: {_name_some(only_prot)}")
    if problems and not skip_missing:
        raise UserError("ids differ between the inputs: " + "; ".join(problems) + " (use --skip_missing to drop them)")
    for problem in problems:
        log.warning("skipping %s", problem)
    nucl_rows = np.array([r for r, i in enumerate(nucl.ids) if i in prot_index], dtype=np.int64)
    prot_rows = np.array([prot_index[nucl.ids[r]] for r in nucl_rows], dtype=np.int64)
    return nucl_rows, prot_rows


def _progress(n_rows, name):
    """A progress bar for large shards only (tqdm's import is not free at thousands of small ones)."""
    if n_rows < PROGRESS_ROWS:
        return None
    from tqdm import tqdm

    return tqdm(total=n_rows, unit="row", desc=f"merge {name}", mininterval=1.0)


def merge_record(nucleotide, protein, skip_missing):
    """What a features file is made from: each input's identity (the identity attributes extract
    records, or the bytes' SHA-256 for other files) and the skip_missing setting."""
    from ..embeddings_h5 import CONTENT_DIGEST, IDENTITY_ATTRS

    identity = IDENTITY_ATTRS + (CONTENT_DIGEST,)  # an input remade with other content is another input
    return {"nucleotide": input_identity(nucleotide, identity),
            "protein": input_identity(protein, identity), "skip_missing": bool(skip_missing)}


def recorded_merge(path):
    """The `merge_record` a features file carries, or None (missing, unreadable or not recorded)."""
    import json

    from ..embeddings_h5 import root_attrs

    try:
        return json.loads((root_attrs(path) or {})[MADE_FROM])
    except (KeyError, ValueError, TypeError):
        return None


def merge_features(nucleotide, protein, output, skip_missing=False, overwrite=False, block_rows=BLOCK_ROWS,
                   redo=False):
    """Merge one nucleotide/protein embedding pair into a features HDF5 file; returns its path.

    The output records what it was made from (`merge_record`). A complete output made from the
    same inputs is skipped; one made from other inputs is refused (one line) unless `overwrite`,
    or made again with `redo` (for a caller that owns the folder). One run at a time per output.
    """
    from ..embeddings_h5 import content_matches

    output = str(output)
    record = merge_record(nucleotide, protein, skip_missing)
    return make_once([output], record, lambda: _merge(nucleotide, protein, output, skip_missing, block_rows, record),
                     what="merged features", lock=output, lock_what=f"merged features {output}",
                     recorded=lambda _: recorded_merge(output),
                     changed=lambda _, paths: [] if content_matches(output, "features") else [os.path.basename(output)],
                     kept=lambda _: output, overwrite=overwrite, redo=redo)


def _merge(nucleotide, protein, output, skip_missing, block_rows, record):
    import json

    import h5py

    from ..embeddings_h5 import CONTENT_DIGEST, ContentDigest

    with EmbeddingInput(nucleotide, "nucleotide") as nucl, EmbeddingInput(protein, "protein") as prot:
        nucl_rows, prot_rows = _join(nucl, prot, skip_missing)
        n_rows = len(nucl_rows)
        width = nucl.dim + prot.dim
        with atomic_paths([output]) as (tmp,):
            with h5py.File(tmp, "w") as out:
                ids = [nucl.ids[r] for r in nucl_rows]
                digest = ContentDigest(ids)
                out.create_dataset("ids", data=ids, dtype=h5py.string_dtype("utf-8"), shape=(n_rows,))
                features = out.create_dataset("features", shape=(n_rows, width), dtype=np.float32)
                progress = _progress(n_rows, os.path.basename(output))
                for start in range(0, n_rows, block_rows):
                    stop = min(start + block_rows, n_rows)
                    block = np.empty((stop - start, width), np.float32)
                    nucl.read_into(nucl_rows[start:stop], block, slice(0, nucl.dim))
                    prot.read_into(prot_rows[start:stop], block, slice(nucl.dim, width))
                    _check_finite(block, nucl.ids, nucl_rows[start:stop], nucl.path, prot.path)
                    features.write_direct(block, dest_sel=np.s_[start:stop])
                    digest.update(start, block)
                    if progress is not None:
                        progress.update(stop - start)
                if progress is not None:
                    progress.close()
                out.attrs["nucleotide_dim"] = nucl.dim
                out.attrs["protein_dim"] = prot.dim
                out.attrs["kind"] = "features"
                out.attrs["virnucpro_version"] = __version__
                out.attrs[MADE_FROM] = json.dumps(record, sort_keys=True)
                out.attrs[CONTENT_DIGEST] = digest.hexdigest(n_rows)
                for side, inp in (("nucleotide", nucl), ("protein", prot)):
                    out.attrs[f"{side}_source"] = os.path.basename(inp.path)
                    for key in ("model", "model_revision", "precision", "pooling"):
                        if key in inp.attrs:
                            out.attrs[f"{side}_{key}"] = str(inp.attrs[key])
    log.info("merged %d rows (%d + %d columns) into %s", n_rows, nucl.dim, prot.dim, output)
    return output


def _check_finite(block, ids, rows, *paths):
    """NaN or infinite embeddings would become features that get a verdict anyway: refuse them."""
    bad = ~np.isfinite(block).all(axis=1)
    if bad.any():
        named = [ids[r] for r, b in zip(rows, bad) if b]
        raise UserError(f"non-finite (NaN or infinite) embeddings for {len(named)} frame(s) in this block: "
                        f"{_name_some(named)} (inputs {' and '.join(paths)})")


# ---- many pairs ------------------------------------------------------------------------------


def _expand(paths, option):
    files = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(
                os.path.join(path, name)
                for name in os.listdir(path)
                if name.endswith(EMBEDDING_EXTENSIONS) and not name.startswith(".")
            )
            if not found:
                raise UserError(f"{path}: no {'/'.join(EMBEDDING_EXTENSIONS)} files in this folder (--{option})")
            files.extend(found)
        elif os.path.exists(path):
            files.append(path)
        else:
            raise UserError(f"{path}: no such file or folder (--{option})")
    return files


def pair_inputs(nucleotide, protein):
    """Pair nucleotide and protein files (lists, comma lists or folders) by shard key: [(key, n, p)]."""
    sides = {}
    for option, value in (("nucleotide", nucleotide), ("protein", protein)):
        files = _expand(as_path_list(value), option)
        if not files:
            raise UserError(f"--{option}: no input files given")
        by_key = {}
        for path in files:
            key = shard_key(path)
            if key in by_key:
                raise UserError(f"--{option}: {by_key[key]} and {path} are the same shard '{key}'")
            by_key[key] = path
        sides[option] = by_key
    unpaired = sorted(set(sides["nucleotide"]) ^ set(sides["protein"]))
    if unpaired:
        raise UserError(f"cannot pair by shard name: no partner for {_name_some(unpaired)}")
    return [(key, sides["nucleotide"][key], sides["protein"][key]) for key in sides["nucleotide"]]


def _merge_batch(task):
    """Pool worker: merge a batch of pairs; a failing pair is reported, not raised, so others finish."""
    pairs, skip_missing, overwrite = task  # its logging is set up like the parent's (`parallel.start_pool`)
    results = []
    for key, nucl, prot, output in pairs:
        try:
            merge_features(nucl, prot, output, skip_missing=skip_missing, overwrite=overwrite)
            results.append((key, output, None))
        except UserError as err:
            results.append((key, output, str(err)))
        except Exception as err:  # an unexpected failure in one pair must not stop the others
            results.append((key, output, f"{type(err).__name__}: {err}"))
    return results


def merge_pairs(nucleotide, protein, outdir, workers=None, skip_missing=False, overwrite=False, batch_size=None):
    """Merge many pairs into `outdir/<shard>.features.h5` with a spawn pool; returns the outputs.

    One pair per task by default; for hundreds of pairs, batches so that each worker gets a few
    dozen tasks (per-task overhead is a process round trip). Raises UserError naming every pair
    that failed, after all others have finished.
    """
    from tqdm import tqdm

    pairs = [(k, n, p, os.path.join(str(outdir), features_file(k))) for k, n, p in pair_inputs(nucleotide, protein)]
    os.makedirs(str(outdir), exist_ok=True)
    workers, _ = plan_pool(len(pairs), workers)
    if batch_size is None:
        batch_size = 1 if len(pairs) < 100 else max(1, len(pairs) // (workers * 16))
    tasks = [(pairs[i : i + batch_size], skip_missing, overwrite) for i in range(0, len(pairs), batch_size)]
    workers, chunksize = plan_pool(len(tasks), workers)
    log.info("merging %d pair(s) with %d worker(s), %d pair(s) per task", len(pairs), workers, batch_size)
    outputs, failures = [], []
    with tqdm(total=len(pairs), desc="merge", unit="pair", disable=len(pairs) < 2) as bar:
        for results in ordered_map(_merge_batch, tasks, workers, chunksize):
            for key, output, error in results:
                if error is None:
                    outputs.append(output)
                else:
                    failures.append(key)
                    log.error("pair '%s' failed: %s", key, error)
                bar.update(1)
    if failures:
        raise UserError(f"{len(failures)} of {len(pairs)} pair(s) failed: {_name_some(failures)}")
    return outputs


def merge(
    nucleotide,
    protein,
    output=None,
    outdir=None,
    workers=None,
    skip_missing=False,
    overwrite=False,
    verbose=False,
):
    """Join nucleotide (DNABERT-S) and protein (ESM-2) embeddings by id into features HDF5.

    One pair: --nucleotide H5_OR_PT --protein H5_OR_PT --output H5.
    Many pairs: --nucleotide and --protein each a folder or a comma-separated list, paired by
    shard name (side words such as nucleotide/dnabert/protein/esm removed), --outdir DIR
    [--workers N]; writes DIR/<shard>.features.h5.
    Ids in only one input are an error naming them; --skip_missing drops them with a warning.
    An output records what it was made from: a rerun skips one made from the same inputs and
    refuses (one line) to replace one made from others unless --overwrite.

    Args:
      nucleotide: DNABERT-S embeddings (HDF5 or the original's .pt); many pairs: a folder or a comma-separated list.
      protein: ESM-2 embeddings of the same frames (HDF5 or .pt); many pairs: as --nucleotide.
      output: the features HDF5 to write (one pair).
      outdir: the folder for DIR/<shard>.features.h5 (many pairs).
      workers: processes for many pairs (default: all CPUs available to this job).
      skip_missing: drop ids found in only one input, with a warning, instead of stopping.
      overwrite: redo even if a complete output exists.
      verbose: debug logging.
    """
    if (output is None) == (outdir is None):
        raise UserError("give exactly one of --output (one pair) or --outdir (many pairs)")
    if output is not None:
        nucl, prot = as_path_list(nucleotide), as_path_list(protein)
        if len(nucl) != 1 or len(prot) != 1 or os.path.isdir(nucl[0]) or os.path.isdir(prot[0]):
            raise UserError("--output takes one --nucleotide file and one --protein file; use --outdir for many")
        merge_features(nucl[0], prot[0], output, skip_missing=skip_missing, overwrite=overwrite)
    else:
        merge_pairs(nucleotide, protein, outdir, workers=workers, skip_missing=skip_missing, overwrite=overwrite)
