"""The sources: enabled or not, their health samples, their events and attempt counts."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hsm import clock
from hsm.state.db import ACTIVE, StoreBase, marks
from hsm.states import DISK_CAUSES, AttemptState, SourceEventKind


@dataclass(frozen=True)
class SourceRow:
    name: str
    enabled: bool
    disabled_reason: str | None
    disabled_at: float | None
    consecutive_health_failures: int
    last_status: str | None


@dataclass(frozen=True)
class EventRow:
    time: float
    source: str
    kind: str
    message: str
    sweep_id: str | None


@dataclass(frozen=True)
class HealthRow:
    time: float
    source: str
    reachable: bool
    disk_path: str | None
    free_bytes: int | None
    total_bytes: int | None
    load1: float | None
    cores: int | None
    memory_percent: float | None
    disk_status: str | None
    status: str
    detail: str | None


@dataclass(frozen=True)
class SourceCounts:
    submitted: int = 0
    completed: int = 0
    failed: int = 0  # failures judged to be the source's fault
    failed_by_cause: Mapping[str, int] | None = None
    unjudged: int = 0  # task failures not (yet) known to be the source's or the task's
    disk_failures: int = 0  # attempts refused or killed by the disk guard

    @property
    def finished(self) -> int:
        return self.completed + self.failed

    @property
    def failure_rate(self) -> float:
        return self.failed / self.finished if self.finished else 0.0


def _source(row: sqlite3.Row) -> SourceRow:
    return SourceRow(
        row["name"],
        bool(row["enabled"]),
        row["disabled_reason"],
        row["disabled_at"],
        row["consecutive_health_failures"],
        row["last_status"],
    )


class SourceQueries(StoreBase):
    """The sources' recorded state (a source never recorded is enabled), health and events."""

    def source(self, name: str) -> SourceRow:
        row = self._one("SELECT * FROM sources WHERE name = ?", (name,))
        return SourceRow(name, True, None, None, 0, None) if row is None else _source(row)

    def _upsert_source(self, tx: sqlite3.Connection, name: str) -> None:
        tx.execute(
            "INSERT OR IGNORE INTO sources (name, updated) VALUES (?, ?)", (name, clock.time())
        )

    def set_source_enabled(
        self, name: str, enabled: bool, *, reason: str | None, sweep_id: str | None = None
    ) -> None:
        now = clock.time()
        with self.transaction() as tx:
            self._upsert_source(tx, name)
            tx.execute(
                "UPDATE sources SET enabled = ?, disabled_reason = ?, disabled_at = ?,"
                " consecutive_health_failures = CASE WHEN ? THEN 0"
                " ELSE consecutive_health_failures END, updated = ? WHERE name = ?",
                (
                    int(enabled),
                    None if enabled else reason,
                    None if enabled else now,
                    int(enabled),
                    now,
                    name,
                ),
            )
            kind = SourceEventKind.ENABLED if enabled else SourceEventKind.DISABLED
            message = reason or kind.value
            tx.execute(
                "INSERT INTO source_events (time, source, kind, message, sweep_id)"
                " VALUES (?, ?, ?, ?, ?)",
                (now, name, kind.value, message, sweep_id),
            )

    def record_health(
        self,
        *,
        source: str,
        reachable: bool,
        disk_path: str | None,
        free_bytes: int | None,
        total_bytes: int | None,
        load1: float | None,
        cores: int | None,
        memory_percent: float | None,
        disk_status: str | None,
        status: str,
        detail: str | None,
        consecutive_failures: int,
    ) -> None:
        now = clock.time()
        with self.transaction() as tx:
            self._upsert_source(tx, source)
            tx.execute(
                "INSERT INTO health_samples (time, source, reachable, disk_path, free_bytes,"
                " total_bytes, load1, cores, memory_percent, disk_status, status, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    now,
                    source,
                    int(reachable),
                    disk_path,
                    free_bytes,
                    total_bytes,
                    load1,
                    cores,
                    memory_percent,
                    disk_status,
                    status,
                    detail,
                ),
            )
            tx.execute(
                "UPDATE sources SET consecutive_health_failures = ?, last_status = ?,"
                " updated = ? WHERE name = ?",
                (consecutive_failures, status, now, source),
            )

    def health_samples(
        self, source: str, *, limit: int = 20, since: float | None = None
    ) -> list[HealthRow]:
        sql = "SELECT * FROM health_samples WHERE source = ?"
        args: list[Any] = [source]
        if since is not None:
            sql += " AND time >= ?"
            args.append(since)
        rows = self._conn.execute(sql + " ORDER BY time DESC LIMIT ?", (*args, limit))
        out = [
            HealthRow(
                r["time"],
                r["source"],
                bool(r["reachable"]),
                r["disk_path"],
                r["free_bytes"],
                r["total_bytes"],
                r["load1"],
                r["cores"],
                r["memory_percent"],
                r["disk_status"],
                r["status"],
                r["detail"],
            )
            for r in rows
        ]
        out.reverse()
        return out

    def last_event_time(self, source: str, kind: SourceEventKind) -> float | None:
        row = self._one(
            "SELECT max(time) FROM source_events WHERE source = ? AND kind = ?",
            (source, kind.value),
        )
        return row[0] if row else None

    def enabled_states(self) -> dict[str, SourceRow]:
        rows = self._conn.execute("SELECT * FROM sources")
        return {r["name"]: _source(r) for r in rows}

    def events(
        self, *, source: str | None = None, since: float | None = None, limit: int = 1000
    ) -> list[EventRow]:
        sql = "SELECT * FROM source_events WHERE 1 = 1"
        args: list[Any] = []
        if source is not None:
            sql += " AND source = ?"
            args.append(source)
        if since is not None:
            sql += " AND time >= ?"
            args.append(since)
        rows = self._conn.execute(sql + " ORDER BY id LIMIT ?", (*args, limit))
        return [
            EventRow(r["time"], r["source"], r["kind"], r["message"], r["sweep_id"]) for r in rows
        ]

    # -- attempt counts (the failsafe's facts) -------------------------------------------
    def source_counts(
        self, source: str, *, sweep_id: str | None = None, since: float | None = None
    ) -> SourceCounts:
        """Attempt counts of one source. Only failures judged against it count as failed."""
        unfinished = [*ACTIVE, AttemptState.NOT_STARTED.value]
        sql = (
            "SELECT state, cause, counted, count(*) FROM attempts WHERE source = ?"
            f" AND state NOT IN ({marks(unfinished)})"
        )
        args: list[Any] = [source, *unfinished]
        if sweep_id is not None:
            sql += " AND sweep_id = ?"
            args.append(sweep_id)
        if since is not None:
            sql += " AND started >= ?"
            args.append(since)
        submitted = completed = failed = unjudged = disk = 0
        by_cause: dict[str, int] = {}
        for state, cause, counted, n in self._conn.execute(
            sql + " GROUP BY state, cause, counted", args
        ):
            submitted += n
            if state == AttemptState.COMPLETED.value:
                completed += n
            elif state in (AttemptState.FAILED.value, AttemptState.LOST.value):
                key = cause or state
                by_cause[key] = by_cause.get(key, 0) + n
                if key in DISK_CAUSES:
                    disk += n
                if counted == 1:
                    failed += n
                elif counted is None:
                    unjudged += n
        active = self._one(
            f"SELECT count(*) FROM attempts WHERE source = ? AND state IN ({marks(ACTIVE)})"
            + (" AND sweep_id = ?" if sweep_id is not None else ""),
            [source, *ACTIVE] + ([sweep_id] if sweep_id is not None else []),
        )
        submitted += active[0] if active else 0
        return SourceCounts(submitted, completed, failed, by_cause, unjudged, disk)
