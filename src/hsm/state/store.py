"""The SQLite store: the single source of truth. Every state change is one transaction.

``Store`` opens the database and migrates its schema. Its connection and transactions are in
``db``; its queries live by concern in ``sweeps`` (sweeps, tasks, reruns), ``attempts`` and
``sources`` (enabled or not, health samples, events, attempt counts).
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from pathlib import Path

from hsm.errors import StateError
from hsm.state.attempts import AttemptQueries
from hsm.state.schema import migrate
from hsm.state.sources import SourceQueries
from hsm.state.sweeps import SweepQueries

DB_NAME = "hsm.db"


class Store(SweepQueries, AttemptQueries, SourceQueries):
    """One project's state database (``<project>/.hsm/hsm.db``)."""

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
