"""The SQLite store: the single source of truth. Every state change is one transaction."""

from __future__ import annotations

import contextlib
import errno
import json
import secrets
import sqlite3
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hsm import clock
from hsm.errors import StateError, UnknownSweepError
from hsm.state.schema import migrate
from hsm.states import (
    ACTIVE_ATTEMPT,
    DISK_CAUSES,
    TRIED_ATTEMPT,
    AttemptState,
    Cause,
    SourceEventKind,
    SweepState,
    TaskStatus,
)

DB_NAME = "hsm.db"
ACTIVE = [s.value for s in sorted(ACTIVE_ATTEMPT)]  # bind parameters of ``state IN (...)``


def marks(values: Collection[object]) -> str:
    """The bind-parameter marks of an ``IN (...)`` list of these values."""
    return ",".join("?" * len(values))


@dataclass(frozen=True)
class SweepRow:
    id: str
    created: float
    updated: float
    finished: float | None
    state: SweepState
    spec_path: str
    spec: dict[str, Any]
    sweep_dir: str
    project_root: str
    sources: list[str]
    parallel: int | None
    command_line: str
    controller_pid: int | None
    abort_reason: str | None
    cancel_requested: bool
    code_version: dict[str, Any] | None = None


@dataclass(frozen=True)
class TaskRow:
    number: int
    params: dict[str, Any]
    status: TaskStatus
    cause: str | None
    source: str | None
    attempts: int
    exit_code: int | None


@dataclass(frozen=True)
class AttemptRow:
    id: int
    sweep_id: str
    number: int
    attempt: int
    source: str
    slot: int | None
    state: AttemptState
    cause: str | None
    exit_code: int | None
    handle: dict[str, Any] | None
    host: str | None
    started: float
    finished: float | None
    counted: bool | None = None  # failure judged against the source (None: not judged)
    nonce: str = ""  # the launch nonce: with (task, attempt), the attempt's identity
    outcome: str | None = None  # what it did after it was superseded (e.g. "completed")


@dataclass(frozen=True)
class RerunRow:
    """One ``hsm resume`` that changed what runs: the failures it put back (``causes`` None:
    every one), the resources it changed and the sources it moved the sweep to."""

    time: float
    retry_failed: bool
    causes: list[str] | None
    resources: dict[str, Any]
    sources: list[str] | None
    tasks: int


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


def _sweep(row: sqlite3.Row) -> SweepRow:
    return SweepRow(
        id=row["id"],
        created=row["created"],
        updated=row["updated"],
        finished=row["finished"],
        state=SweepState(row["state"]),
        spec_path=row["spec_path"],
        spec=json.loads(row["spec_json"]),
        sweep_dir=row["sweep_dir"],
        project_root=row["project_root"],
        sources=json.loads(row["sources_json"]),
        parallel=row["parallel"],
        command_line=row["command_line"],
        controller_pid=row["controller_pid"],
        abort_reason=row["abort_reason"],
        cancel_requested=bool(row["cancel_requested"]),
        code_version=json.loads(row["code_version_json"] or "null"),
    )


def _task(row: sqlite3.Row) -> TaskRow:
    return TaskRow(
        number=row["number"],
        params=json.loads(row["params_json"]),
        status=TaskStatus(row["status"]),
        cause=row["cause"],
        source=row["source"],
        attempts=row["attempts"],
        exit_code=row["exit_code"],
    )


def _attempt(row: sqlite3.Row) -> AttemptRow:
    handle = row["handle_json"]
    return AttemptRow(
        id=row["id"],
        sweep_id=row["sweep_id"],
        number=row["number"],
        attempt=row["attempt"],
        source=row["source"],
        slot=row["slot"],
        state=AttemptState(row["state"]),
        cause=row["cause"],
        exit_code=row["exit_code"],
        handle=json.loads(handle) if handle else None,
        host=row["host"],
        started=row["started"],
        finished=row["finished"],
        counted=None if row["counted"] is None else bool(row["counted"]),
        nonce=row["nonce"],
        outcome=row["outcome"],
    )


