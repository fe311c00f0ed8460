"""virnucpro-classify: the original's tables exactly, the published pickle format loaded safely,
and the per-sequence summary."""

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from virnucpro.models.classifier import MLPClassifier, load_classifier
from virnucpro.stages.classify import (
    classify_features,
    highestscore_lines,
    prediction_line,
    update_chunk_best,
)
from helpers import DATA, run_tool, write_pickle_bomb
from virnucpro.errors import UserError

VANILLA = os.path.join(DATA, "vanilla")

# The training script's class, in a script run as __main__ and saved with torch.save(model):
# exactly how the published 300_model.pth / 500_model.pth were made. It also scores the given
# features the way the original's prediction.py did (batches of 256, eval mode, softmax).
ORIGINAL_WAY = r"""
import sys
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class MLPClassifier(nn.Module):
    def __init__(self, input_dim, hidden_dim, num_class):
        super(MLPClassifier, self).__init__()
        self.hidden_layer = nn.Linear(input_dim, hidden_dim)
        self.bn1 = nn.BatchNorm1d(hidden_dim)
        self.output_layer = nn.Linear(hidden_dim, num_class)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        x = self.hidden_layer(x)
        x = self.bn1(x)
        x = F.relu(x)
        x = self.dropout(x)
        x = self.output_layer(x)
        return x


model_path, features_path, probabilities_path = sys.argv[1:4]
torch.manual_seed(11)
model = MLPClassifier(3328, 512, 2)
with torch.no_grad():  # trained-looking BatchNorm: a loader that ignores these stats is caught
    model.bn1.running_mean.normal_(0.0, 0.5)
    model.bn1.running_var.uniform_(0.2, 3.0)
    model.bn1.weight.normal_(1.0, 0.3)
    model.bn1.bias.normal_(0.0, 0.3)
    model.output_layer.weight.mul_(8.0)
torch.save(model, model_path)
model.eval()
features = torch.from_numpy(np.load(features_path))
with torch.no_grad():
    batches = [F.softmax(model(features[i:i + 256]), dim=1) for i in range(0, len(features), 256)]
np.save(probabilities_path, torch.cat(batches).numpy())
"""


def frame_ids(n, seed=0):
    """n frame ids in translate order: contigs, chunks 1..12 (so '10' sorts before '9'), some frames."""
    rng = np.random.default_rng(seed)
    ids = []
    contig = 0
    while len(ids) < n:
        name = ["Contig", "contig", "b-contig"][contig % 3] + str(contig)
        for chunk in range(1, rng.integers(1, 13) + 1):
            for frame in ("F1", "F2", "F3", "R1", "R2", "R3"):
                if rng.random() < 0.4:
                    ids.append(f"{name}_chunk_{chunk}{frame}")
        contig += 1
    return ids[:n]


def write_features_h5(path, ids, features):
    with h5py.File(path, "w") as out:
        out.create_dataset("ids", data=ids, dtype=h5py.string_dtype("utf-8"), shape=(len(ids),))
        out.create_dataset("features", data=features)
        out.attrs.update(nucleotide_dim=768, protein_dim=2560)
    return str(path)


def reference_tables(ids, probabilities):
    """The original's two tables, written plainly from its rules."""
    predictions = "Sequence_ID\tPrediction\tscore1\tscore2\n"
    groups = {}
    for frame_id, probability in zip(ids, probabilities):
        label = {1: "virus", 0: "others"}[int(np.argmax(probability))]  # first index wins a tie
        predictions += f"{frame_id}\t{label}\t" + "\t".join(map(str, probability)) + "\n"
        groups.setdefault(frame_id[:-2], []).append(probability)
    highest = "Modified_ID\tIs_Virus\n"
    for chunk_id in sorted(groups):
        rows = groups[chunk_id]
        highest += f"{chunk_id}\t{max(r[1] for r in rows) >= max(r[0] for r in rows)}\n"
    return predictions, highest


def read(path):
    with open(path) as handle:
        return handle.read()


