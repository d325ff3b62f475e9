"""The failsafe at run time: health checks, failure accounting, disabling and re-enabling.

Decisions come from the pure functions in ``health`` and ``failsafe``; this module feeds them
recorded facts, writes what happened to the state database and logs the contract lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hsm import clock
from hsm.engine.failsafe import (
    TASK_LEVEL_CAUSES,
    FailsafeConfig,
    failure_rate_reason,
    health_reason,
    script_broken,
)
from hsm.engine.health import (
    DiskStatus,
    HealthStatus,
    HealthVerdict,
    classify,
    next_failure_count,
)
from hsm.sources.base import HealthSample, Source
from hsm.spec.config import HealthConfig
from hsm.state import SourceCounts, Store
from hsm.states import AttemptState, Cause, SourceEventKind

log = logging.getLogger("hsm.sweep")

RECENT = 24 * 3600.0  # "recent" failure rate window for health displays
TASK_LEVEL = [c.value for c in TASK_LEVEL_CAUSES]


@dataclass
class SourceState:
    enabled: bool = True
    disabled_reason: str | None = None
    consecutive: int = 0
    verdict: HealthVerdict | None = None
    sample: HealthSample | None = None


def probe_timeout(source: Source) -> float:
    target = getattr(getattr(source, "transport", None), "target", None)
    connect = getattr(target, "connect_timeout", 3.0)
    return float(connect) + 12.0


async def probe_one(source: Source) -> HealthSample:
    """One bounded probe: a failure of any kind is an unreachable source."""
    try:
        return await asyncio.wait_for(source.probe(), timeout=probe_timeout(source))
    except TimeoutError:
        return HealthSample(reachable=False, error="the health probe timed out")
    except Exception as exc:  # noqa: BLE001 - any probe failure is an unreachable source
        return HealthSample(reachable=False, error=str(exc) or type(exc).__name__)


async def probe_all(sources: Mapping[str, Source]) -> dict[str, HealthSample]:
    """Probe every source at once: a dead host costs its own timeout, not the sum."""
    names = list(sources)
    samples = await asyncio.gather(*(probe_one(sources[n]) for n in names))
    return dict(zip(names, samples, strict=True))


def recent_counts(
    store: Store, name: str, *, sweep_id: str | None = None, since: float | None = None
) -> SourceCounts:
    """Counts since the source was last (re-)enabled, so a re-enable starts afresh."""
    enabled_at = store.last_event_time(name, SourceEventKind.ENABLED)
    floor = max(x for x in (since, enabled_at, 0.0) if x is not None)
    return store.source_counts(name, sweep_id=sweep_id, since=floor or None)


def assess(
    store: Store,
    cfg: HealthConfig,
    name: str,
    sample: HealthSample,
    *,
    own_tasks: int,
    previous: int,
    count: bool,
) -> tuple[HealthVerdict, int]:
    """Classify a sample with the source's recent disk failures and record it. Returns the
    verdict and the count of failed checks in a row (advanced only when ``count``)."""
    counts = recent_counts(store, name, since=clock.time() - RECENT)
    disk_rate = counts.disk_failures / counts.submitted if counts.submitted else 0.0
    verdict = classify(sample, cfg, own_tasks=own_tasks, disk_failure_rate=disk_rate)
    consecutive = next_failure_count(previous, verdict) if count else previous
    store.record_health(
        source=name,
        reachable=sample.reachable,
        disk_path=sample.disk_path,
        free_bytes=sample.free_bytes,
        total_bytes=sample.total_bytes,
        load1=sample.load1,
        cores=sample.cores,
        memory_percent=sample.memory_percent,
        disk_status=verdict.disk_status.value if verdict.disk_status else None,
        status=verdict.status.value,
        detail="; ".join(verdict.reasons) or None,
        consecutive_failures=consecutive,
    )
    return verdict, consecutive


class SourceMonitor:
    def __init__(
        self,
        *,
        store: Store,
        sweep_id: str,
        sources: Mapping[str, Source],
        health: HealthConfig,
        failsafe: FailsafeConfig,
        interval: float,
        running: Callable[[str], int],
    ) -> None:
        self.store = store
        self.sweep_id = sweep_id
        self.sources = sources
        self.health = health
        self.failsafe = failsafe
        self.interval = interval
        self.running = running
        self.state: dict[str, SourceState] = {}
        rows = store.enabled_states()
        for name in sources:
            row = rows.get(name)
            self.state[name] = SourceState(
                enabled=row.enabled if row else True,
                disabled_reason=row.disabled_reason if row else None,
                consecutive=row.consecutive_health_failures if row else 0,
            )
        self._last_refresh = 0.0
        self._any_completed = False
        self._new_task_failure = True  # look once at start (a resumed sweep has a past)

    # -- dispatch decisions --------------------------------------------------------------
    def usable(self, name: str) -> bool:
        """Enabled, and (when there is another source to use instead) healthy. A sweep on a
        single source is not held back by a degraded or critical verdict: its job wrapper's
        disk guard still protects every task."""
        st = self.state[name]
        if not st.enabled:
            return False
        if len(self.sources) == 1:
            return st.verdict is None or st.verdict.disk_status is not None
        return st.verdict is None or st.verdict.takes_tasks

    def capacity(self, name: str, slots: int) -> int:
        """How many of the source's slots may be busy now: a degraded source works on at
        half its slots (at least one) rather than none."""
        verdict = self.state[name].verdict
        if verdict is None or len(self.sources) == 1 and verdict.disk_status is not None:
            return slots
        return verdict.capacity(slots)

    def refresh(self) -> None:
        """Pick up enable/disable done by ``hsm distributed`` from another process."""
        now = clock.monotonic()
        if now - self._last_refresh < 1.0:
            return
        self._last_refresh = now
        rows = self.store.enabled_states()
        for name, st in self.state.items():
            row = rows.get(name)
            enabled = row.enabled if row else True
            if enabled and not st.enabled:
                log.info("Source %s re-enabled", name)
                st.consecutive = 0
                st.verdict = None
            elif st.enabled and not enabled:
                log.warning(
                    "Source %s disabled: %s", name, row.disabled_reason if row else "disabled"
                )
            st.enabled = enabled
            st.disabled_reason = row.disabled_reason if row and not enabled else None

    def disable(self, name: str, message: str) -> None:
        st = self.state[name]
        if not st.enabled:
            return
        log.error("%s", message)
        st.enabled = False
        st.disabled_reason = message
        self.store.set_source_enabled(name, False, reason=message, sweep_id=self.sweep_id)

    # -- failure accounting --------------------------------------------------------------
    def after_attempt(self, name: str, number: int, attempt: int, cause: Cause) -> None:
        """Judge earlier task failures by this outcome, then apply the failure-rate rule.

        A first attempt that completed changes no failure rate: that common case costs no
        query, so large sweeps stay linear."""
        touched = {name}
        if cause is Cause.COMPLETED:
            self._any_completed = True
            if attempt == 1:
                return
            # Failures of this task elsewhere were those sources' fault.
            for row in self.store.task_attempts(self.sweep_id, number):
                if (
                    row.source != name
                    and row.counted is None
                    and row.state is AttemptState.FAILED
                    and row.cause in TASK_LEVEL
                ):
                    touched.add(row.source)
            self.store.judge_task_failures(
                self.sweep_id, number, counted=True, causes=TASK_LEVEL, other_than=name
            )
        elif cause in TASK_LEVEL_CAUSES:
            self._new_task_failure = True
            failed_on = set(self.store.failed_sources_of_task(self.sweep_id, number, TASK_LEVEL))
            if failed_on - {name}:
                # It fails on more than one source: the task's own fault, excused everywhere.
                self.store.judge_task_failures(
                    self.sweep_id, number, counted=False, causes=TASK_LEVEL
                )
        for source in touched:
            if source in self.state:
                self._check_failure_rate(source)

    def _check_failure_rate(self, name: str) -> None:
        if not self.state[name].enabled:
            return
        counts = recent_counts(self.store, name, sweep_id=self.sweep_id)
        reason = failure_rate_reason(name, counts, self.failsafe)
        if reason:
            self.disable(name, reason)

    def broken_script(self) -> bool:
        """Whether the script fails everywhere (asks the database only after a new task
        failure, and never again once any attempt has completed)."""
        if self._any_completed or not self._new_task_failure:
            return False
        self._new_task_failure = False
        completed, failures, spread = self.store.sweep_failure_facts(self.sweep_id, TASK_LEVEL)
        self._any_completed = completed > 0
        return script_broken(
            completed=completed,
            task_failures=failures,
            failed_sources=spread,
            sources=len(self.sources),
            cfg=self.failsafe,
        )

    # -- health checks -------------------------------------------------------------------
    async def check_all(self) -> None:
        samples = await probe_all(self.sources)
        for name, sample in samples.items():
            self._judge(name, sample)

    def _judge(self, name: str, sample: HealthSample) -> None:
        st = self.state[name]
        own = self.running(name) if name == "local" else 0
        verdict, st.consecutive = assess(
            self.store,
            self.health,
            name,
            sample,
            own_tasks=own,
            previous=st.consecutive,
            count=True,
        )
        st.verdict, st.sample = verdict, sample
        self._log(name, verdict)
        if st.enabled:
            reason = health_reason(name, st.consecutive, self.failsafe)
            if reason:
                self.disable(name, reason)

    def _log(self, name: str, verdict: HealthVerdict) -> None:
        st = self.state[name]
        if verdict.disk_status is DiskStatus.CRITICAL:
            log.critical(
                "CRITICAL: %s has critical disk space shortage: %s", name, verdict.disk_summary
            )
        elif not verdict.passed:
            log.warning(
                "Health check failed for %s: %s (%d in a row)",
                name,
                "; ".join(verdict.reasons),
                st.consecutive,
            )
        else:
            level = logging.WARNING if verdict.disk_status is DiskStatus.WARNING else logging.INFO
            log.log(level, "Health check passed for %s: %s", name, verdict.disk_summary)
        if verdict.status is HealthStatus.DEGRADED:
            log.warning("Source %s is degraded: %s", name, "; ".join(verdict.reasons))

    async def run(self, stop: asyncio.Event, wake: asyncio.Event) -> None:
        """Check every source every ``interval`` seconds until ``stop`` is set. Each source
        on its own schedule: a host whose probe hangs delays no other source's check."""
        await asyncio.gather(*(self._run_one(name, stop, wake) for name in self.sources))

    async def _run_one(self, name: str, stop: asyncio.Event, wake: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + self.interval
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, due - loop.time()))
            if stop.is_set():
                return
            due = loop.time() + self.interval  # the next one is due an interval after this
            self._judge(name, await probe_one(self.sources[name]))
            wake.set()

    def describe_unusable(self) -> str:
        parts = []
        for name, st in self.state.items():
            if not st.enabled:
                parts.append(f"{name}: disabled ({st.disabled_reason})")
            elif st.verdict is not None and not st.verdict.passed:
                parts.append(f"{name}: {'; '.join(st.verdict.reasons)}")
            elif st.verdict is not None and st.verdict.reasons:
                parts.append(f"{name}: degraded ({'; '.join(st.verdict.reasons)})")
            elif not self.sources[name].reachable:
                parts.append(f"{name}: unreachable")
        return "; ".join(parts) or "every source is busy"
