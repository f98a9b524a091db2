"""The one rule for paths read from manifests and metadata: they stay under their data root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modbind.data.paths import is_under, resolve_under
from modbind.errors import DataError, UnsafePathError


def test_relative_paths_stay_under_the_root_after_collapsing_dots(tmp_path):
    root = tmp_path / "data"
    assert resolve_under(root, "audio/a.wav", where="m.jsonl:1") == root / "audio/a.wav"
    assert resolve_under(root, "audio/../b.wav", where="m.jsonl:1") == root / "b.wav"
    assert resolve_under(root, "./audio//c.wav", where="m.jsonl:1") == root / "audio/c.wav"
    for escaping in ("../secret.wav", "audio/../../secret.wav", "..", "a/b/../../../../etc/passwd"):
        with pytest.raises(UnsafePathError, match=rf"m.jsonl:7: path '{escaping}' leaves the data root {root}"):
            resolve_under(root, escaping, where="m.jsonl:7")
    assert issubclass(UnsafePathError, DataError)  # the CLI prints it as one `Error:` line


def test_absolute_paths_need_an_explicit_opt_in(tmp_path):
    with pytest.raises(UnsafePathError, match=r"m.jsonl:2: absolute path '/etc/passwd' refused.*--allow-absolute-paths"):
        resolve_under(tmp_path, "/etc/passwd", where="m.jsonl:2")
    with pytest.raises(UnsafePathError, match=r"data.train\[1\].allow_absolute_paths: true"):
        resolve_under(tmp_path, "/data/a.wav", where="m.jsonl:2", how_to_allow="data.train[1].allow_absolute_paths: true")
    with pytest.raises(UnsafePathError, match="never accepted here"):
        resolve_under(tmp_path, "/data/a.wav", where="meta.csv:4", how_to_allow=None)
    assert resolve_under(tmp_path, "/data/../data/a.wav", where="m", allow_absolute=True) == Path("/data/a.wav")


def test_symlinks_inside_the_root_are_followed_but_dots_never_climb_through_them(tmp_path):
    store = tmp_path / "big-store" / "clips"
    store.mkdir(parents=True)
    (store / "a.wav").write_bytes(b"a")
    (tmp_path / "big-store" / "b.wav").write_bytes(b"outside")
    root = tmp_path / "dataset"
    root.mkdir()
    os.symlink(store, root / "clips")  # a dataset folder of links into a big store
    (root / "b.wav").write_bytes(b"inside")
    assert resolve_under(root, "clips/a.wav", where="m").read_bytes() == b"a"
    # lexically 'clips/../b.wav' is <root>/b.wav, and that is the file opened, not the store's b.wav
    assert resolve_under(root, "clips/../b.wav", where="m").read_bytes() == b"inside"
    with pytest.raises(UnsafePathError):
        resolve_under(root, "clips/../../big-store/b.wav", where="m")
    assert is_under(root / "clips" / "a.wav", root) and not is_under(store / "a.wav", root)
