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
from hsm.engine.lifecycle import Ack, Facts
from hsm.jobscript import (
    STATUS_FILE,
    WRAPPER_PATH,
    WrapperStatus,
    read_events,
    read_status,
    spec_nonce,
    write_spec,
)
from hsm.sources.base import (
    Capabilities,
    HealthSample,
    JobHandle,
    LaunchRequest,
    PollResult,
    Source,
    SweepContext,
    summarize,
)
from hsm.sources.process import spawn_detached

log = logging.getLogger(__name__)


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
    capabilities = Capabilities(remote=False, queue=False)

    def __init__(
        self,
        name: str = "local",
        *,
        slots: int,
        gpus: Sequence[int] = (),
        disk_path: str | None = None,
        python: str = "python3",
    ) -> None:
        super().__init__(name, slots=slots, gpus=gpus, python=python)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._launched_at: dict[str, float] = {}
        # pidfd -> (task folder, wrapper process), for the wrappers started here
        self._exit_fds: dict[int, tuple[str, subprocess.Popen[bytes]]] = {}
        self._disk_path = disk_path or os.getcwd()

    def host_label(self) -> str:
        return os.uname().nodename

    async def prepare(self, *, ctx: SweepContext) -> None:
        Path(ctx.sweep_dir, "tasks").mkdir(parents=True, exist_ok=True)
        self._disk_path = ctx.sweep_dir

    async def launch(
        self, *, ctx: SweepContext, requests: Sequence[LaunchRequest]
    ) -> list[JobHandle | Exception]:
        results: list[JobHandle | Exception] = []
        host = self.host_label()
        for req in requests:
            task_dir = self.task_dir(ctx, req.number)
            try:
                spec = self.task_spec(ctx, req, self.gpu_ids(req.slot))
                write_spec(Path(task_dir), spec)
                proc = spawn_wrapper(task_dir)
            except (OSError, ValueError) as exc:  # e.g. ENOSPC writing the spec
                results.append(exc)
                continue
            handle = JobHandle(
                source=self.name,
                number=req.number,
                attempt=req.attempt,
                task_dir=task_dir,
                job_id=str(proc.pid),
                host=host,
                nonce=req.nonce,
            )
            self._procs[task_dir] = proc
            self._launched_at[task_dir] = clock.monotonic()
            self._notify_exit(task_dir, proc)
            results.append(handle)
        errors = [r for r in results if isinstance(r, Exception)]
        if errors and len(errors) == len(results):
            raise errors[0]
        return results

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
        """The facts of one attempt: its status file, whether its wrapper lives, whether
        its task folder holds its launch (the spec with its nonce)."""
        task_dir, nonce = Path(handle.task_dir), handle.nonce
        status = read_status(task_dir)
        state = summarize(status, handle.attempt)
        mine = _own(status, handle)
        proc = self._procs.get(handle.task_dir)
        if mine is not None and mine.terminal:
            alive: bool | None = None
            self._forget(handle)
        elif proc is not None:
            alive = proc.poll() is None
        elif mine is not None:
            alive = wrapper_alive(mine.pid, handle.task_dir)
        elif handle.job_id:
            alive = wrapper_alive(int(handle.job_id), handle.task_dir)
        else:  # recorded, no pid known (the controller died mid-launch): look for it
            alive = find_wrapper(handle.task_dir) is not None
        if alive is False and (mine is None or not mine.terminal):
            # It may have written its last status and ended after the first read: a wrapper
            # that is gone wrote its last status whole, so this read tells.
            status = read_status(task_dir)
            state = summarize(status, handle.attempt)
            mine = (
                status if status is not None and status.belongs_to(handle.attempt, nonce) else None
            )
        started = self._launched_at.setdefault(handle.task_dir, clock.monotonic())
        facts = Facts(
            attempt=handle.attempt,
            nonce=nonce,
            status=status,
            wrapper_alive=alive,
            status_unreadable=status is None and (task_dir / STATUS_FILE).exists(),
            received=spec_nonce(task_dir) == nonce if nonce else None,
            ack=Ack.CONFIRMED if proc is not None else Ack.UNKNOWN,
            since_launch=clock.monotonic() - started,
        )
        if alive is False and proc is not None:
            self._forget(handle)
        events: tuple[str, ...] = ()
        if mine is not None and not mine.terminal:
            events = tuple(read_events(task_dir, handle.attempt))
        return PollResult(state, status, facts=facts, events=events)

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
            reachable=True,
            disk_path=self._disk_path,
            free_bytes=usage.free,
            total_bytes=usage.total,
            load1=load1,
            cores=cores,
            memory_percent=memory_percent(),
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


def _own(status: WrapperStatus | None, handle: JobHandle) -> WrapperStatus | None:
    """The status, if this attempt wrote it."""
    return (
        status if status is not None and status.belongs_to(handle.attempt, handle.nonce) else None
    )


def find_wrapper(task_dir: str) -> int | None:
    """The pid of a job wrapper running for ``task_dir`` on this machine, if any."""
    want = os.fsencode(task_dir)
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            len(argv) >= 3
            and argv[-2] == want
            and argv[-3].endswith(b"wrapper.sh")
            and wrapper_alive(pid, task_dir)
        ):
            return pid
    return None


def _finishing(task_dir: str) -> bool:
    status = read_status(Path(task_dir))
    return status is not None and status.terminal


def spawn_wrapper(task_dir: str) -> subprocess.Popen[bytes]:
    """Start the job wrapper for one task, detached (it outlives the controller)."""
    return spawn_detached(["bash", str(WRAPPER_PATH), task_dir])


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