@pytest.fixture(scope="module")
def original_classifier(tmp_path_factory):
    """(classifier.pth pickled the original way, features files, ids, reference probabilities)."""
    folder = tmp_path_factory.mktemp("original")
    ids = frame_ids(600)
    features = np.random.default_rng(5).standard_normal((600, 3328)).astype(np.float32)
    np.save(folder / "features.npy", features)
    script = folder / "train_like.py"
    script.write_text(ORIGINAL_WAY)
    subprocess.run(
        [sys.executable, str(script), str(folder / "model.pth"), str(folder / "features.npy"), str(folder / "probs.npy")],
        check=True,
    )
    # Two files (one HDF5, one original merged .pt): the 256-row batches straddle them.
    first = write_features_h5(folder / "part1.features.h5", ids[:300], features[:300])
    second = str(folder / "part2_merged.pt")
    torch.save({"ids": ids[300:], "data": torch.from_numpy(features[300:])}, second)
    return dict(model=str(folder / "model.pth"), files=[first, second], ids=ids, features=features,
                probabilities=np.load(folder / "probs.npy"))


def test_original_pickle_gives_the_original_tables_exactly(original_classifier, tmp_path):
    oc = original_classifier
    result = classify_features(oc["files"], oc["model"], tmp_path)
    expected_predictions, expected_highest = reference_tables(oc["ids"], oc["probabilities"])
    assert read(result["predictions"]) == expected_predictions
    assert read(result["highestscore"]) == expected_highest
    labels = {line.split("\t")[1] for line in expected_predictions.splitlines()[1:]}
    assert labels == {"virus", "others"}  # both classes occur, so the labels are really tested


def test_loader_uses_batchnorm_running_stats(original_classifier):
    model = load_classifier(original_classifier["model"])
    assert not model.training
    plain = MLPClassifier()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("bn1.running")}, strict=False)
    x = torch.from_numpy(original_classifier["features"][:8])
    with torch.no_grad():
        assert not torch.allclose(model(x), plain.eval()(x))


def test_state_dict_and_safetensors_load_the_same_model(original_classifier, tmp_path):
    from safetensors.torch import save_file

    model = load_classifier(original_classifier["model"])
    state = model.state_dict()
    torch.save(state, tmp_path / "state.pth")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "wrapped.pth")
    save_file({k: v for k, v in state.items() if k != "bn1.num_batches_tracked"}, tmp_path / "model.safetensors")
    x = torch.from_numpy(original_classifier["features"][:16])
    with torch.no_grad():
        expected = model(x)
        for name in ("state.pth", "wrapped.pth", "model.safetensors"):
            assert torch.equal(load_classifier(tmp_path / name)(x), expected), name


def test_pickled_code_is_never_run(tmp_path):
    marker = write_pickle_bomb(tmp_path, "{'hidden_layer.weight': Payload()}", tmp_path / "evil.pth")
    with pytest.raises(UserError, match="not allowed"):
        load_classifier(tmp_path / "evil.pth")
    assert not marker.exists()


def test_files_that_are_no_classifier_are_clear_errors(tmp_path):
    (tmp_path / "text.pth").write_text("hello, I am not a model\n")
    with pytest.raises(UserError, match="neither a PyTorch file"):
        load_classifier(tmp_path / "text.pth")
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="missing .*hidden_layer.weight"):
        load_classifier(tmp_path / "other.pth")
    three = MLPClassifier(3328, 512, 3).state_dict()
    torch.save(three, tmp_path / "three.pth")
    with pytest.raises(UserError, match="3 classes"):
        load_classifier(tmp_path / "three.pth")
    with pytest.raises(UserError, match="no such file"):
        load_classifier(tmp_path / "absent.pth")


def test_tie_goes_to_others_and_counts_as_virus_chunk(tmp_path):
    model = MLPClassifier()
    with torch.no_grad():
        model.output_layer.weight[1] = model.output_layer.weight[0]
        model.output_layer.bias[1] = model.output_layer.bias[0]
    torch.save(model.state_dict(), tmp_path / "tie.pth")
    ids = ["s_chunk_1F1", "s_chunk_1R2"]
    features = write_features_h5(tmp_path / "f.h5", ids, np.ones((2, 3328), np.float32))
    result = classify_features(features, tmp_path / "tie.pth", tmp_path / "out")
    assert read(result["predictions"]).splitlines()[1:] == [f"{i}\tothers\t0.5\t0.5" for i in ids]
    assert read(result["highestscore"]) == "Modified_ID\tIs_Virus\ns_chunk_1\tTrue\n"


