"""The one rule for paths read from manifests and dataset metadata: they stay inside their data root.

A manifest (or a dataset's metadata file) may come from anyone; the folder it is read against comes from
the user (the recipe's ``root``, ``--root``, or the manifest's own folder). So:

- a relative path is joined to its root and must stay under it *lexically*: once ``.`` and ``..`` are
  collapsed it may not climb above the root. The collapsed path is what gets opened, so ``link/../x``
  opens ``<root>/x``, never a sibling of the link's target.
- symlinks are not resolved. A symlink *inside* the root is followed wherever it points: whoever placed
  it there chose to bring that data in (a dataset folder of links into a large store is common), while a
  manifest line can only name paths below the root, never add a link.
- an absolute path is refused unless the data source explicitly allows it (``allow_absolute_paths`` in a
  recipe or suite, ``--allow-absolute-paths`` on the command line).
"""

from __future__ import annotations

import os
from pathlib import Path

from modbind.errors import UnsafePathError

ALLOW_ABSOLUTE_FLAG = "--allow-absolute-paths"


def resolve_under(root: Path, relative: str | Path, *, where: str, allow_absolute: bool = False,
                  how_to_allow: str | None = ALLOW_ABSOLUTE_FLAG) -> Path:
    """``root / relative`` with ``..`` collapsed; an :class:`UnsafePathError` naming ``where`` when it leaves ``root``.

    ``where`` says where the path was read (``train.jsonl:12``, ``meta.csv:4``); ``how_to_allow`` is the
    setting that lets absolute paths through, for the error message (None: there is none).
    """
    text = os.fspath(relative)
    normalized = os.path.normpath(text)
    if os.path.isabs(normalized):
        if allow_absolute:
            return Path(normalized)
        hint = (f"if you trust this file, allow absolute paths with {how_to_allow}" if how_to_allow
                else "absolute paths are never accepted here")
        raise UnsafePathError(
            f"{where}: absolute path '{text}' refused: paths must be relative to the data root {root}; {hint}")
    if normalized == os.pardir or normalized.startswith(os.pardir + os.sep):
        raise UnsafePathError(
            f"{where}: path '{text}' leaves the data root {root}; a path may not climb out of the folder it "
            "is relative to (fix the file, or give a root that holds the data)")
    return Path(root) / normalized


def is_under(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies lexically inside ``folder`` (both made absolute; symlinks are not resolved)."""
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(folder))
    return not (relative == os.pardir or relative.startswith(os.pardir + os.sep))
