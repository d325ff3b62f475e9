from hsm.engine.policy import home_source, homes, judge_attempt
from hsm.engine.strategy import LeastLoaded, RoundRobin, SlotView, prefer
from hsm.states import AttemptState, Cause, TaskStatus


def test_completed_is_final() -> None:
    v = judge_attempt(Cause.COMPLETED, attempt=1, max_retries=2)
    assert (v.attempt_state, v.task_status, v.retry) == (
        AttemptState.COMPLETED,
        TaskStatus.COMPLETED,
        False,
    )


def test_task_failure_is_not_retried_by_default() -> None:
    v = judge_attempt(Cause.TASK_FAILED, attempt=1, max_retries=2)
    assert (v.attempt_state, v.task_status, v.retry) == (
        AttemptState.FAILED,
        TaskStatus.FAILED,
        False,
    )


def test_infrastructure_causes_retry_within_budget() -> None:
    for cause in (
        Cause.LOST,
        Cause.DISK_KILL,
        Cause.DISK_PRECHECK,
        Cause.TIMEOUT,
        Cause.NODE_FAIL,
        Cause.PREEMPTED,
    ):
        assert judge_attempt(cause, attempt=1, max_retries=2).retry
        assert judge_attempt(cause, attempt=3, max_retries=2).retry is False
        assert judge_attempt(cause, attempt=3, max_retries=2).task_status is TaskStatus.FAILED
    assert judge_attempt(Cause.LOST, attempt=1, max_retries=2).attempt_state is AttemptState.LOST


def test_zero_retries() -> None:
    assert not judge_attempt(Cause.LOST, attempt=1, max_retries=0).retry


def test_retry_task_failures_flag() -> None:
    assert judge_attempt(
        Cause.TASK_FAILED, attempt=1, max_retries=2, retry_task_failures=True
    ).retry


def test_cancelled() -> None:
    v = judge_attempt(Cause.CANCELLED, attempt=1, max_retries=2)
    assert v.task_status is TaskStatus.CANCELLED and not v.retry


def test_round_robin_rotates_over_free_sources() -> None:
    rr = RoundRobin()
    order = ["a", "b", "c"]
    c = [SlotView("a", 1, 0), SlotView("b", 1, 0), SlotView("c", 1, 0)]
    assert [rr.pick(c, order).name for _ in range(4)] == ["a", "b", "c", "a"]
    assert rr.pick([SlotView("c", 1, 0)], order).name == "c"


def test_least_loaded_picks_smallest_share() -> None:
    ll = LeastLoaded()
    c = [SlotView("a", 4, 3), SlotView("b", 2, 1), SlotView("c", 8, 2)]
    assert ll.pick(c, ["a", "b", "c"]).name == "c"


def test_prefer_avoids_failed_sources_when_possible() -> None:
    c = [SlotView("a", 1, 0), SlotView("b", 1, 0)]
    assert [v.name for v in prefer(c, {"a"})] == ["b"]
    assert [v.name for v in prefer(c, {"a", "b"})] == ["a", "b"]


def test_a_retry_after_a_walltime_or_preemption_goes_home() -> None:
    recorded = [
        (1, 1, "c1", "timeout"),
        (2, 1, "c1", "preempted"),
        (2, 2, "c2", "node_fail"),  # its last attempt: no checkpoint to go back to
        (3, 1, "c2", "preempted"),
        (4, 1, "c1", None),  # running
        (5, 2, "c2", "timeout"),
        (5, 1, "c1", "task_failed"),  # listed out of order
    ]
    assert homes(recorded) == {1: "c1", 3: "c2", 5: "c2"}
    assert home_source(Cause.TIMEOUT, "c1") == "c1"
    assert home_source(Cause.LOST, "c1") is None
