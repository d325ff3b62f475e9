"""The backend contract. Backends return facts; the engine owns loops, retries and state."""

from __future__ import annotations

import asyncio
import json
import shlex
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from hsm.engine.lifecycle import Facts
from hsm.jobscript import GuardSettings, TaskSpec, WrapperStatus
from hsm.spec.sweep import Resources


@dataclass(frozen=True)
class Capabilities:
    remote: bool = False  # results live elsewhere and must be collected
    queue: bool = False  # a batch scheduler decides when tasks start


@dataclass(frozen=True)
class SweepContext:
    """What every backend needs to know about the sweep it runs."""

    sweep_id: str
    sweep_dir: str  # local sweep folder
    project_root: str  # local project (code) folder
    project_name: str
    guard: GuardSettings
    wandb_group: str
    # argv_for(params, task_dir, python) -> the task's argv on that source
    argv_for: Callable[[Mapping[str, Any], str | None, str], list[str]]
    gpus_per_task: int = 0
    resources: Resources = field(default_factory=Resources)  # the sweep's `resources:`


@dataclass(frozen=True)
class LaunchRequest:
    number: int
    attempt: int
    params: Mapping[str, Any]
    slot: int
    attempt_id: int
    nonce: str = ""  # the launch nonce recorded before the launch ([0-9a-f]{1,32}, or empty)


@dataclass(frozen=True)
class JobHandle:
    """Everything needed to find a launched attempt again. Stored as JSON in SQLite."""

    source: str
    number: int
    attempt: int
    task_dir: str  # where the wrapper runs, on the source's host
    job_id: str | None = None  # scheduler job id (queue backends)
    host: str | None = None
    confirmed: bool = True  # the source acknowledged the start (False: it may have started)
    nonce: str = ""  # the attempt's launch nonce (its identity, with number and attempt)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobHandle:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})


class PollState(StrEnum):
    STARTING = "starting"  # launched, the wrapper has not reported yet
    RUNNING = "running"
    FINISHED = "finished"  # the wrapper wrote a final status
    LOST = "lost"  # the attempt vanished (host gone, process gone, job gone)
    UNKNOWN = "unknown"  # could not ask (e.g. the host is unreachable right now)


@dataclass(frozen=True)
class PollResult:
    """What a backend found out about one attempt. It decides nothing: the engine turns the
    facts into the attempt's next state (``hsm.engine.lifecycle.decide``)."""

    state: PollState  # a summary of the status file alone, for logs and tests
    status: WrapperStatus | None
    facts: Facts
    detail: str = ""
    events: tuple[str, ...] = ()  # the attempt's event lines so far, while it runs


@dataclass(frozen=True)
class HealthSample:
    """One probe of a source: one round trip."""

    reachable: bool
    disk_path: str | None = None
    free_bytes: int | None = None
    total_bytes: int | None = None
    load1: float | None = None
    cores: int | None = None
    memory_percent: float | None = None
    error: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


