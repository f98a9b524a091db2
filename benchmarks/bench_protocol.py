"""The line protocol between ``bench_train.py`` and its step workers.

A worker builds one training step, then answers commands read from stdin, one per line: ``step`` runs
one timed step, any other name calls the matching extra (e.g. ``flops``, ``finish``). Replies are single
lines ``@@ <json>`` on stdout, so whatever libraries print there is skipped by the driver. The driver
keeps several workers alive and asks them for steps in turn, which interleaves the variants while each
keeps its own process (and its own peak memory).

No modbind import here: the LAION-CLAP peer (``bench_peer_clap.py``) runs in its own environment.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

PREFIX = "@@ "


def reply(payload: Any) -> None:
    print(PREFIX + json.dumps(payload), flush=True)


def timed(step: Callable[[], None], sync: Callable[[], None]) -> dict[str, float]:
    """Wall and process CPU seconds of one step (device work included: ``sync`` waits for it)."""
    sync()
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    sync()
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def serve(step: Callable[[], None], sync: Callable[[], None], extras: dict[str, Callable[[], Any]],
          ready: dict[str, Any] | None = None) -> None:
    """Answer the driver until it sends ``finish`` (or closes stdin)."""
    reply({"ready": True, **(ready or {})})
    for line in sys.stdin:
        command = line.strip()
        if command == "step":
            reply(timed(step, sync))
        elif command in extras:
            result = extras[command]()
            reply(result)
            if command == "finish":
                return
        else:
            reply({"error": f"unknown command {command!r}"})
