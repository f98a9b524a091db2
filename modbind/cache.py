"""Where modbind keeps what it can rebuild or download again: one root for every cache."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$MODBIND_CACHE_DIR``, else the platform's user cache folder for modbind.

    Each cache lives in its own sub-folder (``eval/``, ``demo/``, ``checkpoints/``), so one variable
    moves them all (e.g. onto a scratch disk) and one folder holds everything that is safe to delete.
    """
    env = os.environ.get("MODBIND_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("modbind"))
