"""Health classification of a source. Pure: a function of one sample and recorded facts."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from hsm.sources.base import HealthSample
from hsm.spec.config import HealthConfig


class DiskStatus(StrEnum):
    HEALTHY = "healthy"
    WARNING = "warning"
    CRITICAL = "critical"


class HealthStatus(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"  # reachable and working, at reduced capacity (half its slots)
    UNHEALTHY = "unhealthy"  # a failed health check


@dataclass(frozen=True)
class HealthVerdict:
    status: HealthStatus
    disk_status: DiskStatus | None
    passed: bool  # the health check passed (resets the consecutive failure count)
    disk_summary: str  # e.g. "Healthy: 5.2GB (15%) free"
    reasons: tuple[str, ...] = ()  # why degraded or unhealthy

    @property
    def takes_tasks(self) -> bool:
        """Whether new tasks may start there (a degraded source takes fewer, see
        ``capacity``)."""
        return self.status is not HealthStatus.UNHEALTHY

    def capacity(self, slots: int) -> int:
        """How many of ``slots`` may be busy: all when healthy, half (at least one) when
        degraded, none when unhealthy."""
        if self.status is HealthStatus.HEALTHY:
            return slots
        if self.status is HealthStatus.DEGRADED:
            return max(1, slots // 2)
        return 0


def percent_free(free: int, total: int) -> float:
    return 100.0 * free / total if total else 0.0


def classify_disk(free: int, total: int, cfg: HealthConfig) -> DiskStatus:
    pct = percent_free(free, total)
    if free < cfg.disk_critical_free or pct < cfg.disk_critical_percent:
        return DiskStatus.CRITICAL
    if free < cfg.disk_warning_free or pct < cfg.disk_warning_percent:
        return DiskStatus.WARNING
    return DiskStatus.HEALTHY


def disk_summary(status: DiskStatus, free: int, total: int) -> str:
    """``Healthy: 5.2GB (15%) free`` (GB = 10^9 bytes, as everywhere in hsm)."""
    pct = percent_free(free, total)
    return f"{status.value.capitalize()}: {free / 1e9:.1f}GB ({pct:.0f}%) free"


def load_per_core(sample: HealthSample, own_tasks: int = 0) -> float | None:
    """Load per core, not counting the load of hsm's own tasks on that machine."""
    if sample.load1 is None or not sample.cores:
        return None
    return max(0.0, sample.load1 - own_tasks) / sample.cores


def classify(
    sample: HealthSample, cfg: HealthConfig, *, own_tasks: int = 0, disk_failure_rate: float = 0.0
) -> HealthVerdict:
    """Classify one health sample.

    - unreachable, or critical disk: unhealthy, and the check counts as failed;
    - overload (load per core or memory above the limits), or a high rate of disk-guard
      failures while the disk is low: degraded (the check passes; the source goes on at
      half its slots);
    - otherwise healthy.
    """
    if not sample.reachable:
        return HealthVerdict(
            HealthStatus.UNHEALTHY,
            None,
            False,
            "unreachable",
            (f"unreachable: {sample.error or 'no answer'}",),
        )
    if sample.free_bytes is None or sample.total_bytes is None:
        return HealthVerdict(
            HealthStatus.UNHEALTHY,
            None,
            False,
            "disk unknown",
            (sample.error or "the probe returned no disk figures",),
        )
    disk = classify_disk(sample.free_bytes, sample.total_bytes, cfg)
    summary = disk_summary(disk, sample.free_bytes, sample.total_bytes)
    if disk is DiskStatus.CRITICAL:
        limits = (
            f"health.disk_critical_free: {cfg.disk_critical_free / 1e9:g}GB, "
            f"health.disk_critical_percent: {cfg.disk_critical_percent:g}%"
        )
        return HealthVerdict(
            HealthStatus.UNHEALTHY,
            disk,
            False,
            summary,
            (f"critical disk space shortage: {summary} ({limits})",),
        )
    reasons: list[str] = []
    if disk is DiskStatus.WARNING and disk_failure_rate >= cfg.disk_failure_rate:
        reasons.append("High disk failure rate with low space")
    per_core = load_per_core(sample, own_tasks)
    if per_core is not None and per_core > cfg.max_load_per_core:
        reasons.append(
            f"System overload: load {per_core:.2f} per core > "
            f"{cfg.max_load_per_core:g} (health.max_load_per_core)"
        )
    if sample.memory_percent is not None and sample.memory_percent > cfg.max_memory_percent:
        reasons.append(
            f"System overload: memory {sample.memory_percent:.0f}% used > "
            f"{cfg.max_memory_percent:g}% (health.max_memory_percent)"
        )
    status = HealthStatus.DEGRADED if reasons else HealthStatus.HEALTHY
    return HealthVerdict(status, disk, True, summary, tuple(reasons))


def next_failure_count(previous: int, verdict: HealthVerdict) -> int:
    """Consecutive failed checks: +1 on a failed check, back to 0 on any passed one."""
    return 0 if verdict.passed else previous + 1
