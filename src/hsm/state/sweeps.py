"""The sweeps, their tasks and their reruns."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from hsm import clock
from hsm.errors import StateError, UnknownSweepError
from hsm.state.db import StoreBase, marks
from hsm.states import Cause, SweepState, TaskStatus


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
class RerunRow:
    """One ``hsm resume`` that changed what runs: the failures it put back (``causes`` None:
    every one), the resources it changed and the sources it moved the sweep to."""

    time: float
    retry_failed: bool
    causes: list[str] | None
    resources: dict[str, Any]
    sources: list[str] | None
    tasks: int


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


class SweepQueries(StoreBase):
    """A sweep and its tasks are created together; a rerun puts tasks back to pending."""

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
