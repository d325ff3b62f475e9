"""The attempt lifecycle: one pure function from facts to the attempt's next state."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hsm.engine.lifecycle import START_GRACE, Facts, Next, QueueFacts, decide
from hsm.jobscript import WrapperState, WrapperStatus
from hsm.states import Cause

RUNNING = WrapperStatus(
    version=2,
    attempt=2,
    status=WrapperState.RUNNING,
    cause=None,
    exit_code=None,
    pid=10,
    pgid=11,
    host="h",
    started=1.0,
    finished=None,
    nonce="ab12",
)
DONE = replace(
    RUNNING, status=WrapperState.COMPLETED, cause=Cause.COMPLETED, exit_code=0, finished=2.0
)
FAILED = replace(DONE, status=WrapperState.FAILED, cause=Cause.DISK_KILL, exit_code=None)


def facts(**kw: object) -> Facts:
    return Facts(**{"attempt": 2, "nonce": "ab12", **kw})  # type: ignore[arg-type]


def test_a_final_status_of_this_attempt_finishes_it_with_its_cause() -> None:
    assert decide(facts(status=DONE), lost_after=4).next is Next.FINISHED
    v = decide(facts(status=FAILED, host_answered=False, silent_for=99), lost_after=4)
    assert (v.next, v.cause) == (Next.FINISHED, Cause.DISK_KILL)


def test_the_scheduler_cause_wins_over_the_wrapper_cause() -> None:
    v = decide(facts(status=DONE, scheduler_cause=Cause.TIMEOUT), lost_after=4)
    assert (v.next, v.cause) == (Next.FINISHED, Cause.TIMEOUT)


@pytest.mark.parametrize("other", [replace(DONE, nonce="ffff"), replace(DONE, attempt=1)])
def test_another_attempts_status_is_never_taken(other: WrapperStatus) -> None:
    # A superseded attempt, or a relaunch under another nonce: not this attempt's result.
    v = decide(facts(status=other, since_launch=1.0), lost_after=4)
    assert v.next is Next.STARTING
    v = decide(facts(status=other, since_launch=START_GRACE + 1), lost_after=4)
    assert v.next is Next.LOST


def test_a_status_without_nonce_from_an_older_wrapper_is_accepted() -> None:
    assert decide(facts(status=replace(DONE, nonce="")), lost_after=4).next is Next.FINISHED


def test_a_silent_host_is_unknown_until_lost_after() -> None:
    quiet = facts(status=RUNNING, host_answered=False, silent_for=3.9)
    assert decide(quiet, lost_after=4).next is Next.UNKNOWN
    v = decide(replace(quiet, silent_for=4.0), lost_after=4)
    assert (v.next, v.cause) == (Next.LOST, Cause.LOST)


def test_a_running_status_with_a_dead_wrapper_is_lost() -> None:
    assert decide(facts(status=RUNNING, wrapper_alive=True), lost_after=4).next is Next.RUNNING
    assert decide(facts(status=RUNNING, wrapper_alive=None), lost_after=4).next is Next.RUNNING
    v = decide(facts(status=RUNNING, wrapper_alive=False), lost_after=4)
    assert (v.next, v.cause) == (Next.LOST, Cause.LOST)


def test_never_started_needs_the_hosts_word() -> None:
    # The host answered that it never got the launch: proven never started.
    assert decide(facts(received=False), lost_after=4).next is Next.NOT_STARTED
    # No word either way: it waits out the start grace, then it is lost (a try is used).
    assert decide(facts(received=None, since_launch=1), lost_after=4).next is Next.STARTING
    assert decide(facts(received=None, since_launch=START_GRACE), lost_after=4).next is Next.LOST
    # The host got it and shows nothing: lost, not "never started".
    v = decide(facts(received=True, wrapper_alive=False, since_launch=START_GRACE), lost_after=4)
    assert v.next is Next.LOST and "got the launch" in v.detail
    # A live wrapper that has not written its status yet is starting, however long.
    assert (
        decide(facts(received=True, wrapper_alive=True, since_launch=600), lost_after=4).next
        is Next.STARTING
    )
    # A silent host proves nothing.
    assert decide(facts(received=False, host_answered=False), lost_after=4).next is Next.UNKNOWN


def test_a_scheduler_end_before_any_status_is_lost_with_its_cause() -> None:
    v = decide(facts(scheduler_cause=Cause.NODE_FAIL), lost_after=4)
    assert (v.next, v.cause) == (Next.LOST, Cause.NODE_FAIL)


def test_a_queued_attempt_is_decided_from_the_scheduler_s_word_and_its_status() -> None:
    # (The cases in full: tests/unit/test_queue.py.) The scheduler's facts decide only with
    # the status file: a status of another launch of the same attempt number is not its own.
    other = facts(status=DONE, queue=QueueFacts(state=None), nonce="ffff")
    assert decide(other, lost_after=4).next is Next.LOST
    own = facts(status=DONE, queue=QueueFacts(state=None))
    assert decide(own, lost_after=4).cause is Cause.COMPLETED


def test_a_final_status_whose_results_are_on_the_way_waits() -> None:
    v = decide(facts(status=DONE, collectable=False), lost_after=4)
    assert v.next is Next.RUNNING


def test_a_status_caught_half_written_is_read_again_not_lost() -> None:
    v = decide(facts(status=None, status_unreadable=True, since_launch=600), lost_after=4)
    assert v.next is Next.UNKNOWN
    # ...unless its wrapper is gone: then nothing will write it again.
    gone = facts(status=None, status_unreadable=True, wrapper_alive=False)
    assert decide(gone, lost_after=4).next is Next.LOST
