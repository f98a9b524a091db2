"""Atomic writes: readers see the old content or the new, never a partial file or a stray temp file."""

from __future__ import annotations

import json

import pytest

from modbind.atomic import atomic_open, atomic_path, atomic_write, temp_path_for, write_json_atomic


def test_write_replaces_content_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "sub" / "card.json"
    write_json_atomic(target, {"a": 1, "name": "cão"})
    write_json_atomic(target, {"a": 2, "name": "cão"})
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": 2, "name": "cão"}
    assert [p.name for p in target.parent.iterdir()] == ["card.json"]


def test_failure_mid_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "manifest.jsonl"
    atomic_write(target, "old\n")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_open(target) as handle:
            handle.write("half a line")
            raise RuntimeError("boom")
    assert target.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.jsonl"]


def test_writer_that_never_creates_the_temp_file_fails_cleanly(tmp_path):
    target = tmp_path / "weights.safetensors"
    with pytest.raises(FileNotFoundError):
        with atomic_path(target):
            pass  # a library call that silently wrote nothing
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_concurrent_writers_get_distinct_temp_files(tmp_path):
    target = tmp_path / "x.json"
    names = {temp_path_for(target).name for _ in range(50)}
    assert len(names) == 50 and all(n.startswith(".x.json.") and n.endswith(".tmp") for n in names)
