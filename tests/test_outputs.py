"""`outputs.make_once`, the skip-or-redo sequence every tool runs its work through: each step in
its place (lock, reuse, checks, own temporaries, old record, work, new record)."""

import logging
import os

import pytest

from virnucpro.errors import UserError
from virnucpro.names import final_name, temp_pattern
from virnucpro.outputs import (atomic_paths, exclusive, file_digests, file_sha256, lock_path, make_once, read_record,
                               temp_path_for)


class Tool:
    """A tiny tool: writes `text` into out.txt, with its record in out.json beside it."""

    def __init__(self, folder):
        self.out = str(folder / "out.txt")
        self.record_path = str(folder / "out.json")
        self.made = 0

    def run(self, text, overwrite=False, redo=False, check_first=None, make=None):
        expected = {"text": text}

        def write():
            self.made += 1
            assert read_record(self.record_path) is None, "the old record is gone before the work"
            assert os.path.exists(lock_path(self.record_path)), "the work runs under the lock"
            with atomic_paths([self.out]) as (tmp,):
                with open(tmp, "w") as handle:
                    handle.write(text)
            return "made"

        return make_once([self.out], expected, make or write, what="test output", lock=self.record_path,
                         record_path=self.record_path, check_first=check_first, kept=lambda previous: "kept",
                         record=lambda result, digests: {"made_from": expected, "sha256": digests, "result": result},
                         overwrite=overwrite, redo=redo)


def test_makes_then_records_then_reuses(tmp_path, caplog):
    tool = Tool(tmp_path)
    assert tool.run("a") == "made" and tool.made == 1
    assert read_record(tool.record_path) == {"made_from": {"text": "a"}, "sha256": file_digests([tool.out]),
                                             "result": "made"}
    with caplog.at_level(logging.INFO):
        assert tool.run("a") == "kept" and tool.made == 1
    assert "test output already complete, skipping" in caplog.text
    assert not os.path.exists(lock_path(tool.record_path))  # released


def test_overwrite_makes_again(tmp_path):
    tool = Tool(tmp_path)
    tool.run("a")
    assert tool.run("a", overwrite=True) == "made" and tool.made == 2


def test_made_differently_is_refused_unless_redo(tmp_path):
    tool = Tool(tmp_path)
    tool.run("a")
    with pytest.raises(UserError, match=r"out.txt exists but was made differently \(text differ\); use --overwrite"):
        tool.run("b")
    assert read_record(tool.record_path)["made_from"] == {"text": "a"}  # refused: nothing touched
    assert tool.run("b", redo=True) == "made"
    with open(tool.out) as handle:
        assert handle.read() == "b"
    assert read_record(tool.record_path)["made_from"] == {"text": "b"}


def test_output_without_record_is_not_kept(tmp_path):
    tool = Tool(tmp_path)
    tool.run("a")
    os.remove(tool.record_path)
    with pytest.raises(UserError, match="no record of how they were made"):
        tool.run("a")
    assert tool.run("a", redo=True) == "made" and read_record(tool.record_path) is not None


def test_edited_output_is_made_again(tmp_path, caplog):
    tool = Tool(tmp_path)
    tool.run("a")
    with open(tool.out, "w") as handle:
        handle.write("edited")
    with caplog.at_level(logging.WARNING):
        assert tool.run("a") == "made"
    assert "out.txt differ(s) from what its record vouches for" in caplog.text
    with open(tool.out) as handle:
        assert handle.read() == "a"


def test_a_held_lock_stops_the_run_before_anything(tmp_path):
    tool = Tool(tmp_path)
    tool.run("a")
    stale = temp_path_for(tool.out)
    with exclusive(tool.record_path, "the other run"):
        with pytest.raises(UserError, match="is being written by another run"):
            tool.run("b", overwrite=True)
    assert tool.made == 1 and os.path.exists(stale) and read_record(tool.record_path) is not None


