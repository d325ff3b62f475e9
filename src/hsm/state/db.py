"""The store's connection and its transactions, shared by every part of the store."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hsm.errors import StateError
from hsm.states import ACTIVE_ATTEMPT

ACTIVE = [s.value for s in sorted(ACTIVE_ATTEMPT)]  # bind parameters of ``state IN (...)``


def marks(values: Collection[object]) -> str:
    """The bind-parameter marks of an ``IN (...)`` list of these values."""
    return ",".join("?" * len(values))


class StoreBase:
    """One open state database: the connection, its transactions and single-row reads."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

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
