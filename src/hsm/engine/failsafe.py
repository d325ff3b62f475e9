"""Source failsafe decisions. Pure: functions of recorded facts and the config keys."""

from __future__ import annotations

from dataclasses import dataclass

from hsm.spec.config import DistributedConfig
from hsm.state import SourceCounts
from hsm.states import Cause

# Failures that may be the task's own fault. They count against a source only once the
# same task has completed on another source; they are excused once it has failed on another
# source too.
TASK_LEVEL_CAUSES = frozenset({Cause.TASK_FAILED, Cause.SIGNAL, Cause.OUT_OF_MEMORY})


@dataclass(frozen=True)
class FailsafeConfig:
    enabled: bool = True
    threshold: float = 0.4
    min_jobs: int = 5
    auto_disable_unhealthy: bool = True
    health_failures: int = 3

    @classmethod
    def from_config(cls, dist: DistributedConfig) -> FailsafeConfig:
        return cls(
            dist.enable_source_failsafe,
            dist.source_failure_threshold,
            dist.min_jobs_for_failsafe,
            dist.auto_disable_unhealthy_sources,
            dist.health_check_failure_threshold,
        )


def failure_rate_reason(name: str, counts: SourceCounts, cfg: FailsafeConfig) -> str | None:
    """The disable message when the source's failure rate is too high, else None."""
    if not cfg.enabled or counts.finished < cfg.min_jobs:
        return None
    rate = counts.failure_rate
    if rate < cfg.threshold:
        return None
    return (
        f"Disabling source '{name}' due to high failure rate: "
        f"{counts.failed}/{counts.finished} ({rate:.0%}) >= {cfg.threshold:.0%}"
    )


def health_reason(name: str, consecutive: int, cfg: FailsafeConfig) -> str | None:
    """The disable message after too many failed health checks in a row, else None."""
    if not cfg.auto_disable_unhealthy or consecutive < cfg.health_failures:
        return None
    return f"Disabling source '{name}' due to {consecutive} consecutive health check failures"


def script_broken(
    *, completed: int, task_failures: int, failed_sources: int, sources: int, cfg: FailsafeConfig
) -> bool:
    """Whether the script itself fails everywhere: stop the sweep instead of the sources.

    True once at least ``min_jobs`` attempts failed for task-level causes on every source
    of the sweep (at most two need to agree), while no attempt has completed.
    """
    return completed == 0 and task_failures >= cfg.min_jobs and failed_sources >= min(sources, 2)
