"""The attempts: one launch of a task on a source, from its record to its end."""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hsm import clock
from hsm.state.db import ACTIVE, StoreBase, marks
from hsm.states import TRIED_ATTEMPT, AttemptState, Cause, TaskStatus


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


class AttemptQueries(StoreBase):
    """Each attempt is recorded before it launches and closed, with its task, in one
    transaction; failures are judged against their sources here."""

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

    def requeue_untracked(self, sweep_id: str) -> list[int]:
        """Tasks recorded running without an attempt that runs (none launching or running):
        nothing can end them, so they go back to pending. Returns their numbers."""
        with self.transaction() as tx:
            rows = tx.execute(
                "SELECT number FROM tasks t WHERE sweep_id = ? AND status = ? AND NOT EXISTS"
                " (SELECT 1 FROM attempts a WHERE a.sweep_id = t.sweep_id"
                f" AND a.number = t.number AND a.state IN ({marks(ACTIVE)}))",
                (sweep_id, TaskStatus.RUNNING.value, *ACTIVE),
            ).fetchall()
            numbers = [r[0] for r in rows]
            tx.executemany(
                "UPDATE tasks SET status = ? WHERE sweep_id = ? AND number = ? AND status = ?",
                [
                    (TaskStatus.PENDING.value, sweep_id, n, TaskStatus.RUNNING.value)
                    for n in numbers
                ],
            )
        return numbers

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
