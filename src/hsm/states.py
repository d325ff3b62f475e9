"""The states of sweeps, tasks and attempts. The only place their string values live."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class SweepState(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    ABORTED = "aborted"
    CANCELLED = "cancelled"


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class AttemptState(StrEnum):
    LAUNCHING = "launching"  # recorded, the backend may or may not have started it
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    LOST = "lost"  # the host or the job vanished; the task goes back to the queue
    CANCELLED = "cancelled"
    NOT_STARTED = "not_started"  # recorded, and proven never started (e.g. the controller
    # died between recording and launching it): no try is used, nothing is counted


ACTIVE_ATTEMPT = frozenset({AttemptState.LAUNCHING, AttemptState.RUNNING})
# Attempts that used one of the task's tries (a retry budget is counted in these).
TRIED_ATTEMPT = frozenset({AttemptState.COMPLETED, AttemptState.FAILED, AttemptState.LOST})

TERMINAL_TASK = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


class Cause(StrEnum):
    """Why an attempt ended. Written by the job wrapper or decided by the engine."""

    COMPLETED = "completed"
    TASK_FAILED = "task_failed"
    DISK_PRECHECK = "disk_precheck"
    DISK_KILL = "disk_kill"
    CANCELLED = "cancelled"
    SIGNAL = "signal"
    LOST = "lost"  # host unreachable or job vanished
    TIMEOUT = "timeout"  # scheduler walltime
    OUT_OF_MEMORY = "out_of_memory"
    NODE_FAIL = "node_fail"
    PREEMPTED = "preempted"
    LAUNCH_FAILED = "launch_failed"
    COLLECT_FAILED = "collect_failed"  # finished, but its results could not be brought back


# Causes that are the machine's fault, not the task's: retried on another source.
INFRASTRUCTURE_CAUSES = frozenset(
    {
        Cause.LOST,
        Cause.DISK_PRECHECK,
        Cause.DISK_KILL,
        Cause.TIMEOUT,
        Cause.NODE_FAIL,
        Cause.PREEMPTED,
        Cause.LAUNCH_FAILED,
        Cause.COLLECT_FAILED,
    }
)
DISK_CAUSES = frozenset({Cause.DISK_PRECHECK, Cause.DISK_KILL})


class SourceEventKind(StrEnum):
    """What happened to a source, as its recorded events say."""

    ENABLED = "enabled"
    DISABLED = "disabled"


class ElementState(StrEnum):
    """The state of one element of a batch scheduler's job array, as hsm understands it
    (each scheduler module maps its own state strings onto these)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    OUT_OF_MEMORY = "out_of_memory"
    NODE_FAIL = "node_fail"
    PREEMPTED = "preempted"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


TERMINAL_ELEMENT = frozenset(
    {
        ElementState.COMPLETED,
        ElementState.FAILED,
        ElementState.TIMEOUT,
        ElementState.OUT_OF_MEMORY,
        ElementState.NODE_FAIL,
        ElementState.PREEMPTED,
        ElementState.CANCELLED,
    }
)
# Element ends that are the scheduler's doing: they become the attempt's cause.
SCHEDULER_CAUSES: Mapping[ElementState, Cause] = {
    ElementState.TIMEOUT: Cause.TIMEOUT,
    ElementState.OUT_OF_MEMORY: Cause.OUT_OF_MEMORY,
    ElementState.NODE_FAIL: Cause.NODE_FAIL,
    ElementState.PREEMPTED: Cause.PREEMPTED,
    ElementState.CANCELLED: Cause.CANCELLED,
}
