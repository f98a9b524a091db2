"""Completion markers of the demo's cached artefacts: a JSON file whose presence means "built, reuse it"."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_marker(path: Path) -> dict[str, Any] | None:
    """The marker's content, or None when it is absent or unreadable (the artefact is rebuilt then)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


