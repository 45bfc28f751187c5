"""Outputs appear whole or not at all: temporary siblings renamed into place, all together."""

from __future__ import annotations

import os

import pytest

from pipeline.lib import atomic
from pipeline.lib.atomic import atomic_path, atomic_paths, replaced_in_place, temporary_path, write_json


def test_a_file_appears_only_when_the_block_succeeds(tmp_path):
    final = tmp_path / "deep/out.txt"
    with atomic_path(final) as temporary:
        temporary.write_text("new")
        assert not final.exists() and temporary == temporary_path(final)
    assert final.read_text() == "new" and not temporary.exists()


def test_a_failed_block_keeps_the_old_output_and_leaves_no_temporary(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old").write_text("old")
    with pytest.raises(RuntimeError), atomic_path(final) as temporary:
        temporary.mkdir()
        (temporary / "new").write_text("new")
        raise RuntimeError("stage failed")
    assert [path.name for path in final.iterdir()] == ["old"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]


def test_several_outputs_replace_the_old_ones_together(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b"
    write_json(first, {"run": 1})
    second.mkdir()
    with atomic_paths(first, second) as (a, b):
        a.write_text('{"run": 2}')
        b.mkdir()
        (b / "file").write_text("2")
    assert first.read_text() == '{"run": 2}' and (second / "file").read_text() == "2"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.json", "b"]


@pytest.mark.parametrize("failing", [0, 1])
def test_a_failed_rename_of_either_output_leaves_both_as_they_were(tmp_path, monkeypatch, failing):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("old a")
    second.write_text("old b")
    real_replace = os.replace

    def replace(source, destination):
        if os.fspath(source) == os.fspath(temporary_path((first, second)[failing])):
            raise OSError(28, "No space left on device")
        real_replace(source, destination)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OSError), atomic_paths(first, second) as (a, b):
        a.write_text("new a")
        b.write_text("new b")
    assert (first.read_text(), second.read_text()) == ("old a", "old b")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_replaced_in_place_puts_the_previous_output_back_after_a_failure(tmp_path):
    live = tmp_path / "curves"
    live.mkdir()
    (live / "epoch").write_text("last good run")
    with pytest.raises(KeyboardInterrupt), replaced_in_place(live) as folder:
        folder.mkdir()
        (folder / "epoch").write_text("interrupted run")
        raise KeyboardInterrupt
    assert (live / "epoch").read_text() == "last good run"
