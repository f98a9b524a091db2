"""How many intra-op threads a training process uses on a CPU, and why.

torch starts one OpenMP thread per core. When they outnumber the cores free to them (other ranks on the same
machine, DataLoader workers decoding, other jobs), the threads spin waiting on each other: on a busy 2-core
machine a tiny run with 2 threads went 20-40x slower than with 1. So on a CPU, ``align`` gives each rank
its share of the cores minus what its DataLoader workers need, unless told otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ThreadChoice:
    """A thread count and where it came from (for the console and the run log)."""

    threads: int
    source: str

    def describe(self) -> str:
        return f"CPU threads: {self.threads} per process ({self.source}; override with train.threads or --threads)"


def share_of_cores(cores: int, local_ranks: int, workers: int) -> int:
    """Cores ÷ ranks on this machine, minus one per DataLoader worker of this rank, at least 1."""
    return max(1, cores // max(local_ranks, 1) - workers)


def choose_threads(setting: int | None, *, device: torch.device, workers: int,
                   env: Mapping[str, str] | None = None, cores: int | None = None) -> ThreadChoice | None:
    """The intra-op threads for this process, or None to leave torch's default (a GPU run sets none).

    In order: ``train.threads``; on a CPU, ``OMP_NUM_THREADS`` when set (torchrun sets 1 for several ranks);
    else :func:`share_of_cores` with the ranks on this machine from the launcher (``LOCAL_WORLD_SIZE`` of
    torchrun, ``LOCAL_SIZE`` of deepspeed) and the cores this process may run on.
    """
    env = os.environ if env is None else env
    if setting is not None:
        return ThreadChoice(setting, "train.threads")
    if device.type != "cpu":
        return None
    omp = env.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) >= 1:
        return ThreadChoice(int(omp), "OMP_NUM_THREADS")
    cores = cores if cores is not None else usable_cores()
    local_ranks = int(env.get("LOCAL_WORLD_SIZE") or env.get("LOCAL_SIZE") or 1)
    threads = share_of_cores(cores, local_ranks, workers)
    return ThreadChoice(threads, f"{cores} cores ÷ {local_ranks} rank(s) on this machine − {workers} DataLoader "
                                 "worker(s), at least 1")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. under taskset or a container's cpuset)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextmanager
def intra_op_threads(choice: ThreadChoice | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``choice`` inside the block, restored after (for API callers)."""
    before = torch.get_num_threads()
    if choice is not None:
        torch.set_num_threads(choice.threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