def test_own_temporaries_are_removed_and_others_kept(tmp_path):
    tool = Tool(tmp_path)
    stale = [temp_path_for(tool.out), temp_path_for(tool.record_path)]
    theirs = [tmp_path / ".out.txt.note", tmp_path / ".other.txt.abcd1234.tmp", tmp_path / "out.txt.abcd1234.tmp"]
    for path in theirs:
        path.write_text("not ours")
    tool.run("a")
    assert not any(os.path.exists(path) for path in stale)
    assert all(path.read_text() == "not ours" for path in theirs)


def test_record_is_written_only_after_the_work_succeeds(tmp_path):
    tool = Tool(tmp_path)
    tool.run("a")

    def fail():
        assert read_record(tool.record_path) is None
        raise RuntimeError("work failed")

    with pytest.raises(RuntimeError):
        tool.run("b", redo=True, make=fail)
    assert not os.path.exists(tool.record_path)  # never vouches for what it did not see made
    with pytest.raises(UserError, match="no record"):
        tool.run("a")  # the old output is left, but no longer kept unchecked


def test_a_refusing_check_leaves_outputs_and_record_as_they_were(tmp_path):
    tool = Tool(tmp_path)
    tool.run("a")
    before = read_record(tool.record_path)

    def refuse():
        raise UserError("bad setting")

    with pytest.raises(UserError, match="bad setting"):
        tool.run("b", redo=True, check_first=refuse)
    assert read_record(tool.record_path) == before and tool.made == 1
    assert tool.run("a") == "kept"


def test_record_in_the_output_itself(tmp_path):
    """merge/extract style: no record file; `recorded` reads the identity from the output,
    `changed` checks its content, `make` writes both; expected may be computed under the lock."""
    out = str(tmp_path / "out.txt")
    lock = lock_path(out)

    def expected():
        assert os.path.exists(lock)
        return {"text": "a"}

    def recorded(previous):
        assert previous == {}
        if not os.path.exists(out):
            return None
        with open(out) as handle:
            return {"text": handle.read()}

    def make():
        with atomic_paths([out]) as (tmp,):
            with open(tmp, "w") as handle:
                handle.write("a")
        return out

    assert make_once([out], expected, make, what="x", lock=out, recorded=recorded) == out
    assert make_once([out], expected, make, what="x", lock=out, recorded=recorded, changed=lambda previous, paths: [],
                     kept=lambda previous: "kept") == "kept"
    assert sorted(os.listdir(tmp_path)) == ["out.txt"]  # no record file, no lock left


def test_outputs_listed_by_the_record_and_record_written_by_make(tmp_path):
    """translate style: the record lists the outputs; with `record=None` the helper neither
    discards nor writes the record (`make` replaces it right before it publishes)."""
    record_path = str(tmp_path / "r.json")
    listed = lambda previous: [str(tmp_path / name) for name in previous.get("outputs", [])]

    def make():
        assert os.path.exists(record_path) == made_before  # left to make
        from virnucpro.outputs import write_record

        with atomic_paths([str(tmp_path / "x.1")]) as (tmp,):
            open(tmp, "w").close()
            write_record(record_path, {"made_from": {"n": 1}, "outputs": ["x.1"], "sha256": {"x.1": file_sha256(tmp)}})
        return "made"

    made_before = False
    assert make_once(listed, {"n": 1}, make, what="x", lock=record_path, record_path=record_path) == "made"
    made_before = True
    assert make_once(listed, {"n": 1}, make, what="x", lock=record_path, record_path=record_path,
                     kept=lambda previous: previous["outputs"]) == ["x.1"]
    assert make_once(listed, {"n": 1}, make, what="x", lock=record_path, record_path=record_path,
                     overwrite=True) == "made"


def test_temporary_names_share_one_definition(tmp_path):
    tmp = temp_path_for(tmp_path / "a.b.h5")
    name = os.path.basename(tmp)
    assert temp_pattern("a.b.h5").fullmatch(name) and final_name(name) == "a.b.h5"
    assert final_name(".a.h5.virnucpro-partial") == "a.h5" and final_name(".models.partial") == "models"
    assert final_name("a.h5") == "a.h5" and final_name(".a.h5.note") == ".a.h5.note"
