"""SideBySide: the demo's jobs in worker processes, with results by name, progress and errors carried back."""

from __future__ import annotations

import os

import pytest

from modbind.demo.parallel import Job, SideBySide


def counting_job(steps: int, *, on_step) -> tuple[int, int]:
    for done in range(1, steps + 1):
        on_step(done)
    return os.getpid(), steps


def failing_job(message: str, *, on_step) -> None:
    on_step(1)
    raise ValueError(message)


def test_jobs_run_in_worker_processes_and_report_progress() -> None:
    with SideBySide(2, progress=False) as side_by_side:
        first = side_by_side.run([Job("a", counting_job, (5,), 5), Job("b", counting_job, (7,), 7)])
        second = side_by_side.run([Job("c", counting_job, (3,), 3)])  # the pool serves a later round too
    assert {name: steps for name, (_, steps) in first.items()} == {"a": 5, "b": 7}
    assert all(pid != os.getpid() for pid, _ in [*first.values(), *second.values()])
    assert side_by_side.steps_done == {"a": 5, "b": 7, "c": 3}


def test_one_worker_runs_the_jobs_in_this_process() -> None:
    with SideBySide(1, progress=False) as side_by_side:
        results = side_by_side.run([Job("a", counting_job, (2,), 2), Job("b", counting_job, (4,), 4)])
    assert {pid for pid, _ in results.values()} == {os.getpid()}
    assert side_by_side.steps_done == {"a": 2, "b": 4}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_job_raises_its_own_error_here(workers: int) -> None:
    with SideBySide(workers, progress=False) as side_by_side:
        with pytest.raises(ValueError, match="bad clip 7"):
            side_by_side.run([Job("ok", counting_job, (2,), 2), Job("bad", failing_job, ("bad clip 7",), 1)])


def launcher_env(*, on_step) -> dict[str, str]:
    on_step(1)
    return {name: os.environ[name] for name in ("RANK", "MASTER_PORT") if name in os.environ}


def test_workers_do_not_inherit_a_process_group_from_this_process(monkeypatch) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("MASTER_PORT", "29500")  # as an earlier in-process training run leaves them
    with SideBySide(2, progress=False) as side_by_side:
        seen = side_by_side.run([Job("a", launcher_env, (), 1), Job("b", launcher_env, (), 1)])
    assert seen == {"a": {}, "b": {}}


def noisy_job(text: str, *, on_step) -> str:
    print(text, flush=True)
    os.write(2, b"from C code\n")
    on_step(1)
    return text


def test_worker_output_goes_to_the_log_file(tmp_path, capfd) -> None:
    log = tmp_path / "workers.log"
    log.write_text("from an earlier run\n")
    with SideBySide(2, progress=False, log_file=log) as side_by_side:
        assert side_by_side.run([Job("a", noisy_job, ("hello from a",), 1)]) == {"a": "hello from a"}
    text = log.read_text()
    assert "hello from a" in text and "from C code" in text and "earlier run" not in text
    assert "hello from a" not in capfd.readouterr().out


def imported(module: str, *, on_step) -> bool:
    import sys

    on_step(1)
    return module in sys.modules


@pytest.mark.parametrize("fork_server", [True, False], ids=["fork-server", "spawn"])
def test_preloaded_modules_are_there_before_the_first_job(monkeypatch, fork_server: bool) -> None:
    monkeypatch.setattr(SideBySide, "_uses_fork_server", property(lambda self: fork_server))
    # two stdlib modules nothing else here imports (a fork server started earlier keeps its own preload,
    # so the worker imports the list itself as well)
    with SideBySide(2, progress=False, preload=["tabnanny"]) as side_by_side:
        seen = side_by_side.run([Job("preloaded", imported, ("tabnanny",), 1),
                                 Job("not preloaded", imported, ("mailbox",), 1)])
    assert seen == {"preloaded": True, "not preloaded": False}
