from hsm.engine.failsafe import FailsafeConfig, failure_rate_reason, health_reason, script_broken
from hsm.state import SourceCounts

CFG = FailsafeConfig()


def counts(completed: int, failed: int) -> SourceCounts:
    return SourceCounts(submitted=completed + failed, completed=completed, failed=failed)


def test_failure_rate_message_is_exact() -> None:
    assert failure_rate_reason("blossom", counts(2, 3), CFG) == (
        "Disabling source 'blossom' due to high failure rate: 3/5 (60%) >= 40%"
    )


def test_exactly_at_the_threshold_disables() -> None:
    assert failure_rate_reason("b", counts(3, 2), CFG) is not None  # 2/5 = 40 %


def test_below_threshold_or_min_jobs_does_not() -> None:
    assert failure_rate_reason("b", counts(4, 2), CFG) is None  # 33 %
    assert failure_rate_reason("b", counts(0, 4), CFG) is None  # 4 < min_jobs
    assert failure_rate_reason("b", counts(0, 4), FailsafeConfig(min_jobs=4)) is not None


def test_failsafe_switch() -> None:
    assert failure_rate_reason("b", counts(0, 10), FailsafeConfig(enabled=False)) is None


def test_health_disable_message_and_switch() -> None:
    assert health_reason("blossom", 2, CFG) is None
    assert health_reason("blossom", 3, CFG) == (
        "Disabling source 'blossom' due to 3 consecutive health check failures"
    )
    assert health_reason("blossom", 9, FailsafeConfig(auto_disable_unhealthy=False)) is None


def test_script_broken_needs_failures_everywhere_and_no_success() -> None:
    assert script_broken(completed=0, task_failures=5, failed_sources=2, sources=3, cfg=CFG)
    assert not script_broken(completed=1, task_failures=50, failed_sources=3, sources=3, cfg=CFG)
    assert not script_broken(completed=0, task_failures=4, failed_sources=2, sources=2, cfg=CFG)
    assert not script_broken(completed=0, task_failures=5, failed_sources=1, sources=2, cfg=CFG)
    assert script_broken(completed=0, task_failures=5, failed_sources=1, sources=1, cfg=CFG)
