"""Run the demo's independent jobs (two anchors, then two alignments) side by side, one per CPU core.

The demo's models are too small for torch's intra-op threads to pay: on 2 cores one job runs barely
faster with 2 threads than with 1, so two single-threaded processes finish a pair of jobs in about
half the time of running them one after the other. Progress of every job shows in the parent's bars.
With one usable core (or ``workers=1``) the jobs run in this process, one after the other.
"""

from __future__ import annotations

import importlib
import multiprocessing
import multiprocessing.forkserver
import os
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

StepCallback = Callable[[int], None]
"""Called by a job with the number of steps it has finished so far."""


@dataclass(frozen=True)
class Job:
    """One unit of work: ``fn(*args, on_step=callback)``; ``fn`` must be importable (module level)."""

    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    steps: int
    """Total steps, for the progress bar."""


def usable_cores() -> int:
    """Cores this process may run on (affinity-aware where the platform tells)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class SideBySide:
    """A pool of worker processes kept for several rounds of jobs (imports are paid once per worker)."""

    def __init__(self, workers: int | None = None, *, progress: bool = True, preload: Sequence[str] = (),
                 log_file: Path | None = None):
        """``preload``: modules every job needs (heavy imports); where the platform has a fork server
        they are imported once there and each worker starts with them, else each worker imports them
        as it starts. Workers start at once, so this overlaps with whatever this process does before
        the first :meth:`run`. With ``log_file``, what the workers print (library notices, per-job
        summaries) goes there instead of under the progress bars."""
        self.workers = max(1, workers if workers is not None else min(2, usable_cores()))
        self.progress = progress
        self.preload = tuple(preload)
        self.log_file = log_file
        self.steps_done: dict[str, int] = {}
        """Steps each job has reported so far (what its progress bar shows)."""
        self._pool: ProcessPoolExecutor | None = None
        self._ticks: Any = None

    def __enter__(self) -> SideBySide:
        if self.workers > 1:
            pool = self._started_pool()
            if self._uses_fork_server:
                # the server imports the preloaded modules now; workers fork from it at the first run
                multiprocessing.forkserver.ensure_running()
            else:
                for _ in range(self.workers):
                    pool.submit(_ready)  # start (and import in) every worker now, not at the first run
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def run(self, jobs: list[Job]) -> dict[str, Any]:
        """Results by job name; the first job that fails raises its error here."""
        bars = {job.name: tqdm(total=job.steps, desc=job.name, unit="step", position=i, leave=True,
                               disable=not self.progress) for i, job in enumerate(jobs)}
        try:
            if self.workers == 1:
                return {job.name: job.fn(*job.args, on_step=self._progress_setter(job.name, bars)) for job in jobs}
            return self._run_in_pool(jobs, bars)
        finally:
            for bar in bars.values():
                bar.close()

    @property
    def _uses_fork_server(self) -> bool:
        return "forkserver" in multiprocessing.get_all_start_methods()

    def _started_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # Never plain fork: a copy of a process that has run torch can hang in its thread pool. The
            # fork server only imports the preloaded modules, so workers forked from it are clean.
            if self._uses_fork_server:
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(list(self.preload))
            else:
                context = multiprocessing.get_context("spawn")
            self._ticks = context.Queue()
            threads = max(1, usable_cores() // self.workers)
            if self.log_file is not None:
                self.log_file.parent.mkdir(parents=True, exist_ok=True)
                self.log_file.write_text("")  # this run's workers append to it
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_worker,
                                             initargs=(self._ticks, threads, self.log_file, self.preload))
        return self._pool

    def _run_in_pool(self, jobs: list[Job], bars: dict[str, tqdm]) -> dict[str, Any]:
        pool = self._started_pool()
        futures: dict[str, Future[Any]] = {job.name: pool.submit(_run_job, job) for job in jobs}
        while not all(f.done() for f in futures.values()):
            self._drain(bars, timeout=0.2)
        results = {}
        for name, future in futures.items():
            # The last ticks may still be in flight in the queue: each job also returns its final count.
            results[name], done = future.result()
            self._progress_setter(name, bars)(done)
        return results

    def _drain(self, bars: dict[str, tqdm], timeout: float) -> None:
        """Apply every progress tick waiting in the queue (blocking up to ``timeout`` for the first)."""
        try:
            name, done = self._ticks.get(timeout=timeout) if timeout else self._ticks.get_nowait()
            while True:
                if name in bars:
                    self._progress_setter(name, bars)(done)
                name, done = self._ticks.get_nowait()
        except queue.Empty:
            return

    def _progress_setter(self, name: str, bars: dict[str, tqdm]) -> StepCallback:
        def set_done(done: int) -> None:
            self.steps_done[name] = done
            bars[name].update(done - bars[name].n)

        return set_done


_TICKS: Any = None

LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT")
"""Process-group settings a worker must not inherit: each worker's jobs are standalone one-process runs."""


def _ready() -> None:
    """A no-op job: submitting one per worker makes the pool start them all."""


def _init_worker(ticks: Any, threads: int, log_file: Path | None, preload: tuple[str, ...]) -> None:
    global _TICKS
    _TICKS = ticks
    if log_file is not None:  # at the file-descriptor level, so C extensions and early loggers follow
        log = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
    for name in LAUNCHER_ENV:  # e.g. left by an earlier in-process run in the parent: it owns that port
        os.environ.pop(name, None)
    import torch

    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # what `align` reads for its own thread choice
    for module in preload:  # already imported where a fork server preloaded them
        importlib.import_module(module)


def _run_job(job: Job) -> tuple[Any, int]:
    """``(result, steps reported last)`` of one job, with progress sent to the parent as it goes."""
    last = [0]

    def tick(done: int) -> None:
        last[0] = done
        _TICKS.put((job.name, done))

    return job.fn(*job.args, on_step=tick), last[0]