def test_rules_reproduce_the_original_highestscore_file():
    """The original's own predictions, run through our per-chunk rule, give its highestscore file."""
    chunk_best = {}
    lines = read(os.path.join(VANILLA, "with_orfs_prediction_results.txt")).splitlines(keepends=True)
    assert lines[0] == "Sequence_ID\tPrediction\tscore1\tscore2\n"
    for line in lines[1:]:
        frame_id, label, score1, score2 = line.rstrip("\n").split("\t")
        s1, s2 = np.float32(score1), np.float32(score2)
        assert (str(s1), str(s2)) == (score1, score2)  # the original wrote numpy's float32 str()
        assert prediction_line(frame_id, s1, s2) == line
        update_chunk_best(chunk_best, frame_id, s1, s2)
    assert "".join(highestscore_lines(chunk_best)) == read(os.path.join(VANILLA, "with_orfs_prediction_results_highestscore.csv"))


def test_vanilla_merged_features_give_the_original_rows(original_classifier, tmp_path):
    result = classify_features(os.path.join(VANILLA, "with_orfs_merged.pt"), original_classifier["model"], tmp_path)
    ours = [line.split("\t")[0] for line in read(result["predictions"]).splitlines()]
    theirs = [line.split("\t")[0] for line in read(os.path.join(VANILLA, "with_orfs_prediction_results.txt")).splitlines()]
    assert ours == theirs
    ours = [line.split("\t")[0] for line in read(result["highestscore"]).splitlines()]
    theirs = [line.split("\t")[0] for line in read(os.path.join(VANILLA, "with_orfs_prediction_results_highestscore.csv")).splitlines()]
    assert ours == theirs


def summary_rows(path):
    lines = read(path).splitlines()
    assert lines[0].split("\t") == ["sequence_id", "length", "chunks", "chunks_scored", "chunks_viral", "viral_fraction", "mean_virus_score", "verdict"]
    return {line.split("\t")[0]: line.split("\t")[1:] for line in lines[1:]}, [line.split("\t")[0] for line in lines[1:]]


def test_sequence_summary_counts_scores_and_threshold(original_classifier, tmp_path):
    oc = original_classifier
    ids, probabilities = oc["ids"], oc["probabilities"]
    # Every contig of the features, plus unscored chunks and one sequence without any frame.
    chunks = {}
    for frame_id in ids:
        record, number = frame_id[:-2].rsplit("_chunk_", 1)
        chunks[record] = max(chunks.get(record, 0), int(number))
    table = tmp_path / "in.sequences.tsv"
    rows = [("no_frames_seq", 250, 1)] + [(record, n * 500 + 1, n + 1) for record, n in chunks.items()]
    table.write_text("sequence_id\tlength\tchunks\n" + "".join(f"{r}\t{l}\t{c}\n" for r, l, c in rows))
    result = classify_features(oc["files"], oc["model"], tmp_path / "a", sequences=table)
    got, order = summary_rows(result["summary"])
    assert order == [r for r, _, _ in rows]
    assert got["no_frames_seq"] == ["250", "1", "0", "0", "NA", "NA", "unscored"]
    best = {}
    for frame_id, (p1, p2) in zip(ids, probabilities):
        b = best.setdefault(frame_id[:-2], [p1, p2])
        b[0], b[1] = max(b[0], p1), max(b[1], p2)
    for record, length, n_chunks in rows[1:]:
        mine = {c: b for c, b in best.items() if c.rsplit("_chunk_", 1)[0] == record}
        viral = sum(b[1] >= b[0] for b in mine.values())
        score = np.mean([float(b[1]) for b in mine.values()])
        assert got[record][:4] == [str(length), str(n_chunks), str(len(mine)), str(viral)]
        assert float(got[record][4]) == pytest.approx(viral / len(mine), rel=1e-6)
        assert float(got[record][5]) == pytest.approx(score, rel=1e-6)  # shown, decides nothing
        # This project's verdict: at least half of the scored chunks called viral by the original's rule.
        assert got[record][6] == ("virus" if 2 * viral >= len(mine) else "others")
    # The threshold is the verdict's cut on the fraction of viral chunks, counted in whole chunks
    # (test_verdict_is_the_fraction_of_viral_chunks shows both verdicts).
    counts = {r: (int(v[3]), int(v[2])) for r, v in got.items() if v[4] != "NA"}
    threshold = 0.75
    cut, _ = summary_rows(classify_features(oc["files"], oc["model"], tmp_path / "b", sequences=table, threshold=threshold)["summary"])
    assert {r: cut[r][-1] for r in counts} == {r: "virus" if viral >= threshold * scored - 1e-9 else "others"
                                              for r, (viral, scored) in counts.items()}
    # Features that do not belong to the table are an error.
    (tmp_path / "other.tsv").write_text("sequence_id\tlength\tchunks\nunrelated\t10\t1\n")
    with pytest.raises(UserError, match="does not list"):
        classify_features(oc["files"], oc["model"], tmp_path / "c", sequences=tmp_path / "other.tsv")
    with pytest.raises(UserError, match="threshold"):
        classify_features(oc["files"], oc["model"], tmp_path / "d", threshold=1.5)


