"""The attempt lifecycle: one pure function turns the facts a backend reports about an
attempt into its next state and cause. Backends gather facts; only this module decides.

The facts about one attempt (see ``Facts``):

- the status file's contents, already parsed (``hsm.jobscript.parse_status``), and whether
  they are this attempt's: the same attempt number and launch nonce (fencing);
- whether the job wrapper process is alive (None when that cannot be told);
- whether the host answered this poll, and for how long it has been silent;
- whether the host holds the launch request of this attempt (None when it cannot tell);
- the launch acknowledgement, and how long ago the launch was sent;
- for queue backends, what the batch scheduler says of the element (`QueueFacts`): its
  state, whether the scheduler answered, whether hsm cancelled it, and for how long it has
  shown the element ended while the status file shows no final status;
- whether the results of a final status can be collected yet (a pull may be on its way).

No verdict without evidence: "never started" needs the host's word that it never got the
launch, and an attempt whose host is silent stays unresolved until ``lost_after`` has passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from hsm.jobscript import WrapperStatus
from hsm.states import SCHEDULER_CAUSES, TERMINAL_ELEMENT, Cause, ElementState

# A wrapper writes its first status within milliseconds of its start; an attempt whose host
# got the launch but shows neither a status nor a live wrapper after this long is lost.
START_GRACE = 10.0
# A shared file system can show a file late: once the scheduler shows an element ended, its
# final status has this long to appear before the attempt is lost.
FINAL_STATUS_GRACE = 30.0
# A task stopped by a signal: a cancel, a time limit, a preemption or the OOM killer. Only
# the scheduler knows which.
_SIGNALLED = frozenset({Cause.CANCELLED, Cause.SIGNAL})


class Ack(StrEnum):
    """What the source said when the launch was sent."""

    CONFIRMED = "confirmed"  # the host started the wrapper (e.g. it returned its pid)
    UNCONFIRMED = "unconfirmed"  # no answer in time: it may or may not have started
    UNKNOWN = "unknown"  # this controller did not send it (a resumed controller)


class Next(StrEnum):
    STARTING = "starting"  # launched, no status yet: wait
    RUNNING = "running"
    FINISHED = "finished"  # a final status of this attempt: collect, then settle
    LOST = "lost"  # it ran (or may have run) and is gone: settle as lost
    NOT_STARTED = "not_started"  # proven never started: no try used
    UNKNOWN = "unknown"  # cannot tell now (host silent): ask again later


@dataclass(frozen=True)
class QueueFacts:
    """What a batch scheduler said of one array element at this poll."""

    answered: bool = True  # the scheduler answered the status query
    found: bool = True  # the submission's job id is known (False: still looking for it)
    state: ElementState | None = None  # None: the scheduler no longer shows the element
    raw: str = ""  # the scheduler's own word for the state
    reason: str = ""  # e.g. why it is pending
    blind: bool = False  # the scheduler shows no ended elements (it cannot tell "gone")
    cancelled: bool = False  # hsm cancelled it (a cancelled pending element may vanish)
    # Seconds since the element was first seen ended while the status file showed no final
    # status of this attempt (None: not so).
    ended_for: float | None = None
    hint: str = ""  # where to look when it ended without a final status


@dataclass(frozen=True)
class Facts:
    attempt: int
    nonce: str
    status: WrapperStatus | None = None
    wrapper_alive: bool | None = None
    host_answered: bool = True
    silent_for: float = 0.0  # seconds since the host was last heard from
    received: bool | None = None  # the host holds this attempt's launch request
    ack: Ack = Ack.UNKNOWN
    since_launch: float = 0.0  # seconds since the launch was sent, or first seen
    scheduler_cause: Cause | None = None  # e.g. timeout, node_fail, from the scheduler
    queue: QueueFacts | None = None  # for queue backends: the scheduler's word
    collectable: bool = True  # False: the results of a final status are still on the way
    status_unreadable: bool = False  # a status file is there, but was caught half-written


@dataclass(frozen=True)
class Verdict:
    next: Next
    cause: Cause | None = None
    detail: str = ""


def own_status(facts: Facts) -> WrapperStatus | None:
    """The status, if it is this attempt's: same number, and same nonce where both have one
    (a status written by a wrapper older than fencing has none)."""
    status = facts.status
    return status if status is not None and status.belongs_to(facts.attempt, facts.nonce) else None


def decide(
    facts: Facts, *, lost_after: float, start_grace: float = START_GRACE, host: str = "the host"
) -> Verdict:
    """The attempt's next state, from the facts alone."""
    if facts.queue is not None:
        return _decide_queued(own_status(facts), facts.queue)
    status = own_status(facts)
    if status is not None and status.terminal:
        if not facts.collectable:
            return Verdict(Next.RUNNING, None, "ended; its results are on the way")
        cause = facts.scheduler_cause or status.cause or Cause.TASK_FAILED
        return Verdict(Next.FINISHED, cause)
    if not facts.host_answered:
        if facts.silent_for >= lost_after:
            return Verdict(
                Next.LOST,
                facts.scheduler_cause or Cause.LOST,
                f"{host} has not answered for {facts.silent_for:.0f} s",
            )
        return Verdict(Next.UNKNOWN)
    if facts.status is None and facts.status_unreadable:
        if facts.wrapper_alive is False:  # nothing will write it again
            return Verdict(
                Next.LOST,
                Cause.LOST,
                f"its status on {host} is unreadable and its job wrapper is gone",
            )
        return Verdict(Next.UNKNOWN, None, "its status was caught half-written: read again")
    if status is not None:  # running
        if facts.wrapper_alive is False:
            return Verdict(
                Next.LOST,
                facts.scheduler_cause or Cause.LOST,
                f"its job wrapper (pid {status.pid}) on {host} is gone",
            )
        return Verdict(Next.RUNNING)
    if facts.scheduler_cause is not None:  # the scheduler ended it before it could report
        return Verdict(Next.LOST, facts.scheduler_cause, "ended by the scheduler")
    if facts.received is False:
        return Verdict(Next.NOT_STARTED, None, f"{host} never got the launch")
    if facts.wrapper_alive:
        return Verdict(Next.STARTING)
    if facts.since_launch < start_grace:
        return Verdict(Next.STARTING)
    if facts.received:
        return Verdict(
            Next.LOST, Cause.LOST, f"{host} got the launch but shows no status and no job wrapper"
        )
    return Verdict(Next.LOST, Cause.LOST, f"it never reported from {host}")


