"""The demo's result table: one row per metric, one column per condition, chance beside them.

Written three ways into the output folder: ``demo_report.json`` (every number plus the settings),
``demo_report.md`` (the table the command prints) and ``demo_report.png`` (grouped bars).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from modbind.atomic import atomic_path, atomic_write

CONDITIONS: tuple[tuple[str, str], ...] = (
    ("aligned", "aligned (multilingual anchor)"),
    ("en_only_anchor", "control: English-only anchor"),
    ("untrained", "control: untrained encoder"),
)
"""Column keys and headers, the method first."""


@dataclass
class Row:
    """One metric: its value under each condition and what a random ranking scores."""

    key: str
    """Stable name, e.g. ``zs_single_pt`` (see :func:`modbind.demo.scoring.measures`)."""
    metric: str
    """Title shown in the table."""
    group: str
    chance: float
    values: dict[str, float]
    ceiling: float | None = None
    """The anchor's own text→image score for the same query, where one exists (what audio can inherit)."""


@dataclass
class DemoReport:
    rows: list[Row]
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def row(self, key: str) -> Row:
        for row in self.rows:
            if row.key == key:
                return row
        raise KeyError(f"no metric '{key}' in the demo report (have: {[r.key for r in self.rows]})")

    def value(self, key: str, condition: str = "aligned") -> float:
        return self.row(key).values[condition]


def markdown_table(report: DemoReport) -> str:
    """The table as GitHub Markdown; percentages with one decimal."""
    headers = ["metric", "chance", *[title for _, title in CONDITIONS], "anchor text→image"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    group = None
    for row in report.rows:
        if row.group != group:
            group = row.group
            lines.append(f"| **{group}** |" + " |" * (len(headers) - 1))
        cells = [row.metric, _pct(row.chance), *[_pct(row.values.get(key)) for key, _ in CONDITIONS],
                 _pct(row.ceiling)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def write_report(report: DemoReport, out_dir: Path) -> dict[str, Path]:
    """Write JSON, Markdown and PNG atomically into ``out_dir``; returns the three paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "demo_report.json", "markdown": out_dir / "demo_report.md",
             "png": out_dir / "demo_report.png"}
    data = {"rows": [asdict(r) for r in report.rows], "settings": report.settings, "timings": report.timings,
            "notes": report.notes, "units": "percent"}
    atomic_write(paths["json"], json.dumps(data, indent=1, ensure_ascii=False, default=str))
    body = ["# modbind demo: emergent alignment on a synthetic world", "", markdown_table(report), ""]
    body += [f"- {note}" for note in report.notes]
    if report.timings:
        body += ["", "Timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report.timings.items())]
    atomic_write(paths["markdown"], "\n".join(body) + "\n")
    _plot(report.rows, paths["png"])
    return paths


def _plot(rows: Sequence[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(max(10, 0.8 * len(rows) + 3), 5))
    x = np.arange(len(rows))
    width = 0.8 / len(CONDITIONS)
    for i, (key, title) in enumerate(CONDITIONS):
        ax.bar(x + (i - (len(CONDITIONS) - 1) / 2) * width, [r.values.get(key, 0.0) for r in rows], width, label=title)
    ax.scatter(x, [r.chance for r in rows], marker="_", s=400, color="black", label="chance", zorder=3)
    ax.set_xticks(x, [r.metric for r in rows], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("modbind demo: audio and depth, each aligned on its own to English captions only")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