def test_verdict_is_the_fraction_of_viral_chunks():
    """The issue's cases: 3 of 8 chunks viral (with high virus scores) was `virus` by the mean score;
    13 of 17 viral was `others` at --threshold 0.58. The verdict now counts the chunks the original
    calls viral (best virus score >= best other score), so it can be read off the chunk track."""
    from virnucpro.stages.classify import summarize

    f32 = np.float32
    chunk_scores = {}
    for number in range(1, 9):  # high virus scores, but most chunks' best other score is higher
        chunk_scores[f"a_chunk_{number}"] = [f32(0.2), f32(0.8)] if number <= 3 else [f32(0.9), f32(0.7)]
    for number in range(1, 18):  # low mean virus score, most chunks viral
        chunk_scores[f"b_chunk_{number}"] = [f32(0.45), f32(0.55)] if number <= 13 else [f32(0.95), f32(0.05)]
    for number in range(1, 5):  # exactly half: at the default threshold it is virus (>=)
        chunk_scores[f"c_chunk_{number}"] = [f32(0.4), f32(0.6)] if number <= 2 else [f32(0.6), f32(0.4)]
    sequences = [("a", 4000, 8), ("b", 8500, 17), ("c", 2000, 4), ("d", 100, 1)]
    rows = {row[0]: list(row[1:]) for row in summarize(chunk_scores, sequences, 0.5)}
    assert rows["a"] == ["4000", "8", "8", "3", "0.375", str(f32(np.mean([0.8] * 3 + [0.7] * 5))), "others"]
    assert float(rows["a"][5]) > 0.5  # the mean virus score would have called it virus
    assert rows["b"][3:5] == ["13", str(f32(13 / 17))] and rows["b"][-1] == "virus" and float(rows["b"][5]) < 0.5
    assert rows["c"][-1] == "virus" and rows["d"][-1] == "unscored"
    at_058 = {row[0]: row[-1] for row in summarize(chunk_scores, sequences, 0.58)}
    assert at_058 == {"a": "others", "b": "virus", "c": "others", "d": "unscored"}


def test_wrong_width_and_resume(original_classifier, tmp_path):
    narrow = write_features_h5(tmp_path / "narrow.h5", ["a_chunk_1F1"], np.zeros((1, 100), np.float32))
    with pytest.raises(UserError, match="100 columns"):
        classify_features(narrow, original_classifier["model"], tmp_path / "x")
    assert not os.path.exists(tmp_path / "x" / "prediction_results.tsv")
    result = classify_features(original_classifier["files"], original_classifier["model"], tmp_path / "y")
    for path in result.values():
        os.utime(path, (1, 1))
    classify_features(original_classifier["files"], original_classifier["model"], tmp_path / "y")
    assert all(os.stat(p).st_mtime == 1 for p in result.values())
    classify_features(original_classifier["files"], original_classifier["model"], tmp_path / "y", overwrite=True)
    assert all(os.stat(p).st_mtime > 1 for p in result.values())


