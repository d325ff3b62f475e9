"""The sweep summary behind ``hsm status``, ``hsm run --json`` and ``hsm resume --json``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hsm.sources.base import task_folder_name
from hsm.state import RerunRow, Store, SweepRow
from hsm.states import Cause

JSON_COUNT_KEYS = ("completed", "failed", "pending", "running", "cancelled")


@dataclass(frozen=True)
class SourceSummary:
    name: str
    enabled: bool
    disabled_reason: str | None
    submitted: int
    completed: int
    failed: int
    failure_rate: float


@dataclass(frozen=True)
class SweepSummary:
    sweep: SweepRow
    total: int
    counts: dict[str, int]
    causes: dict[str, int]
    sources: list[SourceSummary]
    failed_causes: dict[str, int] = field(default_factory=dict)  # of the failed tasks
    reruns: list[RerunRow] = field(default_factory=list)

    @property
    def timeouts(self) -> int:
        """Failed tasks that hit their walltime (shown apart from the other failures)."""
        return self.failed_causes.get(Cause.TIMEOUT.value, 0)

    def to_json(self, store: Store | None = None, *, with_tasks: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sweep_id": self.sweep.id,
            "sweep_dir": self.sweep.sweep_dir,
            "state": self.sweep.state.value,
            "code_version": self.sweep.code_version,
            "total": self.total,
            "counts": {k: self.counts.get(k, 0) for k in JSON_COUNT_KEYS},
            "sources": {
                s.name: {
                    "enabled": s.enabled,
                    "disabled_reason": s.disabled_reason,
                    "submitted": s.submitted,
                    "completed": s.completed,
                    "failed": s.failed,
                    "failure_rate": round(s.failure_rate, 4),
                }
                for s in self.sources
            },
        }
        if with_tasks and store is not None:
            out["tasks"] = task_list(store, self.sweep)
        return out


def task_list(store: Store, sweep: SweepRow) -> list[dict[str, Any]]:
    return list(iter_task_json(store, sweep))


def iter_task_json(store: Store, sweep: SweepRow) -> Iterator[dict[str, Any]]:
    """The ``tasks`` entries of the JSON object, one at a time."""
    tasks_dir = os.path.join(sweep.sweep_dir, "tasks")
    for t in store.iter_tasks(sweep.id):
        yield {
            "number": t.number,
            "params": t.params,
            "status": t.status.value,
            "cause": t.cause,
            "source": t.source,
            "attempts": t.attempts,
            "task_dir": os.path.join(tasks_dir, task_folder_name(t.number)),
            "exit_code": t.exit_code,
        }


def summarize(store: Store, sweep_id: str) -> SweepSummary:
    sweep = store.sweep(sweep_id)
    counts = {k.value: v for k, v in store.task_counts(sweep_id).items()}
    reruns = store.reruns(sweep_id)
    names = [
        *sweep.sources,
        *(n for r in reruns for n in r.sources or ()),
        *store.attempt_sources(sweep_id),
    ]
    sources = []
    for name in dict.fromkeys(names):
        row = store.source(name)
        c = store.source_counts(name, sweep_id=sweep_id)
        sources.append(
            SourceSummary(
                name,
                row.enabled,
                row.disabled_reason,
                c.submitted,
                c.completed,
                c.failed,
                c.failure_rate,
            )
        )
    return SweepSummary(
        sweep,
        sum(counts.values()),
        counts,
        store.cause_counts(sweep_id),
        sources,
        store.failed_causes(sweep_id),
        reruns,
    )


def failed_message(store: Store, sweep_id: str, failed: int) -> str:
    """The end-of-run line of a sweep with failed tasks: how to rerun them, and the
    timeouts with a longer walltime."""
    message = f"{failed} task(s) failed; rerun them with: hsm resume {sweep_id} --retry-failed"
    timeouts = store.failed_causes(sweep_id).get(Cause.TIMEOUT.value, 0)
    if timeouts:
        message += (
            f"; {timeouts} of them hit the walltime: rerun those with a longer one,"
            f" e.g. hsm resume {sweep_id} --retry-failed --cause timeout"
            f" --walltime HH:MM:SS"
        )
    return message