class Store:
    """One project's state database (``<project>/.hsm/hsm.db``)."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path, *, create: bool = True) -> Store:
        if not create and not path.exists():
            raise StateError(f"{path}: no hsm state database here (no sweep has run yet)")
        new_dir = not path.parent.exists()
        new_db = not path.exists()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            migrate(conn)
        except (sqlite3.DatabaseError, OSError, RuntimeError) as exc:
            if new_db:  # leave nothing behind that this call created
                for leftover in (
                    path,
                    path.with_name(path.name + "-wal"),
                    path.with_name(path.name + "-shm"),
                ):
                    leftover.unlink(missing_ok=True)
                if new_dir:
                    with contextlib.suppress(OSError):
                        path.parent.rmdir()
            text = str(exc)
            if "full" in text or getattr(exc, "errno", None) == errno.ENOSPC:
                raise StateError(
                    f"{path}: cannot write the state database: no space left on"
                    f" the device ({text}); free some space and run again"
                ) from None
            raise StateError(
                f"{path}: cannot use the state database: {exc}. If it is corrupt, move it "
                "aside (sweep folders and results are kept) and run again."
            ) from None
        return cls(conn, path)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StateError(f"{self.path}: cannot write the state database: {exc}") from None
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            conn.execute("ROLLBACK")
            raise StateError(f"{self.path}: cannot write the state database: {exc}") from None

    def _one(self, sql: str, args: Iterable[Any] = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._conn.execute(sql, tuple(args)).fetchone()
        return row

    # -- sweeps --------------------------------------------------------------------------
    def create_sweep(
        self,
        *,
        sweep_id: str,
        spec_path: str,
        spec: Mapping[str, Any],
        sweep_dir: str,
        project_root: str,
        sources: list[str],
        parallel: int | None,
        command_line: str,
        params: Iterable[Mapping[str, Any]],
        code_version: Mapping[str, Any] | None = None,
    ) -> int:
        now = clock.time()
        with self.transaction() as tx:
            if tx.execute("SELECT 1 FROM sweeps WHERE id = ?", (sweep_id,)).fetchone():
                raise StateError(f"a sweep named {sweep_id!r} exists already; pick another --name")
            tx.execute(
                "INSERT INTO sweeps (id, created, updated, state, spec_path, spec_json,"
                " sweep_dir, project_root, sources_json, parallel, command_line,"
                " code_version_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    sweep_id,
                    now,
                    now,
                    SweepState.RUNNING.value,
                    spec_path,
                    json.dumps(spec),
                    sweep_dir,
                    project_root,
                    json.dumps(sources),
                    parallel,
                    command_line,
                    None if code_version is None else json.dumps(dict(code_version)),
                ),
            )
            cur = tx.executemany(
                "INSERT INTO tasks (sweep_id, number, params_json, status) VALUES (?, ?, ?, ?)",
                (
                    (sweep_id, n, json.dumps(p, separators=(",", ":")), TaskStatus.PENDING.value)
                    for n, p in enumerate(params, start=1)
                ),
            )
            return cur.rowcount

    def sweep(self, sweep_id: str) -> SweepRow:
        row = self._one("SELECT * FROM sweeps WHERE id = ?", (sweep_id,))
        if row is None:
            known = [
                r["id"]
                for r in self._conn.execute("SELECT id FROM sweeps ORDER BY created DESC LIMIT 5")
            ]
            hint = f" Recent sweeps: {', '.join(known)}." if known else " No sweep has run yet."
            raise UnknownSweepError(f"unknown sweep ID {sweep_id!r} in {self.path}.{hint}")
        return _sweep(row)

    def latest_sweep(self) -> SweepRow | None:
        row = self._one("SELECT * FROM sweeps ORDER BY created DESC, rowid DESC LIMIT 1")
        return _sweep(row) if row else None

    def sweeps(self, limit: int = 20) -> list[SweepRow]:
        rows = self._conn.execute(
            "SELECT * FROM sweeps ORDER BY created DESC, rowid DESC LIMIT ?", (limit,)
        )
        return [_sweep(r) for r in rows]

    def set_sweep_state(
        self,
        sweep_id: str,
        state: SweepState,
        *,
        abort_reason: str | None = None,
        controller_pid: int | None = None,
    ) -> None:
        now = clock.time()
        finished = None if state is SweepState.RUNNING else now
        with self.transaction() as tx:
            tx.execute(
                "UPDATE sweeps SET state = ?, updated = ?, finished = ?, abort_reason = ?,"
                " controller_pid = ? WHERE id = ?",
                (state.value, now, finished, abort_reason, controller_pid, sweep_id),
            )

    def set_cancel_requested(self, sweep_id: str, value: bool) -> None:
        with self.transaction() as tx:
            tx.execute(
                "UPDATE sweeps SET cancel_requested = ? WHERE id = ?", (int(value), sweep_id)
            )

    def cancel_requested(self, sweep_id: str) -> bool:
        row = self._one("SELECT cancel_requested FROM sweeps WHERE id = ?", (sweep_id,))
        return bool(row and row[0])

    # -- tasks ---------------------------------------------------------------------------
    def task_counts(self, sweep_id: str) -> dict[TaskStatus, int]:
        counts = dict.fromkeys(TaskStatus, 0)
        for row in self._conn.execute(
            "SELECT status, count(*) FROM tasks WHERE sweep_id = ? GROUP BY status", (sweep_id,)
        ):
            counts[TaskStatus(row[0])] = row[1]
        return counts

    def cause_counts(self, sweep_id: str) -> dict[str, int]:
        rows = self._conn.execute(
            "SELECT cause, count(*) FROM tasks WHERE sweep_id = ? AND cause IS NOT NULL"
            " GROUP BY cause",
            (sweep_id,),
        )
        return {r[0]: r[1] for r in rows}

    def tasks(self, sweep_id: str, *, status: TaskStatus | None = None) -> list[TaskRow]:
        if status is None:
            rows = self._conn.execute(
                "SELECT * FROM tasks WHERE sweep_id = ? ORDER BY number", (sweep_id,)
            )
        else:
            rows = self._conn.execute(
                "SELECT * FROM tasks WHERE sweep_id = ? AND status = ? ORDER BY number",
                (sweep_id, status.value),
            )
        return [_task(r) for r in rows]

    def iter_tasks(self, sweep_id: str) -> Iterator[TaskRow]:
        """Every task of a sweep in number order, read as it goes (for very large sweeps)."""
        cursor = self._conn.execute(
            "SELECT * FROM tasks WHERE sweep_id = ? ORDER BY number", (sweep_id,)
        )
        while rows := cursor.fetchmany(1000):
            yield from (_task(r) for r in rows)

    def task(self, sweep_id: str, number: int) -> TaskRow:
        row = self._one("SELECT * FROM tasks WHERE sweep_id = ? AND number = ?", (sweep_id, number))
        if row is None:
            raise UnknownSweepError(f"sweep {sweep_id!r} has no task {number}")
        return _task(row)

    def pending_numbers(self, sweep_id: str) -> list[int]:
        rows = self._conn.execute(
            "SELECT number FROM tasks WHERE sweep_id = ? AND status = ? ORDER BY number",
            (sweep_id, TaskStatus.PENDING.value),
        )
        return [r[0] for r in rows]

    def record_rerun(
        self,
        sweep_id: str,
        *,
        retry_failed: bool,
        causes: Iterable[str] | None,
        resources: Mapping[str, Any],
        sources: list[str] | None,
    ) -> int:
        """Put the cancelled tasks (and with ``retry_failed`` the failed ones, of ``causes``
        only when given) back to pending, and record the rerun when it changes anything, in
        one transaction. Returns the number of tasks put back."""
        cause_list = None if causes is None else list(causes)
        where = "status = ?"
        args: list[Any] = [TaskStatus.CANCELLED.value]
        if retry_failed:
            where += " OR (status = ?"
            args.append(TaskStatus.FAILED.value)
            if cause_list is not None:
                where += f" AND cause IN ({marks(cause_list)})"
                args += cause_list
            where += ")"
        with self.transaction() as tx:
            count = tx.execute(
                f"UPDATE tasks SET status = ?, cause = NULL, exit_code = NULL"
                f" WHERE sweep_id = ? AND ({where})",
                (TaskStatus.PENDING.value, sweep_id, *args),
            ).rowcount
            if retry_failed or resources or sources:
                tx.execute(
                    "INSERT INTO reruns (sweep_id, time, retry_failed, causes_json,"
                    " resources_json, sources_json, tasks) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        sweep_id,
                        clock.time(),
                        int(retry_failed),
                        None if cause_list is None else json.dumps(cause_list),
                        json.dumps(dict(resources)),
                        None if sources is None else json.dumps(sources),
                        count,
                    ),
                )
            return count

    def reruns(self, sweep_id: str) -> list[RerunRow]:
        rows = self._conn.execute(
            "SELECT * FROM reruns WHERE sweep_id = ? ORDER BY id", (sweep_id,)
        )
        return [
            RerunRow(
                r["time"],
                bool(r["retry_failed"]),
                None if r["causes_json"] is None else json.loads(r["causes_json"]),
                json.loads(r["resources_json"]),
                None if r["sources_json"] is None else json.loads(r["sources_json"]),
                r["tasks"],
            )
            for r in rows
        ]

    def failed_causes(self, sweep_id: str) -> dict[str, int]:
        """The causes of the failed tasks, with their counts."""
        rows = self._conn.execute(
            "SELECT coalesce(cause, 'unknown'), count(*) FROM tasks WHERE sweep_id = ?"
            " AND status = ? GROUP BY 1",
            (sweep_id, TaskStatus.FAILED.value),
        )
        return {r[0]: r[1] for r in rows}

    def attempt_sources(self, sweep_id: str) -> list[str]:
        """Every source an attempt of the sweep ran on, in order of first use."""
        rows = self._conn.execute(
            "SELECT source FROM attempts WHERE sweep_id = ? GROUP BY source ORDER BY min(id)",
            (sweep_id,),
        )
        return [r[0] for r in rows]

    def delete_sweep(self, sweep_id: str) -> None:
        """Forget a sweep that never started a task (its run stopped on bad input)."""
        with self.transaction() as tx:
            for table in ("reruns", "attempts", "tasks"):
                tx.execute(f"DELETE FROM {table} WHERE sweep_id = ?", (sweep_id,))
            tx.execute("DELETE FROM sweeps WHERE id = ?", (sweep_id,))

    # -- attempts ------------------------------------------------------------------------
    def begin_attempt(
        self,
        sweep_id: str,
        number: int,
        *,
        source: str,
        slot: int | None,
    ) -> AttemptRow:
        """Record that the task is about to be launched on ``source`` (state ``launching``)."""
        with self.transaction() as tx:
            return self._begin(tx, sweep_id, number, source=source, slot=slot)

    @staticmethod
    def _begin(
        tx: sqlite3.Connection,
        sweep_id: str,
        number: int,
        *,
        source: str,
        slot: int | None,
        state: AttemptState = AttemptState.LAUNCHING,
        handle: Mapping[str, Any] | None = None,
        host: str | None = None,
    ) -> AttemptRow:
        now = clock.time()
        row = tx.execute(
            "SELECT attempts FROM tasks WHERE sweep_id = ? AND number = ?", (sweep_id, number)
        ).fetchone()
        attempt = row[0] + 1
        nonce = secrets.token_hex(8)
        cur = tx.execute(
            "INSERT INTO attempts (sweep_id, number, attempt, source, slot, state, started,"
            " handle_json, host, nonce) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                sweep_id,
                number,
                attempt,
                source,
                slot,
                state.value,
                now,
                None if handle is None else json.dumps(handle),
                host,
                nonce,
            ),
        )
        tx.execute(
            "UPDATE tasks SET status = ?, source = ?, attempts = ?, cause = NULL,"
            " exit_code = NULL WHERE sweep_id = ? AND number = ?",
            (TaskStatus.RUNNING.value, source, attempt, sweep_id, number),
        )
        attempt_id = cur.lastrowid
        assert attempt_id is not None
        return AttemptRow(
            attempt_id,
            sweep_id,
            number,
            attempt,
            source,
            slot,
            state,
            None,
            None,
            None if handle is None else dict(handle),
            host,
            now,
            None,
            nonce=nonce,
        )

    def revive_attempt(self, lost: AttemptRow, *, slot: int | None) -> AttemptRow | None:
        """Record that the attempt ``lost`` was not lost after all: it runs (or ran) on its
        source, whose host is back. Only the task's current (last) attempt can be revived,
        and only while its task waits in the queue: the same row, the same identity, running
        again. Returns the revived row, or None when the attempt has been superseded."""
        with self.transaction() as tx:
            cur = tx.execute(
                "UPDATE tasks SET status = ?, source = ?, cause = NULL, exit_code = NULL"
                " WHERE sweep_id = ? AND number = ? AND attempts = ? AND status = ?",
                (
                    TaskStatus.RUNNING.value,
                    lost.source,
                    lost.sweep_id,
                    lost.number,
                    lost.attempt,
                    TaskStatus.PENDING.value,
                ),
            )
            if cur.rowcount != 1:
                return None
            tx.execute(
                "UPDATE attempts SET state = ?, cause = NULL, exit_code = NULL, finished = NULL,"
                " counted = NULL, slot = ? WHERE id = ?",
                (AttemptState.RUNNING.value, slot, lost.id),
            )
        return AttemptRow(
            lost.id,
            lost.sweep_id,
            lost.number,
            lost.attempt,
            lost.source,
            slot,
            AttemptState.RUNNING,
            None,
            None,
            lost.handle,
            lost.host,
            lost.started,
            None,
            nonce=lost.nonce,
        )

    def record_outcome(self, attempt: AttemptRow, outcome: str) -> None:
        """Record what a superseded attempt did (it never becomes the task's result)."""
        with self.transaction() as tx:
            tx.execute("UPDATE attempts SET outcome = ? WHERE id = ?", (outcome, attempt.id))

    def attempt_launched(
        self,
        attempt_id: int,
        handle: Mapping[str, Any],
        host: str | None = None,
        *,
        confirmed: bool = True,
    ) -> None:
        """Record the handle of a launch; ``confirmed`` when the source acknowledged that the
        attempt started (else it stays ``launching``, with the handle to find it by)."""
        state = AttemptState.RUNNING if confirmed else AttemptState.LAUNCHING
        with self.transaction() as tx:
            tx.execute(
                "UPDATE attempts SET state = ?, handle_json = ?, host = ? WHERE id = ?",
                (state.value, json.dumps(handle), host, attempt_id),
            )

    def finish_attempt(
        self,
        attempt: AttemptRow,
        *,
        state: AttemptState,
        cause: Cause | None,
        exit_code: int | None,
        task_status: TaskStatus,
        counted: bool | None = None,
    ) -> None:
        """Close an attempt and set its task's status, in one transaction.

        ``task_status`` is PENDING when the task goes back to the queue for a retry.
        """
        now = clock.time()
        cause_value = cause.value if cause else None
        with self.transaction() as tx:
            tx.execute(
                "UPDATE attempts SET state = ?, cause = ?, exit_code = ?, finished = ?,"
                " counted = ? WHERE id = ?",
                (
                    state.value,
                    cause_value,
                    exit_code,
                    now,
                    None if counted is None else int(counted),
                    attempt.id,
                ),
            )
            tx.execute(
                "UPDATE tasks SET status = ?, cause = ?, exit_code = ?"
                " WHERE sweep_id = ? AND number = ? AND attempts = ?",
                (
                    task_status.value,
                    cause_value,
                    exit_code,
                    attempt.sweep_id,
                    attempt.number,
                    attempt.attempt,
                ),
            )

    def tries(self, sweep_id: str, number: int) -> int:
        """How many of the task's attempts used a try (see ``TRIED_ATTEMPT``)."""
        row = self._one(
            f"SELECT count(*) FROM attempts WHERE sweep_id = ? AND number = ?"
            f" AND state IN ({marks(TRIED_ATTEMPT)})",
            (sweep_id, number, *sorted(TRIED_ATTEMPT)),
        )
        return row[0] if row else 0

    def failed_placements(self, sweep_id: str) -> dict[int, set[str]]:
        """The sources each task failed on (failed or lost attempts): placement memory that
        survives any restart."""
        out: dict[int, set[str]] = {}
        for number, source in self._conn.execute(
            "SELECT DISTINCT number, source FROM attempts WHERE sweep_id = ? AND state IN (?, ?)",
            (sweep_id, AttemptState.FAILED.value, AttemptState.LOST.value),
        ):
            out.setdefault(number, set()).add(source)
        return out

    def cancel_pending(self, sweep_id: str) -> int:
        with self.transaction() as tx:
            cur = tx.execute(
                "UPDATE tasks SET status = ?, cause = ? WHERE sweep_id = ? AND status = ?",
                (
                    TaskStatus.CANCELLED.value,
                    Cause.CANCELLED.value,
                    sweep_id,
                    TaskStatus.PENDING.value,
                ),
            )
            return cur.rowcount

    def attempts(self, sweep_id: str, *, active_only: bool = False) -> list[AttemptRow]:
        sql = "SELECT * FROM attempts WHERE sweep_id = ?"
        args: list[Any] = [sweep_id]
        if active_only:
            sql += f" AND state IN ({marks(ACTIVE)})"
            args += ACTIVE
        rows = self._conn.execute(sql + " ORDER BY id", args)
        return [_attempt(r) for r in rows]

    def task_attempts(self, sweep_id: str, number: int) -> list[AttemptRow]:
        rows = self._conn.execute(
            "SELECT * FROM attempts WHERE sweep_id = ? AND number = ? ORDER BY id",
            (sweep_id, number),
        )
        return [_attempt(r) for r in rows]

    def running_attempts(self, source: str) -> int:
        row = self._one(
            f"SELECT count(*) FROM attempts WHERE source = ? AND state IN ({marks(ACTIVE)})",
            (source, *ACTIVE),
        )
        return row[0] if row else 0

    def failed_sources_of_task(
        self, sweep_id: str, number: int, causes: Iterable[str]
    ) -> list[str]:
        """The sources on which the task failed with one of these causes."""
        values = list(causes)
        rows = self._conn.execute(
            f"SELECT DISTINCT source FROM attempts WHERE sweep_id = ? AND number = ?"
            f" AND state = ? AND cause IN ({marks(values)})",
            (sweep_id, number, AttemptState.FAILED.value, *values),
        )
        return [r[0] for r in rows]

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

    def judge_task_failures(
        self,
        sweep_id: str,
        number: int,
        *,
        counted: bool,
        causes: Iterable[str],
        other_than: str | None = None,
    ) -> int:
        """Settle whether earlier failures of a task count against their sources."""
        values = list(causes)
        sql = (
            f"UPDATE attempts SET counted = ? WHERE sweep_id = ? AND number = ?"
            f" AND state = ? AND counted IS NULL AND cause IN ({marks(values)})"
        )
        args: list[Any] = [int(counted), sweep_id, number, AttemptState.FAILED.value, *values]
        if other_than is not None:
            sql += " AND source != ?"
            args.append(other_than)
        with self.transaction() as tx:
            return tx.execute(sql, args).rowcount

    def sweep_failure_facts(self, sweep_id: str, causes: Iterable[str]) -> tuple[int, int, int]:
        """(completed attempts, attempts failed with these causes, sources they failed on)."""
        values = list(causes)
        completed, failed = AttemptState.COMPLETED.value, AttemptState.FAILED.value
        row = self._one(
            f"SELECT sum(state = ?),"
            f" sum(state = ? AND cause IN ({marks(values)})),"
            f" count(DISTINCT CASE WHEN state = ? AND cause IN ({marks(values)}) THEN source END)"
            f" FROM attempts WHERE sweep_id = ?",
            [completed, failed, *values, failed, *values, sweep_id],
        )
        assert row is not None
        return (row[0] or 0, row[1] or 0, row[2] or 0)

    def first_failed_attempt(self, sweep_id: str, causes: Iterable[str]) -> AttemptRow | None:
        values = list(causes)
        row = self._one(
            f"SELECT * FROM attempts WHERE sweep_id = ? AND state = ?"
            f" AND cause IN ({marks(values)}) ORDER BY finished, id LIMIT 1",
            [sweep_id, AttemptState.FAILED.value, *values],
        )
        return _attempt(row) if row else None

    # -- sources -------------------------------------------------------------------------
    def source(self, name: str) -> SourceRow:
        row = self._one("SELECT * FROM sources WHERE name = ?", (name,))
        if row is None:
            return SourceRow(name, True, None, None, 0, None)
        return SourceRow(
            row["name"],
            bool(row["enabled"]),
            row["disabled_reason"],
            row["disabled_at"],
            row["consecutive_health_failures"],
            row["last_status"],
        )

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
        return {
            r["name"]: SourceRow(
                r["name"],
                bool(r["enabled"]),
                r["disabled_reason"],
                r["disabled_at"],
                r["consecutive_health_failures"],
                r["last_status"],
            )
            for r in rows
        }

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