def test_cli_many_features_and_one_line_errors(original_classifier, tmp_path):
    oc = original_classifier
    ok = run_tool("virnucpro-classify", "--features", *oc["files"], "--classifier", oc["model"], "--outdir", tmp_path / "cli")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == ""
    expected_predictions, _ = reference_tables(oc["ids"], oc["probabilities"])
    assert read(tmp_path / "cli" / "prediction_results.tsv") == expected_predictions
    bad = run_tool("virnucpro-classify", "--features", oc["files"][0], "--classifier", os.path.join(VANILLA, "test_with_orfs.fa"), "--outdir", tmp_path / "bad", check=False)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1].startswith("virnucpro-classify: error: ")
    assert "not a VirNucPro classifier" in bad.stderr


def test_non_ascii_ids_are_utf8_whatever_the_locale(original_classifier, tmp_path):
    """The tables are UTF-8 (as virnucpro-report reads them), also under a C/ASCII locale."""
    ids = ["vírus_α|β_chunk_1F1", "vírus_α|β_chunk_2R3", "plain_chunk_1F2"]
    features = write_features_h5(tmp_path / "f.h5", ids, original_classifier["features"][:3])
    table = tmp_path / "s.sequences.tsv"
    table.write_text("sequence_id\tlength\tchunks\nvírus_α|β\t900\t2\nplain\t300\t1\n", encoding="utf-8")
    ascii_locale = {"LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    run_tool("virnucpro-classify", "--features", features, "--classifier", original_classifier["model"],
             "--sequences", table, "--outdir", tmp_path / "out", env=ascii_locale)
    reference = classify_features(features, original_classifier["model"], tmp_path / "ref", sequences=str(table))
    for name in ("prediction_results.tsv", "prediction_results_highestscore.tsv", "sequence_summary.tsv"):
        with open(tmp_path / "out" / name, "rb") as got, open(os.path.join(tmp_path / "ref", name), "rb") as want:
            assert got.read() == want.read()
    assert "vírus_α|β_chunk_2R3\t" in open(reference["predictions"], encoding="utf-8").read()
    with open(tmp_path / "out" / "sequence_summary.tsv", encoding="utf-8") as handle:
        assert [line.split("\t")[:3] for line in handle.read().splitlines()[1:]] == [["vírus_α|β", "900", "2"], ["plain", "300", "1"]]
    table.write_bytes(b"sequence_id\tlength\tchunks\n\xff\xfe\t1\t1\n")
    bad = run_tool("virnucpro-classify", "--features", features, "--classifier", original_classifier["model"],
                   "--sequences", table, "--outdir", tmp_path / "bad", check=False)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].endswith("not UTF-8 text, so not a sequences table")


def test_tables_made_differently_are_refused_unless_overwrite(original_classifier, tmp_path):
    import json
    import shutil

    oc = original_classifier
    out = tmp_path / "out"
    classify_features(oc["files"], oc["model"], out)
    record = json.loads(read(out / "classify.json"))
    assert record["threshold"] == 0.5 and record["chunk_size"] is None
    assert len(record["made_from"]["features"]) == 2
    tables = {name: read(out / name) for name in ("prediction_results.tsv", "sequence_summary.tsv")}
    # The same features copied elsewhere are the same input: kept.
    copies = [shutil.copy(path, tmp_path) for path in oc["files"]]
    classify_features(copies, oc["model"], out)
    for change, message in ((dict(threshold=0.7), "threshold differ"),
                            (dict(features=oc["files"][:1]), "features differ")):
        arguments = dict(features=oc["files"], classifier=oc["model"], outdir=out)
        arguments.update(change)
        with pytest.raises(UserError, match=rf"prediction_results.tsv exists but was made differently \({message}\); use --overwrite"):
            classify_features(**arguments)
    assert {name: read(out / name) for name in tables} == tables  # nothing replaced
    classify_features(oc["files"], oc["model"], out, threshold=0.7, overwrite=True)
    assert json.loads(read(out / "classify.json"))["threshold"] == 0.7
    classify_features(oc["files"][:1], oc["model"], out, threshold=0.7, redo=True)  # predict's mode
    assert len(read(out / "prediction_results.tsv").splitlines()) == 301