def _decide_queued(mine: WrapperStatus | None, q: QueueFacts) -> Verdict:
    """An attempt run by a batch scheduler: its element's state and the status file."""
    state = q.state
    if not q.answered:
        if mine is not None and mine.terminal and mine.cause not in _SIGNALLED:
            return Verdict(Next.FINISHED, mine.cause or Cause.TASK_FAILED)
        return Verdict(Next.UNKNOWN, None, "the scheduler does not answer")
    if not q.found:
        return Verdict(Next.UNKNOWN, None, "looking for the submission")
    if mine is not None and mine.terminal:
        cause = SCHEDULER_CAUSES.get(state) if state is not None else None
        if cause in (Cause.TIMEOUT, Cause.PREEMPTED):
            # Ended at its walltime or by preemption, even if the task handled the signal and
            # exited 0 or 1 on its own: the scheduler's word is the cause.
            return Verdict(Next.FINISHED, cause)
        if mine.cause not in _SIGNALLED or state is None:
            return Verdict(Next.FINISHED, mine.cause or Cause.TASK_FAILED)
        if state in TERMINAL_ELEMENT:
            return Verdict(Next.FINISHED, cause or mine.cause or Cause.TASK_FAILED)
        return Verdict(Next.RUNNING, None, "waiting for the scheduler's final state")
    waiting = mine is not None and (q.ended_for is None or q.ended_for < FINAL_STATUS_GRACE)
    if state is None:
        if q.cancelled and mine is None:
            return Verdict(Next.LOST, Cause.CANCELLED, "cancelled before it started")
        if q.blind:
            return Verdict(Next.RUNNING if mine else Next.STARTING)
        if waiting:
            return Verdict(Next.UNKNOWN, None, "waiting for the final status")
        if mine is None:
            return Verdict(
                Next.LOST, Cause.LOST, "the job never started and the scheduler no longer knows it"
            )
        return Verdict(
            Next.LOST,
            Cause.CANCELLED if q.cancelled else Cause.LOST,
            f"the job ended without a final status{q.hint}",
        )
    if state is ElementState.PENDING:
        return Verdict(Next.STARTING, None, q.reason)
    if state is ElementState.RUNNING:
        return Verdict(Next.RUNNING if mine else Next.STARTING)
    if state is ElementState.UNKNOWN:
        return Verdict(Next.UNKNOWN, None, f"unknown job state {q.raw!r}")
    if waiting:
        return Verdict(Next.UNKNOWN, None, "waiting for the final status")
    return Verdict(
        Next.LOST,
        SCHEDULER_CAUSES.get(state, Cause.LOST),
        f"the job ended ({q.raw or state.value}) before its wrapper recorded a final status"
        f"{q.hint}",
    )
