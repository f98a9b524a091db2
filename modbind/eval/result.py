"""What a task returns: table rows, the protocol it followed, what it excluded and why, and rank lists."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Exclusion:
    """Entries left out of (part of) a task, with a message a user can act on."""

    reason: str
    """Short machine-readable kind, e.g. ``no_caption``, ``undecodable_image``."""
    message: str
    count: int
    scope: str = "all"
    """Which rows it affects: ``all`` or a language code."""
    examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "scope": self.scope, "count": self.count, "message": self.message,
                "examples": self.examples[:10]}


@dataclass
class TaskResult:
    """One task's numbers. ``rows`` are flat dicts (one per language × direction) ready for a table."""

    task: str
    label: str
    kind: str
    """``retrieval`` or ``classification``: which table layout and plots fit the rows."""
    rows: list[dict[str, Any]] = field(default_factory=list)
    protocol: dict[str, Any] = field(default_factory=dict)
    exclusions: list[Exclusion] = field(default_factory=list)
    ranks: dict[str, list[int]] = field(default_factory=dict)
    """Per-query 0-based ranks keyed ``"<language> <direction>"``, for the rank histogram."""
    messages: list[str] = field(default_factory=list)
    """Lines worth printing while running (gallery sizes, chance levels, skipped languages)."""

    def exclude(self, reason: str, message: str, count: int, *, scope: str = "all",
                examples: list[str] | None = None) -> None:
        if count <= 0:
            return
        self.exclusions.append(Exclusion(reason, message, count, scope, list(examples or [])[:10]))
        self.messages.append(f"excluded: {message}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "label": self.label,
            "kind": self.kind,
            "rows": self.rows,
            "protocol": self.protocol,
            "exclusions": [e.as_dict() for e in self.exclusions],
            "excluded_counts": self.excluded_counts(),
            "ranks0": self.ranks,
        }

    def excluded_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self.exclusions:
            key = item.reason if item.scope == "all" else f"{item.reason} [{item.scope}]"
            counts[key] = counts.get(key, 0) + item.count
        return counts
