"""Resumable checkpoints on disk: their names, which one to resume from, and how many to keep.

A run folder's ``checkpoints/`` holds one folder per saved step (``step00000012``) and a ``latest`` file
naming the newest one. The files inside are DeepSpeed's; :mod:`modbind.train.engine` writes and reads
them. This module only looks at folder names and zip directories: it never unpickles anything.
"""

from __future__ import annotations

import re
import shutil
import sys
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

from modbind.errors import CheckpointError

LATEST_FILE = "latest"
_TAG = re.compile(r"step(\d+)")


def checkpoint_tag(step: int) -> str:
    """The folder name of the checkpoint written after optimizer step ``step``."""
    return f"step{step:08d}"


def latest_tag(directory: Path) -> str | None:
    """The checkpoint ``latest`` names, or None before the first save."""
    marker = Path(directory) / LATEST_FILE
    return marker.read_text(encoding="utf-8").strip() or None if marker.is_file() else None


def checkpoint_tags(directory: Path) -> list[str]:
    """The checkpoint folders in ``directory``, oldest first."""
    found = [p.name for p in Path(directory).iterdir() if p.is_dir() and _TAG.fullmatch(p.name)]
    return sorted(found, key=tag_step)


def prune_checkpoints(directory: Path, keep: int) -> list[str]:
    """Delete all but the ``keep`` newest checkpoints up to the one ``latest`` names; returns what was deleted.

    Checkpoints newer than ``latest`` (left damaged by a crash, before a run resumed from an earlier one)
    are neither counted nor touched: the resumed run overwrites them when it reaches their step.
    """
    latest = latest_tag(directory)
    tags = checkpoint_tags(directory)
    if latest not in tags:
        return []
    up_to_latest = tags[: tags.index(latest) + 1]
    doomed = up_to_latest[: max(len(up_to_latest) - keep, 0)]
    for tag in doomed:
        shutil.rmtree(Path(directory) / tag, ignore_errors=True)
    return doomed


def complete_checkpoint(directory: Path, tag: str) -> str:
    """``tag`` if its files are whole, else the newest complete checkpoint before it (with a warning).

    A checkpoint cut short by a crash or power cut while it was written costs the steps since the one
    before it, never the run.
    """
    problem = _damage(directory / tag)
    if problem is None:
        return tag
    earlier = [t for t in checkpoint_tags(directory) if tag_step(t) < tag_step(tag)]
    for candidate in reversed(earlier):
        if _damage(directory / candidate) is None:
            tqdm.write(f"warning: checkpoint {directory / tag} is damaged ({problem}); resuming from "
                       f"{directory / candidate} instead", file=sys.stderr)
            return candidate
    raise CheckpointError(f"checkpoint {directory / tag} is damaged ({problem}) and no earlier complete checkpoint "
                          f"is left in {directory}; start a new run with --out")


def tag_step(tag: str) -> int:
    """The optimizer step a checkpoint tag was written after (0 for a name that is not a tag)."""
    match = _TAG.fullmatch(tag)
    return int(match.group(1)) if match else 0


def _damage(folder: Path) -> str | None:
    """Why a checkpoint folder cannot be resumed from, or None when its files are whole.

    torch writes zip archives whose directory sits at the end, so a file cut short has none; the CRCs
    catch damage inside a file.
    """
    if not folder.is_dir():
        return "its folder is missing"
    files = sorted(folder.glob("*.pt"))
    if not any(f.name.startswith("mp_rank_") for f in files):
        return "it has no model state file"
    for file in files:
        try:
            with zipfile.ZipFile(file) as archive:
                broken = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            return f"{file.name} is truncated or not a torch checkpoint: {err}"
        if broken is not None:
            return f"{file.name} is corrupt (bad CRC in {broken})"
    return None
