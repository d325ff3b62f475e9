"""What happens to a task after an attempt ends. Pure: a function of recorded facts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hsm.states import INFRASTRUCTURE_CAUSES, AttemptState, Cause, TaskStatus

# Ends that a task may have checkpointed for (resources.signal): its retry goes back to the
# same source, whose task folder holds the checkpoint.
CHECKPOINT_CAUSES = frozenset({Cause.TIMEOUT, Cause.PREEMPTED})


@dataclass(frozen=True)
class AttemptVerdict:
    attempt_state: AttemptState
    task_status: TaskStatus
    retry: bool  # the task goes back to the queue


def judge_attempt(
    cause: Cause, *, attempt: int, max_retries: int, retry_task_failures: bool = False
) -> AttemptVerdict:
    """Decide the attempt's state and its task's next status.

    Infrastructure causes (lost host, disk guard, scheduler timeout, node failure,
    preemption) are retried while the task has retries left (``attempt - 1 < max_retries``).
    A failure of the task itself is final unless ``retry_task_failures`` is set (the
    failsafe uses that to learn whether a failure follows the task or the source).
    """
    if cause is Cause.COMPLETED:
        return AttemptVerdict(AttemptState.COMPLETED, TaskStatus.COMPLETED, False)
    if cause is Cause.CANCELLED:
        return AttemptVerdict(AttemptState.CANCELLED, TaskStatus.CANCELLED, False)
    state = AttemptState.LOST if cause is Cause.LOST else AttemptState.FAILED
    retries_left = attempt - 1 < max_retries
    retryable = cause in INFRASTRUCTURE_CAUSES or retry_task_failures
    if retryable and retries_left:
        return AttemptVerdict(state, TaskStatus.PENDING, True)
    return AttemptVerdict(state, TaskStatus.FAILED, False)


def home_source(cause: Cause, source: str) -> str | None:
    """The source a retry of an attempt that ended with ``cause`` on ``source`` should go
    back to, if any: the one that holds its checkpoint."""
    return source if cause in CHECKPOINT_CAUSES else None


def homes(attempts: Iterable[tuple[int, int, str, str | None]]) -> dict[int, str]:
    """Per task, its home source: from (number, attempt, source, cause) of the recorded
    attempts, the last attempt's source when it ended at its walltime or by preemption."""
    last: dict[int, tuple[int, str, str | None]] = {}
    for number, attempt, source, cause in attempts:
        if number not in last or attempt > last[number][0]:
            last[number] = (attempt, source, cause)
    out = {}
    for number, (_, source, cause) in last.items():
        home = home_source(Cause(cause), source) if cause else None
        if home is not None:
            out[number] = home
    return out
