"""The attempt lifecycle: one pure function turns the facts a backend reports about an
attempt into its next state and cause. Backends gather facts; only this module decides.

The facts about one attempt (see ``Facts``):

- the status file's contents, already parsed (``hsm.jobscript.parse_status``), and whether
  they are this attempt's: the same attempt number and launch nonce (fencing);
- whether the job wrapper process is alive (None when that cannot be told);
- whether the host answered this poll, and for how long it has been silent;
- whether the host holds the launch request of this attempt (None when it cannot tell);
- the launch acknowledgement, and how long ago the launch was sent;
- the scheduler's verdict for the element, for queue backends;
- whether the results of a final status can be collected yet (a pull may be on its way).

No verdict without evidence: "never started" needs the host's word that it never got the
launch, and an attempt whose host is silent stays unresolved until ``lost_after`` has passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from hsm.jobscript import WrapperStatus
from hsm.states import Cause

# A wrapper writes its first status within milliseconds of its start; an attempt whose host
# got the launch but shows neither a status nor a live wrapper after this long is lost.
START_GRACE = 10.0


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


_FROM_STATE = {
    "starting": Next.STARTING,
    "running": Next.RUNNING,
    "finished": Next.FINISHED,
    "lost": Next.LOST,
    "unknown": Next.UNKNOWN,
}


def from_state(
    state: str, status: WrapperStatus | None, scheduler_cause: str | None, detail: str
) -> Verdict:
    """The verdict of a backend that reports a state rather than facts (a batch scheduler's
    backend translates its scheduler's states into one of ``PollState``)."""
    nxt = _FROM_STATE[state]
    sched = Cause(scheduler_cause) if scheduler_cause else None
    if nxt is Next.FINISHED:
        cause = sched or (status.cause if status is not None else None) or Cause.TASK_FAILED
        return Verdict(nxt, cause, detail)
    if nxt is Next.LOST:
        return Verdict(nxt, sched or Cause.LOST, detail)
    return Verdict(nxt, None, detail)
