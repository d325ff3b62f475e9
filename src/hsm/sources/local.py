"""This machine as a source: tasks run as detached process groups under the job wrapper."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from hsm.jobscript import WRAPPER_PATH, read_status, write_spec
from hsm.sources.base import (
    Capabilities,
    HealthSample,
    JobHandle,
    LaunchRequest,
    PollResult,
    PollState,
    Source,
    SweepContext,
    classify_status,
)

log = logging.getLogger(__name__)

# A wrapper writes its first status within milliseconds; past this an attempt that never
# reported is taken as never started.
START_GRACE = 10.0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalSource(Source):
    capabilities = Capabilities(detached=True, remote=False, queue=False)

    def __init__(self, name: str = "local", *, slots: int, gpus: Sequence[int] = (),
                 disk_path: str | None = None) -> None:
        super().__init__(name, slots=slots, gpus=gpus, python="python3")
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._launched_at: dict[str, float] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self._disk_path = disk_path or os.getcwd()
        self.own_running = 0  # tasks of this sweep running here (for the load judgement)

    def host_label(self) -> str:
        return os.uname().nodename

    async def prepare(self, *, ctx: SweepContext) -> None:
        Path(ctx.sweep_dir, "tasks").mkdir(parents=True, exist_ok=True)
        self._disk_path = ctx.sweep_dir

    async def launch(self, *, ctx: SweepContext,
                     requests: Sequence[LaunchRequest]) -> list[JobHandle]:
        handles = []
        for req in requests:
            task_dir = self.task_dir(ctx, req.number)
            spec = self.task_spec(ctx, req, self.gpu_ids(req.slot))
            write_spec(Path(task_dir), spec)
            proc = await asyncio.create_subprocess_exec(
                "bash", str(WRAPPER_PATH), task_dir,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
            )
            handle = JobHandle(source=self.name, number=req.number, attempt=req.attempt,
                               task_dir=task_dir, job_id=str(proc.pid),
                               host=self.host_label())
            self._procs[task_dir] = proc
            self._launched_at[task_dir] = time.monotonic()
            watcher = asyncio.create_task(self._watch(proc))
            self._watchers.add(watcher)
            watcher.add_done_callback(self._watchers.discard)
            handles.append(handle)
        return handles

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        await proc.wait()
        self.wake.set()

    async def poll(self, *, handles: Sequence[JobHandle]) -> dict[JobHandle, PollResult]:
        return {h: self._poll_one(h) for h in handles}

    def _poll_one(self, handle: JobHandle) -> PollResult:
        status = read_status(Path(handle.task_dir))
        state = classify_status(status, handle.attempt)
        if state is PollState.FINISHED:
            self._forget(handle)
            return PollResult(PollState.FINISHED, status)
        proc = self._procs.get(handle.task_dir)
        if proc is not None:
            if proc.returncode is None:
                return PollResult(state or PollState.STARTING, status)
            # The wrapper exited without a final status: it was killed outright.
            self._forget(handle)
            return PollResult(PollState.LOST, status, "the job wrapper died without a status")
        # Reattached after a controller restart: judge by the wrapper's pid.
        if state is PollState.RUNNING and status is not None:
            if pid_alive(status.pid):
                return PollResult(PollState.RUNNING, status)
            return PollResult(PollState.LOST, status, f"wrapper pid {status.pid} is gone")
        started = self._launched_at.setdefault(handle.task_dir, time.monotonic())
        if handle.job_id and pid_alive(int(handle.job_id)):
            return PollResult(PollState.STARTING)
        if time.monotonic() - started > START_GRACE or not handle.job_id:
            return PollResult(PollState.LOST, None, "the attempt never started")
        return PollResult(PollState.STARTING)

    def _forget(self, handle: JobHandle) -> None:
        self._procs.pop(handle.task_dir, None)
        self._launched_at.pop(handle.task_dir, None)

    async def cancel(self, *, handles: Sequence[JobHandle]) -> None:
        for handle in handles:
            status = read_status(Path(handle.task_dir))
            pids = []
            if status is not None and status.attempt == handle.attempt:
                pids.append(status.pid)
            elif handle.job_id:
                pids.append(int(handle.job_id))
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)

    async def collect(self, *, ctx: SweepContext, handle: JobHandle) -> None:
        return None

    async def probe(self) -> HealthSample:
        usage = shutil.disk_usage(self._disk_path)
        load1 = os.getloadavg()[0]
        cores = os.cpu_count() or 1
        return HealthSample(
            reachable=True, disk_path=self._disk_path, free_bytes=usage.free,
            total_bytes=usage.total, load1=load1, cores=cores,
            memory_percent=memory_percent(), extra={"own_running": self.own_running},
        )

    async def close(self) -> None:
        # Finished wrappers exit within milliseconds of writing their last status: reap them.
        # Wrappers still running (detached tasks) are left alone.
        if self._watchers:
            await asyncio.wait(list(self._watchers), timeout=2.0)
        for watcher in list(self._watchers):
            watcher.cancel()


def memory_percent(meminfo: str = "/proc/meminfo") -> float | None:
    try:
        text = Path(meminfo).read_text()
    except OSError:
        return None
    return parse_meminfo(text)


def parse_meminfo(text: str) -> float | None:
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0])
    total = values.get("MemTotal")
    available = values.get("MemAvailable", values.get("MemFree"))
    if not total or available is None:
        return None
    return round(100.0 * (total - available) / total, 1)
