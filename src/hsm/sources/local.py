"""This machine as a source: tasks run as detached process groups under the job wrapper."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from hsm import clock
from hsm.jobscript import WRAPPER_PATH, read_events, read_status, write_spec
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
# An attempt recorded as launching, without a handle (the controller died between recording
# it and starting its wrapper, or right after): how long a resumed controller waits for a
# status before it takes the attempt as never started.
UNKNOWN_START_GRACE = 2.0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wrapper_alive(pid: int, task_dir: str) -> bool:
    """Whether the job wrapper of ``task_dir`` still runs as ``pid``: a zombie, or another
    program that got the same pid since, does not count."""
    if not pid_alive(pid):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return pid_alive(pid)  # no /proc: trust the signal check
    if stat[stat.rindex(")") + 2] in "ZX":
        return False
    return os.fsencode(task_dir) in cmdline


class LocalSource(Source):
    capabilities = Capabilities(detached=True, remote=False, queue=False)

    def __init__(self, name: str = "local", *, slots: int, gpus: Sequence[int] = (),
                 disk_path: str | None = None) -> None:
        super().__init__(name, slots=slots, gpus=gpus, python="python3")
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._launched_at: dict[str, float] = {}
        # pidfd -> (task folder, wrapper process), for the wrappers started here
        self._exit_fds: dict[int, tuple[str, subprocess.Popen[bytes]]] = {}
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
        host = self.host_label()
        for req in requests:
            task_dir = self.task_dir(ctx, req.number)
            spec = self.task_spec(ctx, req, self.gpu_ids(req.slot))
            write_spec(Path(task_dir), spec)
            proc = spawn_wrapper(task_dir)
            handle = JobHandle(source=self.name, number=req.number, attempt=req.attempt,
                               task_dir=task_dir, job_id=str(proc.pid), host=host)
            self._procs[task_dir] = proc
            self._launched_at[task_dir] = clock.monotonic()
            self._notify_exit(task_dir, proc)
            handles.append(handle)
        return handles

    def _notify_exit(self, task_dir: str, proc: subprocess.Popen[bytes]) -> None:
        """Wake the engine as soon as the wrapper exits (a pidfd in the event loop: no
        thread per process). Without pidfds, the engine's regular polling finds it."""
        try:
            fd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            return
        self._exit_fds[fd] = (task_dir, proc)
        asyncio.get_running_loop().add_reader(fd, self._exited, fd)

    def _exited(self, fd: int) -> None:
        entry = self._exit_fds.pop(fd, None)
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(fd)
        os.close(fd)
        if entry is not None:
            entry[1].poll()  # reap it
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
            if proc.poll() is None:
                if state is PollState.RUNNING:
                    events = tuple(read_events(Path(handle.task_dir), handle.attempt))
                    return PollResult(state, status, events=events)
                return PollResult(PollState.STARTING, status)
            # The wrapper exited without a final status: it was killed outright.
            self._forget(handle)
            return PollResult(PollState.LOST, status, "the job wrapper died without a status")
        # Reattached after a controller restart: judge by the wrapper's pid.
        if state is PollState.RUNNING and status is not None:
            if wrapper_alive(status.pid, handle.task_dir):
                return PollResult(PollState.RUNNING, status)
            return PollResult(PollState.LOST, status, f"wrapper pid {status.pid} is gone")
        started = self._launched_at.setdefault(handle.task_dir, clock.monotonic())
        if handle.job_id and wrapper_alive(int(handle.job_id), handle.task_dir):
            return PollResult(PollState.STARTING)
        grace = START_GRACE if handle.job_id else UNKNOWN_START_GRACE
        if clock.monotonic() - started > grace:
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
        # A wrapper exits within milliseconds of writing its final status: reap those.
        # Wrappers still running (detached tasks) are left alone.
        deadline = clock.monotonic() + 2.0
        while clock.monotonic() < deadline:
            for fd, (_, proc) in list(self._exit_fds.items()):
                if proc.poll() is not None:
                    self._exited(fd)
            if not any(_finishing(task_dir) for task_dir, _ in self._exit_fds.values()):
                break
            await asyncio.sleep(0.02)
        for fd in list(self._exit_fds):
            self._exit_fds.pop(fd)
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)


def _finishing(task_dir: str) -> bool:
    status = read_status(Path(task_dir))
    return status is not None and status.terminal


def spawn_wrapper(task_dir: str) -> subprocess.Popen[bytes]:
    """Start the job wrapper for one task, detached: a session of its own, no terminal, so
    that it outlives the controller (and Ctrl-C in the terminal reaches only hsm)."""
    return subprocess.Popen(["bash", str(WRAPPER_PATH), task_dir], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)


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
