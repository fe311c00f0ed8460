"""virnucpro-merge: the original's merge reproduced exactly, id checks, row blocks, many pairs."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from helpers import DATA, REPO, files_in, run_tool, write_embeddings, write_pickle_bomb
from virnucpro.errors import UserError
from virnucpro.stages.merge import merge_features, merge_pairs, pair_inputs, shard_key

VANILLA = os.path.join(DATA, "vanilla")


def read_features(path):
    with h5py.File(path, "r") as f:
        return list(f["ids"].asstr()[()]), f["features"][()], dict(f.attrs)


def make_pair(folder, n, name="s", nucl_dim=6, prot_dim=4, shuffle_protein=True, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"{name}_contig{i}_chunk_{i % 7 + 1}F{i % 3 + 1}" for i in range(n)]
    nucl = rng.standard_normal((n, nucl_dim)).astype(np.float32)
    prot = rng.standard_normal((n, prot_dim)).astype(np.float32)
    order = rng.permutation(n) if shuffle_protein else np.arange(n)
    n_path = write_embeddings(os.path.join(folder, f"{name}.nucleotide.dnabert.h5"), ids, nucl, "dnabert")
    p_path = write_embeddings(os.path.join(folder, f"{name}.protein.esm.h5"), [ids[i] for i in order], prot[order], "esm")
    return n_path, p_path, ids, np.concatenate([nucl, prot], axis=1)


def test_merge_of_original_pt_files_reproduces_original_merged_file(tmp_path):
    torch = pytest.importorskip("torch")
    out = merge_features(
        os.path.join(VANILLA, "with_orfs_DNABERT_S.pt"), os.path.join(VANILLA, "with_orfs_ESM.pt"), tmp_path / "m.h5"
    )
    expected = torch.load(os.path.join(VANILLA, "with_orfs_merged.pt"), weights_only=True)
    ids, features, attrs = read_features(out)
    assert ids == expected["ids"]
    assert features.dtype == np.float32
    assert np.array_equal(features, expected["data"].numpy())
    assert (attrs["nucleotide_dim"], attrs["protein_dim"]) == (768, 2560)


@pytest.mark.parametrize("n, block_rows", [(50, 7), (3000, 16), (10, 4096)])
def test_h5_merge_follows_nucleotide_order_in_blocks(tmp_path, n, block_rows):
    n_path, p_path, ids, expected = make_pair(tmp_path, n)
    out = merge_features(n_path, p_path, tmp_path / "out.h5", block_rows=block_rows)
    got_ids, features, attrs = read_features(out)
    assert got_ids == ids
    assert np.array_equal(features, expected)
    assert (attrs["nucleotide_dim"], attrs["protein_dim"]) == (6, 4)
    assert attrs["nucleotide_model"] == "test-dnabert" and attrs["protein_model"] == "test-esm"


def test_mixed_pt_and_h5_inputs(tmp_path):
    torch = pytest.importorskip("torch")
    dna = torch.load(os.path.join(VANILLA, "with_orfs_DNABERT_S.pt"), weights_only=True)
    esm = torch.load(os.path.join(VANILLA, "with_orfs_ESM.pt"), weights_only=True)
    p_path = write_embeddings(tmp_path / "p.h5", esm["proteins"], torch.stack(esm["data"]).numpy(), "esm")
    out = merge_features(os.path.join(VANILLA, "with_orfs_DNABERT_S.pt"), p_path, tmp_path / "m.h5")
    expected = torch.load(os.path.join(VANILLA, "with_orfs_merged.pt"), weights_only=True)
    ids, features, _ = read_features(out)
    assert ids == dna["nucleotide"] and np.array_equal(features, expected["data"].numpy())


def test_ids_in_only_one_input_are_an_error_naming_them(tmp_path):
    n_path, _, ids, expected = make_pair(tmp_path, 20)
    prot = expected[:, 6:]
    keep = [i for i in range(20) if i not in (3, 11)]
    p_path = write_embeddings(tmp_path / "p.h5", [ids[i] for i in keep] + ["stray_chunk_1F1"], np.vstack([prot[keep], prot[:1]]), "esm")
    with pytest.raises(UserError) as err:
        merge_features(n_path, p_path, tmp_path / "out.h5")
    message = str(err.value)
    assert ids[3] in message and ids[11] in message and "stray_chunk_1F1" in message
    assert not os.path.exists(tmp_path / "out.h5")


def test_skip_missing_drops_them_and_ids_match_rows(tmp_path, caplog):
    n_path, _, ids, expected = make_pair(tmp_path, 20)
    keep = [i for i in range(20) if i not in (0, 19, 5)]
    p_path = write_embeddings(tmp_path / "p.h5", [ids[i] for i in keep][::-1], expected[keep, 6:][::-1], "esm")
    out = merge_features(n_path, p_path, tmp_path / "out.h5", skip_missing=True)
    got_ids, features, _ = read_features(out)
    assert got_ids == [ids[i] for i in keep]
    assert np.array_equal(features, expected[keep])
    assert "skipping 3 id(s)" in caplog.text and ids[5] in caplog.text


def test_swapped_or_wrong_inputs_are_clear_errors(tmp_path):
    n_path, p_path, _, _ = make_pair(tmp_path, 5)
    with pytest.raises(UserError, match="swapped"):
        merge_features(p_path, n_path, tmp_path / "out.h5")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file at all")
    with pytest.raises(UserError, match="junk.pt"):
        merge_features(str(junk), p_path, tmp_path / "out.h5")
    with pytest.raises(UserError, match="merged"):
        merge_features(os.path.join(VANILLA, "with_orfs_merged.pt"), p_path, tmp_path / "out.h5")
    with pytest.raises(UserError, match="no such file"):
        merge_features(str(tmp_path / "absent.h5"), p_path, tmp_path / "out.h5")
    dup = write_embeddings(tmp_path / "dup.h5", ["a_chunk_1F1", "a_chunk_1F1"], np.zeros((2, 3)), "dnabert")
    with pytest.raises(UserError, match="duplicate id 'a_chunk_1F1'"):
        merge_features(dup, p_path, tmp_path / "out.h5")
    assert not os.path.exists(tmp_path / "out.h5")


def test_empty_inputs_give_a_valid_empty_output(tmp_path):
    n_path = write_embeddings(tmp_path / "n.h5", [], np.zeros((0, 6)), "dnabert")
    p_path = write_embeddings(tmp_path / "p.h5", [], np.zeros((0, 4)), "esm")
    ids, features, attrs = read_features(merge_features(n_path, p_path, tmp_path / "out.h5"))
    assert ids == [] and features.shape == (0, 10) and attrs["protein_dim"] == 4


def test_complete_output_is_skipped_unless_overwrite(tmp_path):
    n_path, p_path, _, _ = make_pair(tmp_path, 8)
    out = merge_features(n_path, p_path, tmp_path / "out.h5")
    os.utime(out, (1, 1))
    merge_features(n_path, p_path, out)
    assert os.stat(out).st_mtime == 1
    merge_features(n_path, p_path, out, overwrite=True)
    assert os.stat(out).st_mtime > 1
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []


def test_h5_merge_does_not_import_torch(tmp_path):
    n_path, p_path, _, _ = make_pair(tmp_path, 8)
    code = (
        "import sys; from virnucpro.stages.merge import merge_features; "
        f"merge_features({n_path!r}, {p_path!r}, {str(tmp_path / 'o.h5')!r}); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_shard_keys_pair_both_naming_styles():
    assert shard_key("a/s.00001.nucleotide.dnabert.h5") == shard_key("b/s.00001.protein.esm.h5") == "s.00001"
    assert shard_key("output_1_DNABERT_S.pt") == shard_key("output_1_ESM.pt") == "output_1"
    assert shard_key("x.nucleotide.h5") != shard_key("y.protein.h5")


def test_many_pairs_by_folder_one_failing_pair_reported_others_finish(tmp_path, caplog):
    nucl_dir, prot_dir, out_dir = tmp_path / "n", tmp_path / "p", tmp_path / "out"
    for folder in (nucl_dir, prot_dir):
        folder.mkdir()
    expected = {}
    for k in range(3):
        n_path, p_path, ids, matrix = make_pair(tmp_path, 10 + k, name=f"s.{k:05d}", seed=k)
        os.rename(n_path, nucl_dir / os.path.basename(n_path))
        os.rename(p_path, prot_dir / os.path.basename(p_path))
        expected[f"s.{k:05d}"] = (ids, matrix)
    # Shard 1's protein file lacks an id: that pair fails, the other two still finish.
    ids, matrix = expected["s.00001"]
    write_embeddings(prot_dir / "s.00001.protein.esm.h5", ids[1:], matrix[1:, 6:], "esm")
    with pytest.raises(UserError, match=r"1 of 3 pair\(s\) failed: 's.00001'"):
        merge_pairs(str(nucl_dir), str(prot_dir), str(out_dir), workers=2)
    assert "pair 's.00001' failed" in caplog.text
    assert sorted(os.listdir(out_dir)) == ["s.00000.features.h5", "s.00002.features.h5"]
    for key in ("s.00000", "s.00002"):
        got_ids, features, _ = read_features(out_dir / f"{key}.features.h5")
        assert got_ids == expected[key][0] and np.array_equal(features, expected[key][1])


def test_many_pairs_from_comma_lists_with_batches(tmp_path):
    pairs = [make_pair(tmp_path, 5, name=f"t{k}", seed=k) for k in range(5)]
    nucl = ",".join(p[0] for p in pairs)
    prot = ",".join(p[1] for p in reversed(pairs))  # order does not matter: paired by name
    outputs = merge_pairs(nucl, prot, str(tmp_path / "out"), workers=1, batch_size=2)
    assert [os.path.basename(o) for o in outputs] == [f"t{k}.features.h5" for k in range(5)]
    for (_, _, ids, matrix), output in zip(pairs, outputs):
        got_ids, features, _ = read_features(output)
        assert got_ids == ids and np.array_equal(features, matrix)
    with pytest.raises(UserError, match="no partner"):
        pair_inputs(pairs[0][0], pairs[1][1])


def test_cli_single_pair_and_one_line_error(tmp_path):
    n_path, p_path, ids, matrix = make_pair(tmp_path, 6)
    out = tmp_path / "cli.h5"
    ok = run_tool("virnucpro-merge", "--nucleotide", n_path, "--protein", p_path, "--output", out, check=False)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == ""
    got_ids, features, _ = read_features(out)
    assert got_ids == ids and np.array_equal(features, matrix)
    bad = run_tool("virnucpro-merge", "--nucleotide", p_path, "--protein", n_path, "--output", tmp_path / "x.h5", check=False)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1].startswith("virnucpro-merge: error: ")
    assert "swapped" in bad.stderr


def test_pt_reader_runs_no_pickled_code_and_checks_tensor_bounds(tmp_path):
    torch = pytest.importorskip("torch")
    marker = write_pickle_bomb(tmp_path, "{'nucleotide': ['a_chunk_1F1'], 'data': [Payload()]}", tmp_path / "evil.pt")
    _, p_path, _, _ = make_pair(tmp_path, 3)
    with pytest.raises(UserError, match="refusing to load global"):
        merge_features(str(tmp_path / "evil.pt"), p_path, tmp_path / "out.h5")
    assert not marker.exists()

    # A tensor whose shape reaches past its storage must be refused, not read out of bounds.
    import zipfile

    torch.save({"ids": ["a_chunk_1F1"], "data": torch.zeros(1, 4)}, tmp_path / "ok.pt")
    with zipfile.ZipFile(tmp_path / "ok.pt") as source, zipfile.ZipFile(tmp_path / "bad.pt", "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.endswith("data.pkl"):
                assert data.count(b"K\x01K\x04\x86") == 1  # size (1, 4)
                data = data.replace(b"K\x01K\x04\x86", b"K\x01K\xc8\x86")  # size (1, 200)
            target.writestr(item, data)
    from virnucpro.pt_io import read_pt_embeddings

    assert read_pt_embeddings(str(tmp_path / "ok.pt"))[2].shape == (1, 4)
    with pytest.raises(UserError, match="past the end of its storage"):
        read_pt_embeddings(str(tmp_path / "bad.pt"))


def _rezip(source, target, compression=0, pickle_bytes=None):
    """Copy a .pt archive, optionally deflating its members or replacing its data.pkl."""
    import zipfile

    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", compression) as dst:
        for item in src.infolist():
            data = src.read(item)
            if pickle_bytes is not None and item.filename.endswith("data.pkl"):
                data = pickle_bytes
            dst.writestr(item.filename, data)
    return str(target)


def test_pt_reader_refuses_files_that_ask_for_far_more_memory_than_their_size(tmp_path):
    """A small crafted .pt must not make the reader allocate without bound (each of these files
    is well under 1 MB and asked for 64 MB to 4 PiB before)."""
    import struct

    torch = pytest.importorskip("torch")
    from virnucpro.pt_io import read_pt_embeddings

    ids = [f"c_chunk_{i}F1" for i in range(4096)]
    base = torch.zeros(100_000)
    crafted = {
        # one 4-byte storage broadcast to 4096 x 4096 (torch.save keeps the stride-0 view)
        "broadcast": {"ids": ids, "data": torch.zeros(1).expand(4096, 4096)},
        # the same storage rebuilt as 2000 tensors
        "views": {"proteins": ids[:2000], "data": [base.view(-1) for _ in range(2000)]},
        # 4000 rows sharing one list of 8192 floats
        "shared": {"nucleotide": ids[:4000], "data": [{"label": "x", "mean_representation": [0.5] * 8192}] * 4000},
        "giant": {"ids": ids[:1], "data": torch.zeros(1).expand(2**25, 2**25)},
    }
    for name, obj in crafted.items():
        torch.save(obj, tmp_path / f"{name}.pt")
    torch.save({"ids": ids[:1], "data": torch.zeros(1, 2**24)}, tmp_path / "plain.pt")
    files = [str(tmp_path / f"{name}.pt") for name in crafted]
    files.append(_rezip(tmp_path / "plain.pt", tmp_path / "deflated.pt", compression=8))  # 64 MB from 64 kB
    torch.save({"ids": ids[:1], "data": torch.zeros(1, 4)}, tmp_path / "tiny.pt")
    files.append(_rezip(tmp_path / "tiny.pt", tmp_path / "bigbytes.pt",
                        pickle_bytes=b"\x80\x04\x8e" + struct.pack("<Q", 2**62) + b"xx."))  # 4 EiB of bytes
    for path in files:
        assert os.path.getsize(path) < 1_000_000
        with pytest.raises(UserError, match="memory"):
            read_pt_embeddings(path)
    # Genuine files, including tensors that share one storage, still load.
    rows = torch.arange(12.0).reshape(3, 4)
    torch.save({"proteins": ids[:3], "data": list(rows)}, tmp_path / "esm.pt")
    assert np.array_equal(read_pt_embeddings(str(tmp_path / "esm.pt"))[2], rows.numpy())


def test_cli_many_pairs_reports_the_failing_pair_and_exits_1(tmp_path):
    good = make_pair(tmp_path, 4, name="g")
    bad_n, _, ids, matrix = make_pair(tmp_path, 4, name="b")
    write_embeddings(tmp_path / "b.protein.esm.h5", ids[:2], matrix[:2, 6:], "esm")
    result = run_tool(
        "virnucpro-merge", "--nucleotide", f"{good[0]},{bad_n}", "--protein", f"{tmp_path / 'b.protein.esm.h5'},{good[1]}",
        "--outdir", tmp_path / "out", "--workers", 1, check=False,
    )
    assert result.returncode == 1
    assert "pair 'b' failed" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "virnucpro-merge: error: 1 of 2 pair(s) failed: 'b'"
    assert os.listdir(tmp_path / "out") == ["g.features.h5"]


def test_output_made_from_other_inputs_is_refused_unless_overwrite(tmp_path):
    import shutil

    n_path, p_path, _, _ = make_pair(tmp_path, 8)
    out = merge_features(n_path, p_path, tmp_path / "out.h5")
    with h5py.File(out, "r") as handle:
        made_from = json.loads(handle.attrs["made_from"])
    assert made_from["skip_missing"] is False and set(made_from) == {"nucleotide", "protein", "skip_missing"}
    # The same content elsewhere (a copy, other times) is the same input: skipped.
    os.mkdir(tmp_path / "copy")
    copies = [shutil.copy(p, tmp_path / "copy") for p in (n_path, p_path)]
    os.utime(out, (1, 1))
    merge_features(*copies, out)
    assert os.stat(out).st_mtime == 1
    other_n, other_p, _, other = make_pair(tmp_path / "copy", 8, name="t", seed=3)
    with pytest.raises(UserError, match=r"out.h5 exists but was made differently \(protein differ\); use --overwrite"):
        merge_features(n_path, other_p, out)
    with pytest.raises(UserError, match=r"skip_missing differ"):
        merge_features(n_path, p_path, out, skip_missing=True)
    assert os.stat(out).st_mtime == 1  # nothing replaced
    merge_features(other_n, other_p, out, overwrite=True)
    assert np.array_equal(read_features(out)[1], other)
    merge_features(n_path, p_path, out, redo=True)  # predict's mode: made again, no error
    assert np.array_equal(read_features(out)[1][:, :6], read_features(merge_features(n_path, p_path, tmp_path / "o2.h5"))[1][:, :6])


def test_non_finite_embeddings_are_an_error_naming_the_frames(tmp_path):
    n_path, p_path, ids, _ = make_pair(tmp_path, 8, shuffle_protein=False)
    with h5py.File(p_path, "a") as handle:
        rows = handle["embeddings"][()]
        rows[2, 1], rows[5, 0] = np.nan, np.inf
        handle["embeddings"][...] = rows
    with pytest.raises(UserError, match=rf"non-finite .* 2 frame\(s\) .*'{ids[2]}', '{ids[5]}'"):
        merge_features(n_path, p_path, tmp_path / "out.h5")
    assert files_in(tmp_path) == sorted(os.path.basename(p) for p in (n_path, p_path))
