"""Atomic, durable file writes: a reader sees the old file or the new one, never half of either.

Every file modbind publishes (exports, cards, checkpoints' markers, manifests, caches, reports) goes
through :func:`atomic_write`: the bytes land in a temporary file *in the same folder* with a name unique
to this process and call (so concurrent writers never share a temp file), are flushed and fsynced, and
only then renamed over the target; the folder is fsynced after the rename so the new name survives a
power cut. A failure leaves the target untouched and no temp file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened for fsync
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (a checkpoint folder before it is published)."""
    root = Path(root)
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            with open(os.path.join(folder, name), "rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(Path(folder))


def temp_path_for(path: Path) -> Path:
    """A hidden sibling of ``path`` no other writer will pick (pid + random suffix)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def publish(tmp: Path, path: Path, *, durable: bool = True) -> Path:
    """Rename the finished ``tmp`` over ``path``; with ``durable``, fsync the data first and the folder after."""
    if durable:
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
    os.replace(tmp, path)
    if durable:
        fsync_dir(Path(path).parent)
    return Path(path)


@contextlib.contextmanager
def atomic_path(path: Path, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temp path to write ``path``'s new content to (e.g. by a library's ``save(file)``).

    On normal exit the temp file is published over ``path`` (:func:`publish`); on error it is removed.
    ``durable=False`` skips the fsyncs for files that are cheap to regenerate (still atomic).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        yield tmp
        publish(tmp, path, durable=durable)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """``open(path, mode)`` whose content appears at ``path`` only when the block ends without error."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle


def atomic_write(path: Path, data: str | bytes, *, durable: bool = True) -> Path:
    """Replace ``path`` with ``data`` (text is written as UTF-8) atomically (and durably)."""
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def write_json_atomic(path: Path, data: Any, *, durable: bool = True) -> Path:
    """Pretty-printed UTF-8 JSON (non-ASCII kept), written with :func:`atomic_write`."""
    return atomic_write(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", durable=durable)
