from hsm.engine.health import (
    DiskStatus,
    HealthStatus,
    classify,
    classify_disk,
    disk_summary,
    next_failure_count,
)
from hsm.sources.base import HealthSample
from hsm.spec.config import HealthConfig

GB = 10**9
CFG = HealthConfig()


def sample(
    free: int, total: int = 100 * GB, load1: float = 0.1, cores: int = 4, mem: float = 20.0
) -> HealthSample:
    return HealthSample(
        reachable=True,
        disk_path="/w",
        free_bytes=free,
        total_bytes=total,
        load1=load1,
        cores=cores,
        memory_percent=mem,
    )


def test_disk_classes_by_size_and_percent() -> None:
    assert classify_disk(50 * GB, 100 * GB, CFG) is DiskStatus.HEALTHY
    assert classify_disk(int(2.9 * GB), 10 * GB, CFG) is DiskStatus.WARNING  # < 3 GB
    assert classify_disk(9 * GB, 100 * GB, CFG) is DiskStatus.WARNING  # < 10 %
    assert classify_disk(int(0.8 * GB), 10 * GB, CFG) is DiskStatus.CRITICAL  # < 1 GB
    assert classify_disk(4 * GB, 100 * GB, CFG) is DiskStatus.CRITICAL  # < 5 %


def test_disk_thresholds_are_exclusive_at_the_edge() -> None:
    assert classify_disk(1 * GB, 10 * GB, CFG) is DiskStatus.WARNING  # exactly 1 GB
    assert classify_disk(3 * GB, 30 * GB, CFG) is DiskStatus.HEALTHY  # exactly 3 GB, 10 %
    assert classify_disk(5 * GB, 100 * GB, CFG) is DiskStatus.WARNING  # exactly 5 %


def test_summary_wording() -> None:
    assert (
        disk_summary(DiskStatus.HEALTHY, int(5.2 * GB), int(34.7 * GB))
        == "Healthy: 5.2GB (15%) free"
    )
    assert (
        disk_summary(DiskStatus.CRITICAL, int(0.8 * GB), int(26.7 * GB))
        == "Critical: 0.8GB (3%) free"
    )


def test_unreachable_and_critical_fail_the_check() -> None:
    v = classify(HealthSample(reachable=False, error="timeout"), CFG)
    assert (v.status, v.passed) == (HealthStatus.UNHEALTHY, False)
    v = classify(sample(int(0.5 * GB), 10 * GB), CFG)
    assert (v.status, v.passed, v.disk_status) == (
        HealthStatus.UNHEALTHY,
        False,
        DiskStatus.CRITICAL,
    )


def test_overload_degrades_but_passes() -> None:
    v = classify(sample(50 * GB, load1=9.0, cores=4), CFG)
    assert (v.status, v.passed) == (HealthStatus.DEGRADED, True)
    # Degraded keeps working, at half its slots (at least one); unhealthy takes none.
    assert v.takes_tasks and [v.capacity(n) for n in (1, 2, 4, 5)] == [1, 1, 2, 2]
    assert "(health.max_load_per_core)" in v.reasons[0]  # the key to change
    v = classify(sample(50 * GB, mem=97.0), CFG)
    assert v.status is HealthStatus.DEGRADED
    assert "(health.max_memory_percent)" in v.reasons[0]
    critical = classify(sample(int(0.5 * GB), 10 * GB), CFG)
    assert not critical.takes_tasks and critical.capacity(4) == 0
    assert "health.disk_critical_free: 1GB" in critical.reasons[0]
    assert "Critical: 0.5GB (5%) free" in critical.reasons[0]


def test_own_tasks_do_not_make_this_machine_overloaded() -> None:
    # 8 of hsm's own tasks on 4 cores: load 8.5 is theirs, not an overload.
    assert (
        classify(sample(50 * GB, load1=8.5, cores=4), CFG, own_tasks=8).status
        is HealthStatus.HEALTHY
    )
    assert (
        classify(sample(50 * GB, load1=8.5, cores=4), CFG, own_tasks=0).status
        is HealthStatus.DEGRADED
    )


def test_disk_failure_rate_with_low_space_degrades() -> None:
    v = classify(sample(int(2 * GB), 10 * GB), CFG, disk_failure_rate=0.5)
    assert v.status is HealthStatus.DEGRADED
    assert "High disk failure rate with low space" in v.reasons
    # High disk failure rate alone, with plenty of space: healthy.
    assert classify(sample(50 * GB), CFG, disk_failure_rate=0.5).status is HealthStatus.HEALTHY


def test_consecutive_count_resets_on_any_passed_check() -> None:
    bad = classify(HealthSample(reachable=False), CFG)
    degraded = classify(sample(50 * GB, load1=20.0), CFG)
    healthy = classify(sample(50 * GB), CFG)
    n = next_failure_count(0, bad)
    n = next_failure_count(n, bad)
    assert n == 2
    assert next_failure_count(n, degraded) == 0
    assert next_failure_count(n, healthy) == 0
