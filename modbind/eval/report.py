"""The evaluation report: ``report.json`` (every number + protocol), ``report.md`` (paper-style tables)
and PNG plots (per-language bars for each metric, retrieval-rank histograms), all written atomically."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import modbind
from modbind.atomic import atomic_path, atomic_write
from modbind.eval.result import TaskResult

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PLOTS_DIR = "plots"
RETRIEVAL_COLUMNS = ("R@1", "R@5", "R@10", "mAP@10", "median rank", "mean rank", "gallery", "chance R@1")
CLASSIFICATION_COLUMNS = ("top-1", "top-5", "top-1 (mean of folds)", "top-5 (mean of folds)", "classes", "items",
                          "chance top-1")
BAR_METRICS = {"retrieval": ("R@1", "R@5", "R@10", "mAP@10"), "classification": ("top-1", "top-5")}


def build_report(results: Sequence[TaskResult], *, model: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """The JSON document: model card, run settings, and every task's rows, protocol and exclusions."""
    return {
        "format": "modbind-eval-report",
        "modbind_version": modbind.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model,
        "settings": settings,
        "tasks": [r.as_dict() for r in results],
    }


def write_report(out_dir: Path, results: Sequence[TaskResult], report: dict[str, Any]) -> dict[str, Path]:
    """Write JSON, Markdown and plots under ``out_dir``; returns what was written."""
    out_dir = Path(out_dir)
    (out_dir / PLOTS_DIR).mkdir(parents=True, exist_ok=True)
    plots: dict[str, list[str]] = {}
    for index, result in enumerate(results):
        stem = f"{index:02d}-{_slug(result.label)}"
        plots[result.label] = [str(p.relative_to(out_dir)) for p in write_plots(out_dir / PLOTS_DIR, stem, result)]
    report = {**report, "plots": plots}
    atomic_write(out_dir / REPORT_JSON, json.dumps(report, indent=2, ensure_ascii=False, default=_json_default) + "\n")
    atomic_write(out_dir / REPORT_MD, markdown(results, report))
    return {"json": out_dir / REPORT_JSON, "markdown": out_dir / REPORT_MD, "plots": out_dir / PLOTS_DIR}


def markdown(results: Sequence[TaskResult], report: dict[str, Any]) -> str:
    model = report.get("model", {})
    lines = ["# modbind evaluation", ""]
    name = model.get("path") or ("untrained" if model.get("untrained") else "anchor only")
    lines.append(f"- model: `{name}` (plugin `{model.get('card', {}).get('plugin', '-')}`, "
                 f"anchor `{model.get('card', {}).get('anchor_identity', '-')}`)" + (" — **untrained control**"
                                                                                   if model.get("untrained") else ""))
    settings = report.get("settings", {})
    lines.append(f"- tie policy: `{settings.get('tie_policy')}`; units: percent, ranks 1-based")
    lines.append("")
    for result in results:
        lines.extend(_task_section(result, report.get("plots", {}).get(result.label, [])))
    return "\n".join(lines).rstrip() + "\n"


def _task_section(result: TaskResult, plots: list[str]) -> list[str]:
    protocol = result.protocol
    lines = [f"## {result.label} (`{result.task}`)", ""]
    facts = [("manifest", protocol.get("manifest")), ("entries", protocol.get("manifest_entries")),
             ("evaluated", protocol.get("evaluated_items", protocol.get("evaluated_pairs"))),
             ("match", protocol.get("match")), ("crop", protocol.get("crop_policy"))]
    for language, templates in (protocol.get("templates") or {}).items():
        facts.append((f"template [{language}]", " | ".join(templates)))
    lines.extend(f"- {name}: {value}" for name, value in facts if value is not None)
    lines.append("")
    header, rows = metric_table(result)
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    lines.extend("| " + " | ".join(cells) + " |" for cells in rows)
    lines.append("")
    if result.exclusions:
        lines.append("Excluded:")
        lines.extend(f"- {e.count} × {e.reason}" + (f" [{e.scope}]" if e.scope != "all" else "") + f": {e.message}"
                     for e in result.exclusions)
        lines.append("")
    lines.extend(f"![{Path(p).stem}]({p})" for p in plots)
    if plots:
        lines.append("")
    return lines