def test_chunk_size_is_taken_from_translate_record(original_classifier, tmp_path):
    import json

    from virnucpro.stages.translate import translate_fasta

    fasta = tmp_path / "reads.fa"
    fasta.write_text(">Contig0\n" + "ATGAAACCCGGGTTTAAACCC" * 100 + "\n")
    translated = translate_fasta(str(fasta), str(tmp_path / "t"), chunk_size=300)
    ids = ["Contig0_chunk_1F1", "Contig0_chunk_2F1"]
    features = write_features_h5(tmp_path / "f.h5", ids, original_classifier["features"][:2])
    classify_features(features, original_classifier["model"], tmp_path / "out", sequences=translated["sequences"])
    record = json.loads(read(tmp_path / "out" / "classify.json"))
    assert record["chunk_size"] == 300 and record["threshold"] == 0.5


def test_non_finite_features_are_an_error_naming_the_frames(original_classifier, tmp_path):
    ids = ["a_chunk_1F1", "a_chunk_1R1", "b_chunk_1F2"]
    values = original_classifier["features"][:3].copy()
    values[1, 7] = np.nan
    values[2, 0] = -np.inf
    features = write_features_h5(tmp_path / "f.h5", ids, values)
    result = run_tool("virnucpro-classify", "--features", features, "--classifier", original_classifier["model"],
                      "--outdir", tmp_path / "out", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "non-finite (NaN or infinite) features for frame(s) 'a_chunk_1R1', 'b_chunk_1F2'" in last
    assert not os.path.exists(tmp_path / "out")


def test_one_rule_for_chunk_size_and_threshold(tmp_path, caplog):
    """Every tool checks chunk size and threshold with the same two functions of results.py; the
    classifier module only matches the size with the one the classifier was trained on."""
    import logging

    from virnucpro.models.classifier import match_trained_chunk_size
    from virnucpro.results import check_chunk_size, check_threshold

    assert check_chunk_size(300) == 300 and check_chunk_size(500) == 500
    for bad in (0, 2, -500, True, 500.0, "500", None):
        with pytest.raises(UserError, match="--chunk_size must be a whole number of at least 3"):
            check_chunk_size(bad, any_chunk_size=True)
    with pytest.raises(UserError, match="--chunk_size 400: the published classifiers were trained on 300 or 500 bp "
                                        r"chunks \(--any_chunk_size allows"):
        check_chunk_size(400)
    with caplog.at_level(logging.WARNING):
        assert check_chunk_size(400, any_chunk_size=True) == 400 and not caplog.text
        assert check_chunk_size(3, any_chunk_size=True, warn=True) == 3
    assert "--chunk_size 3: the published classifiers were trained on 300 or 500" in caplog.text

    assert check_threshold(None) == 0.5 and check_threshold("0.25") == 0.25 and check_threshold(1) == 1.0
    for bad, says in ((1.5, "between 0 and 1"), (-0.1, "between 0 and 1"), ("x", "must be a number")):
        with pytest.raises(UserError, match=f"--threshold {says}" if says.startswith("must") else says):
            check_threshold(bad)

    model = MLPClassifier()
    model.virnucpro = {}
    named = str(tmp_path / "300_model.pth")
    assert match_trained_chunk_size(named, model, None) == 300  # taken from the published file name
    with pytest.raises(UserError, match="--chunk_size 500 does not match the classifier .*its file name says"):
        match_trained_chunk_size(named, model, 500)
    assert match_trained_chunk_size(named, model, 500, any_chunk_size=True) == 500
    with pytest.raises(UserError, match="--chunk_size must be a whole number of at least 3"):
        match_trained_chunk_size(named, model, 2, any_chunk_size=True)
    assert match_trained_chunk_size(str(tmp_path / "mine.pth"), model, None) is None