class Source(ABC):
    """A place that runs tasks: this machine, an SSH host, a cluster."""

    capabilities = Capabilities()
    # Seconds a host may stay silent before its attempts are taken as lost.
    lost_after: float = 0.0

    def __init__(
        self,
        name: str,
        *,
        slots: int,
        setup: Sequence[str] = (),
        python: str = "python3",
        gpus: Sequence[int] = (),
    ) -> None:
        self.name = name
        self.slots = slots
        self.setup = list(setup)
        self.python = python
        self.gpus = list(gpus)
        self.gpu_slots: list[list[int]] = []
        # Set by the backend when something may have finished, so the engine polls now.
        self.wake = asyncio.Event()
        # False while the backend cannot reach its host: the engine gives it no new tasks.
        self.reachable = True

    # -- the contract --------------------------------------------------------------------
    async def preflight(self) -> None:  # noqa: B027 - optional hook
        """Check, before a sweep is created, that the source can be used at all (reachable,
        trusted, writable). Raises SourceUnavailableError. Default: nothing to check."""

    @abstractmethod
    async def prepare(self, *, ctx: SweepContext) -> None:
        """Make the source ready for this sweep (folders, code push, wrapper)."""

    @abstractmethod
    async def launch(
        self, *, ctx: SweepContext, requests: Sequence[LaunchRequest]
    ) -> list[JobHandle | Exception]:
        """Start these attempts. Returns, per request and in order, its handle, or the error
        that kept that request from starting (it surely did not start). Raises only when
        none of them started. A handle with ``confirmed=False`` may or may not have
        started: the engine finds out by polling it."""

    @abstractmethod
    async def poll(self, *, handles: Sequence[JobHandle]) -> dict[JobHandle, PollResult]:
        """Report the state of these attempts, in as few round trips as possible."""

    @abstractmethod
    async def cancel(self, *, handles: Sequence[JobHandle]) -> None:
        """Stop these attempts (their whole process trees)."""

    @abstractmethod
    async def collect(self, *, ctx: SweepContext, handle: JobHandle) -> None:
        """Bring the finished attempt's task folder into the local sweep folder."""

    @abstractmethod
    async def probe(self) -> HealthSample:
        """Disk, load and memory of the source, in one round trip."""

    async def finish(self, *, ctx: SweepContext, all_completed: bool) -> None:  # noqa: B027
        """Called once when the sweep ends (remote clean-up). Default: nothing."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    # -- shared helpers ------------------------------------------------------------------
    def configure_gpus(self, per_task: int) -> None:
        """Split the GPU allowlist into one group per slot; the slot count follows."""
        if self.gpus and per_task > 0:
            self.gpu_slots = gpu_groups(self.gpus, per_task)
            self.slots = max(1, min(self.slots, len(self.gpu_slots))) if self.gpu_slots else 0

    def gpu_ids(self, slot: int) -> list[int]:
        return self.gpu_slots[slot] if slot < len(self.gpu_slots) else []

    def task_dir(self, ctx: SweepContext, number: int) -> str:
        """Where task ``number`` runs on this source. Deterministic, so it can be found again."""
        return f"{self.sweep_root(ctx)}/tasks/{task_folder_name(number)}"

    def sweep_root(self, ctx: SweepContext) -> str:
        return ctx.sweep_dir

    def project_dir(self, ctx: SweepContext) -> str:
        return ctx.project_root

    def host_label(self) -> str:
        return self.name

    def task_spec(
        self, ctx: SweepContext, req: LaunchRequest, gpu_ids: Sequence[int] = ()
    ) -> TaskSpec:
        """The wrapper's input for one attempt: the same for every backend."""
        task_dir = self.task_dir(ctx, req.number)
        argv: list[str] = ctx.argv_for(req.params, task_dir, self.python)
        env = {
            "HSM_SWEEP_ID": ctx.sweep_id,
            "HSM_TASK_NUMBER": str(req.number),
            "HSM_TASK_DIR": task_dir,
            "HSM_SOURCE": self.name,
            "HSM_ATTEMPT": str(req.attempt),
            "WANDB_RUN_GROUP": ctx.wandb_group,
            "WANDB_DIR": task_dir,
        }
        if gpu_ids:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpu_ids)
        params = "\n".join(
            f"  {k}={json.dumps(v, ensure_ascii=False)}" for k, v in req.params.items()
        )
        info = (
            f"Task: {req.number}\nSweep: {ctx.sweep_id}\nSource: {self.name}\n"
            f"Attempt: {req.attempt}\n"
            f"Parameters:\n{params}\nCommand: {shlex.join(argv)}\n"
        )
        return TaskSpec(
            attempt=req.attempt,
            project_dir=self.project_dir(ctx),
            guard=ctx.guard,
            env=env,
            setup=self.setup,
            argv=argv,
            info=info,
            nonce=req.nonce,
            signal=self.checkpoint_signal() or "",
        )

    def checkpoint_signal(self) -> str | None:
        """The signal the wrapper passes on to the task (sent before the walltime, on a
        cluster that has one); None: none."""
        return None


def task_folder_name(number: int) -> str:
    return f"task_{number:04d}"


def summarize(status: WrapperStatus | None, attempt: int) -> PollState:
    """What a status file alone says of one attempt: running or finished when it is this
    attempt's, else starting (nothing of it yet)."""
    if status is None or status.attempt != attempt:
        return PollState.STARTING
    return PollState.FINISHED if status.terminal else PollState.RUNNING


def gpu_groups(gpus: Sequence[int], per_task: int) -> list[list[int]]:
    """Split a GPU allowlist into disjoint groups of ``per_task`` GPUs (leftovers unused)."""
    return [list(gpus[i : i + per_task]) for i in range(0, len(gpus) - per_task + 1, per_task)]
