"""``hsm distributed health``: probe sources now and classify them with recorded facts."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hsm import clock
from hsm.engine.health import HealthStatus, HealthVerdict, percent_free
from hsm.engine.listing import SourceListing, source_listing
from hsm.engine.monitor import RECENT, assess, probe_all, recent_counts
from hsm.engine.service import Project
from hsm.sources.base import HealthSample
from hsm.sources.registry import build_sources
from hsm.state import Store

TREND_POINTS = 12


@dataclass(frozen=True)
class SourceHealth:
    """One row of ``hsm distributed health``: the source as listed, its sample just taken,
    and the verdict on it with the facts recorded of it."""

    source: SourceListing
    sample: HealthSample
    verdict: HealthVerdict
    failure_rate: float
    failed: int
    finished: int
    consecutive_failures: int
    trend: list[int]  # disk free bytes, oldest first
    running: int  # tasks hsm runs there now

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def unhealthy(self) -> bool:
        return self.verdict.status is HealthStatus.UNHEALTHY

    def to_json(self) -> dict[str, Any]:
        s = self.sample
        disk: dict[str, Any] | None = None
        if s.free_bytes is not None and s.total_bytes is not None:
            disk = {
                "path": s.disk_path,
                "free_bytes": s.free_bytes,
                "total_bytes": s.total_bytes,
                "percent_free": round(percent_free(s.free_bytes, s.total_bytes), 2),
                "status": self.verdict.disk_status.value if self.verdict.disk_status else None,
            }
        return {
            "name": self.name,
            "enabled": self.source.enabled,
            "disabled_reason": self.source.disabled_reason,
            "reachable": s.reachable,
            "status": self.verdict.status.value,
            "reasons": list(self.verdict.reasons),
            "disk": disk,
            "load": {"1m": s.load1, "cores": s.cores},
            "memory_percent": s.memory_percent,
            "failure_rate": round(self.failure_rate, 4),
            "consecutive_health_failures": self.consecutive_failures,
            "error": s.error,
            "extra": dict(s.extra),
        }


def check_health(project: Project, names: Sequence[str]) -> list[SourceHealth]:
    """Probe every named source at once, record the samples, and classify them."""
    sources = build_sources(project.loaded, names, parallel=None)

    async def probe() -> dict[str, HealthSample]:
        try:
            return await probe_all(sources)
        finally:
            await asyncio.gather(*(s.close() for s in sources.values()), return_exceptions=True)

    samples = asyncio.run(probe())
    store = project.open_store(create=True)
    try:
        return [_row(store, project, name, samples[name]) for name in names]
    finally:
        store.close()


def _row(store: Store, project: Project, name: str, sample: HealthSample) -> SourceHealth:
    cfg = project.loaded.config.health
    row = store.source(name)
    counts = recent_counts(store, name, since=clock.time() - RECENT)
    running = store.running_attempts(name)
    verdict, _ = assess(
        store,
        cfg,
        name,
        sample,
        own_tasks=running if name == "local" else 0,
        previous=row.consecutive_health_failures,
        count=False,
    )
    trend = [
        h.free_bytes
        for h in store.health_samples(name, limit=TREND_POINTS)
        if h.free_bytes is not None
    ]
    return SourceHealth(
        source_listing(project, name, row),
        sample,
        verdict,
        counts.failure_rate,
        counts.failed,
        counts.finished,
        row.consecutive_health_failures,
        trend,
        running,
    )