def metric_table(result: TaskResult) -> tuple[list[str], list[list[str]]]:
    """The task's table as text cells: a row per language × direction, then one row per fold under a
    classification row that has folds. ``report.md`` and the console both print exactly this."""
    columns = RETRIEVAL_COLUMNS if result.kind == "retrieval" else CLASSIFICATION_COLUMNS
    rows: list[list[str]] = []
    for row in result.rows:
        if "skipped" in row:
            rows.append([str(row["language"]), f"skipped: {row['skipped']}", *[""] * len(columns)])
            continue
        rows.append([str(row["language"]), str(row.get("direction", "")), *[_cell(row.get(c)) for c in columns]])
        sizes = row.get("fold sizes", {})
        for fold, accuracies in (row.get("per fold") or {}).items():
            fold_values = {**accuracies, "items": sizes.get(fold)}
            rows.append(["", f"fold {fold}", *[_cell(fold_values[c]) if c in fold_values else "" for c in columns]])
    return ["language", "direction", *columns], rows


def console_table(result: TaskResult) -> list[str]:
    """:func:`metric_table` as aligned plain-text lines for a terminal."""
    header, rows = metric_table(result)
    widths = [max(len(cells[i]) for cells in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip() for cells in [header, *rows]]


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def write_plots(folder: Path, stem: str, result: TaskResult) -> list[Path]:
    """Per-language bars (one panel per metric, one bar colour per direction, chance dashed) and rank histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    rows = [r for r in result.rows if "skipped" not in r]
    metrics = [m for m in BAR_METRICS.get(result.kind, ()) if any(m in r for r in rows)]
    if rows and metrics:
        languages = list(dict.fromkeys(r["language"] for r in rows))
        directions = list(dict.fromkeys(r.get("direction", "") for r in rows))
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics) + 1, 3.4), squeeze=False)
        width = 0.8 / max(len(directions), 1)
        for ax, metric in zip(axes[0], metrics):
            for d, direction in enumerate(directions):
                values = [next((r[metric] for r in rows if r["language"] == lang and r.get("direction", "") == direction
                                and metric in r), math.nan) for lang in languages]
                xs = [i + d * width for i in range(len(languages))]
                ax.bar(xs, values, width, label=direction)
                chance = [next((r.get(f"chance {metric}", math.nan) for r in rows if r["language"] == lang
                                and r.get("direction", "") == direction), math.nan) for lang in languages]
                ax.hlines(chance, [x - width / 2 for x in xs], [x + width / 2 for x in xs], colors="black",
                          linestyles="dashed", linewidth=1, label="chance" if d == 0 and metric == metrics[-1] else None)
            ax.set_xticks([i + width * (len(directions) - 1) / 2 for i in range(len(languages))], languages)
            ax.set_title(metric)
            ax.set_ylim(0, 100)
        axes[0][0].set_ylabel("percent")
        axes[0][-1].legend(fontsize="small")
        fig.suptitle(result.label)
        fig.tight_layout()
        written.append(_save(fig, folder / f"{stem}-languages.png"))
        plt.close(fig)
    if result.ranks and result.kind == "retrieval":
        fig, ax = plt.subplots(figsize=(6, 3.6))
        largest = max((max(r) for r in result.ranks.values() if r), default=0) + 1
        bins = _rank_bins(largest)
        for key, ranks in result.ranks.items():
            ax.hist([r + 1 for r in ranks], bins=bins, histtype="step", label=key)
        ax.set_xscale("log")
        ax.set_xlabel("rank of the first relevant item (1 = top)")
        ax.set_ylabel("queries")
        ax.set_title(f"{result.label}: retrieval ranks")
        if len(result.ranks) <= 12:
            ax.legend(fontsize="x-small")
        fig.tight_layout()
        written.append(_save(fig, folder / f"{stem}-ranks.png"))
        plt.close(fig)
    return written


def _rank_bins(largest: int) -> list[float]:
    edges = [0.5]
    while edges[-1] < largest + 0.5:
        edges.append(max(edges[-1] + 1, edges[-1] * 1.5))
    return edges


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "task"


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
