"""What happens to a task after an attempt ends. Pure: a function of recorded facts."""

from __future__ import annotations

from dataclasses import dataclass

from hsm.states import INFRASTRUCTURE_CAUSES, AttemptState, Cause, TaskStatus


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
