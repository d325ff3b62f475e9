"""Launches on this machine: results per request, and fencing of the task folder."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from hsm.engine.lifecycle import Next, decide
from hsm.jobscript import GuardSettings, read_status
from hsm.sources.base import JobHandle, LaunchRequest, SweepContext
from hsm.sources.local import LocalSource, find_wrapper
from hsm.states import Cause

GUARD = GuardSettings(
    project_min_free=0, task_min_free=0, check_interval=0, warn_below=0, kill_below=0
)


def context(tmp_path: Path, argv: list[str]) -> SweepContext:
    def argv_for(params: Mapping[str, Any], task_dir: str | None, python: str) -> list[str]:
        return argv

    return SweepContext(
        sweep_id="s",
        sweep_dir=str(tmp_path / "sweep"),
        project_root=str(tmp_path),
        project_name="p",
        guard=GUARD,
        wandb_group="s",
        argv_for=argv_for,
    )


def request(number: int, nonce: str) -> LaunchRequest:
    return LaunchRequest(
        number=number, attempt=1, params={}, slot=0, attempt_id=number, nonce=nonce
    )


def wait_running(folder: Path) -> None:
    deadline = time.monotonic() + 30
    while read_status(folder) is None and time.monotonic() < deadline:
        time.sleep(0.02)


def wait_final(folder: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = read_status(folder)
        if status is not None and status.terminal:
            return
        time.sleep(0.02)
    raise AssertionError(f"no final status in {folder}")


def test_a_failed_request_does_not_fail_the_others(tmp_path: Path) -> None:
    ctx = context(tmp_path, ["true"])
    source = LocalSource(slots=3)
    tasks = tmp_path / "sweep" / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "task_0002").write_text("a file where the task folder should be")

    async def go() -> list[JobHandle | Exception]:
        await source.prepare(ctx=ctx)
        out = await source.launch(ctx=ctx, requests=[request(n, f"{n:016x}") for n in (1, 2, 3)])
        await source.close()
        return out

    results = asyncio.run(go())
    assert isinstance(results[0], JobHandle) and isinstance(results[2], JobHandle)
    assert isinstance(results[1], OSError)
    for n in (1, 3):
        wait_final(tasks / f"task_000{n}")
        status = read_status(tasks / f"task_000{n}")
        assert status is not None and status.nonce == f"{n:016x}"  # fenced identity


def test_a_resumed_controller_finds_a_wrapper_it_never_heard_of(tmp_path: Path) -> None:
    # The controller died after starting the wrapper and before recording its pid: the
    # wrapper is found by its folder, so the attempt is not taken as never started.
    ctx = context(tmp_path, ["sleep", "30"])
    source = LocalSource(slots=1)

    async def go() -> list[JobHandle | Exception]:
        await source.prepare(ctx=ctx)
        out = await source.launch(ctx=ctx, requests=[request(1, "ab")])
        await source.close()
        return out

    [handle] = asyncio.run(go())
    assert isinstance(handle, JobHandle)
    folder = Path(handle.task_dir)
    pid = int(handle.job_id or 0)
    # The wrapper is found once its process runs the wrapper (after the exec).
    deadline = time.monotonic() + 30
    while find_wrapper(handle.task_dir) != pid and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert find_wrapper(handle.task_dir) == pid
        fresh = LocalSource(slots=1)
        blind = JobHandle(
            source="local",
            number=1,
            attempt=1,
            task_dir=handle.task_dir,
            confirmed=False,
            nonce="ab",
        )
        [result] = asyncio.run(fresh.poll(handles=[blind])).values()
        assert result.facts is not None
        assert result.facts.received is True and result.facts.wrapper_alive is True
        other = JobHandle(
            source="local",
            number=1,
            attempt=1,
            task_dir=handle.task_dir,
            confirmed=False,
            nonce="cd",
        )
        [result] = asyncio.run(fresh.poll(handles=[other])).values()
        assert result.facts is not None and result.facts.received is False
    finally:
        wait_running(folder)  # past the wrapper's start, where it sets its traps
        os.kill(int(handle.job_id or 0), signal.SIGTERM)  # the wrapper stops its task
        wait_final(folder)
    assert json.loads((folder / "status.json").read_text())["cause"] == "cancelled"


def test_a_wrapper_that_ends_between_two_looks_is_finished_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The poll reads the status (running), then the wrapper writes its final status and
    # ends, then the poll finds it gone: the final status is read again, never lost.
    folder = tmp_path / "sweep" / "tasks" / "task_0001"
    (folder / ".hsm").mkdir(parents=True)

    def status(state: str, cause: str | None) -> str:
        return json.dumps(
            {
                "version": 2,
                "attempt": 1,
                "nonce": "ab",
                "status": state,
                "cause": cause,
                "exit_code": 0 if cause else None,
                "pid": 999999,
                "pgid": None,
                "host": "h",
                "started": 1.0,
                "finished": 2.0 if cause else None,
            }
        )

    (folder / "status.json").write_text(status("running", None))

    def ends_now(pid: int, task_dir: str) -> bool:
        (folder / "status.json").write_text(status("completed", "completed"))
        return False

    monkeypatch.setattr("hsm.sources.local.wrapper_alive", ends_now)
    handle = JobHandle(
        source="local", number=1, attempt=1, task_dir=str(folder), job_id="999999", nonce="ab"
    )
    [result] = asyncio.run(LocalSource(slots=1).poll(handles=[handle])).values()
    verdict = decide(result.facts, lost_after=3)
    assert (verdict.next, verdict.cause) == (Next.FINISHED, Cause.COMPLETED)
