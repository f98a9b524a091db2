"""Wall time of ``modbind demo`` against its budgets (full ≤ 180 s, ``--quick`` ≤ 60 s on 2 CPU cores).

Each mode runs twice through the real CLI in a fresh process: cold (an empty cache folder, so the world
and both anchors are built) and warm (the same cache, so only alignment and evaluation run). The
per-stage times come from the report the demo writes. Beside wall time it reports the CPU time (user +
sys) of the whole demo process tree, workers and fork server included: on a machine shared with other
work, wall time grows with the load while CPU time barely moves, so CPU time is what to compare
between two versions measured at different moments.

    python benchmarks/bench_demo.py                 # both modes, ~5 min on 2 cores
    python benchmarks/bench_demo.py --modes quick

Prints a Markdown table for benchmarks/README.md (and JSON with --json FILE).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BUDGET_S = {"full": 180.0, "quick": 60.0}
PR_SET_CHILD_SUBREAPER = 36


def adopt_orphans() -> bool:
    """Make this process the reaper of every descendant (Linux), so the demo's fork server and workers,
    which outlive their parent, are waited for here and their CPU time counts in RUSAGE_CHILDREN."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap_descendants() -> None:
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_demo(mode: str, cache: Path, out: Path, seed: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "modbind.cli.main", "demo", "--seed", str(seed), "--out", str(out),
               "--cache-dir", str(cache)] + (["--quick"] if mode == "quick" else [])
    cpu_before = children_cpu_s()
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ})
    wall = time.perf_counter() - start
    reap_descendants()
    cpu = children_cpu_s() - cpu_before
    if done.returncode != 0:
        sys.exit(f"modbind demo ({mode}) failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    report = json.loads((out / "demo_report.json").read_text(encoding="utf-8"))
    return {"wall_s": wall, "cpu_s": cpu, "stages": report["timings"],
            "jobs_side_by_side": report["settings"].get("side_by_side_jobs")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="quick,full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    whole_tree = adopt_orphans()
    results: dict[str, dict[str, Any]] = {}
    for mode in args.modes.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            cache = Path(tmp) / "cache"
            results[mode] = {state: run_demo(mode, cache, Path(tmp) / f"out-{state}", args.seed)
                             for state in ("cold", "warm")}
        cold, warm = results[mode]["cold"], results[mode]["warm"]
        print(f"{mode}: cold {cold['wall_s']:.1f} s (CPU {cold['cpu_s']:.1f} s), warm {warm['wall_s']:.1f} s "
              f"(CPU {warm['cpu_s']:.1f} s)", flush=True)
    print()
    if not whole_tree:
        print("(CPU time covers only the processes the demo waits for: this platform has no child subreaper)")
    print("| mode | cold s | budget s | cold / budget | cold stages (world / anchors / align / evaluate) | cold CPU s "
          "| warm s | warm CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    for mode, runs in results.items():
        cold, warm = runs["cold"], runs["warm"]
        stages = " / ".join(f"{cold['stages'].get(k, 0):.0f}" for k in ("world", "anchors", "align", "evaluate"))
        print(f"| {mode} | {cold['wall_s']:.1f} | {BUDGET_S[mode]:.0f} | {cold['wall_s'] / BUDGET_S[mode]:.2f} "
              f"| {stages} | {cold['cpu_s']:.1f} | {warm['wall_s']:.1f} | {warm['cpu_s']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"cpu_cores": os.cpu_count(), "whole_tree_cpu": whole_tree,
                                         "results": results}, indent=2))


if __name__ == "__main__":
    main()
