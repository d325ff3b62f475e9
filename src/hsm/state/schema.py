"""The SQLite schema and its versioned migrations. The only DDL in hsm."""

from __future__ import annotations

import sqlite3

# Each entry upgrades the schema from version N to N + 1. Never edit a released entry:
# append a new one.
MIGRATIONS: list[str] = [
    # 0 -> 1: sweeps, tasks, attempts, sources, events, health samples.
    """
    CREATE TABLE sweeps (
        id TEXT PRIMARY KEY,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        finished REAL,
        state TEXT NOT NULL,
        spec_path TEXT NOT NULL,
        spec_json TEXT NOT NULL,
        sweep_dir TEXT NOT NULL,
        project_root TEXT NOT NULL,
        sources_json TEXT NOT NULL,
        parallel INTEGER,
        command_line TEXT NOT NULL DEFAULT '',
        controller_pid INTEGER,
        abort_reason TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE tasks (
        sweep_id TEXT NOT NULL REFERENCES sweeps(id),
        number INTEGER NOT NULL,
        params_json TEXT NOT NULL,
        status TEXT NOT NULL,
        cause TEXT,
        source TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        exit_code INTEGER,
        PRIMARY KEY (sweep_id, number)
    ) WITHOUT ROWID;
    CREATE INDEX tasks_status ON tasks(sweep_id, status);
    CREATE TABLE attempts (
        id INTEGER PRIMARY KEY,
        sweep_id TEXT NOT NULL,
        number INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        source TEXT NOT NULL,
        slot INTEGER,
        state TEXT NOT NULL,
        cause TEXT,
        exit_code INTEGER,
        handle_json TEXT,
        host TEXT,
        started REAL NOT NULL,
        finished REAL,
        UNIQUE (sweep_id, number, attempt)
    );
    CREATE INDEX attempts_state ON attempts(sweep_id, state);
    CREATE INDEX attempts_source ON attempts(source, finished);
    CREATE TABLE sources (
        name TEXT PRIMARY KEY,
        enabled INTEGER NOT NULL DEFAULT 1,
        disabled_reason TEXT,
        disabled_at REAL,
        consecutive_health_failures INTEGER NOT NULL DEFAULT 0,
        last_status TEXT,
        updated REAL NOT NULL
    );
    CREATE TABLE source_events (
        id INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        source TEXT NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        sweep_id TEXT
    );
    CREATE INDEX source_events_source ON source_events(source, time);
    CREATE TABLE health_samples (
        id INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        source TEXT NOT NULL,
        reachable INTEGER NOT NULL,
        disk_path TEXT,
        free_bytes INTEGER,
        total_bytes INTEGER,
        load1 REAL,
        cores INTEGER,
        memory_percent REAL,
        disk_status TEXT,
        status TEXT NOT NULL,
        detail TEXT
    );
    CREATE INDEX health_samples_source ON health_samples(source, time);
    """,
    # 1 -> 2: whether a failed attempt counts against its source (NULL: not judged yet).
    """
    ALTER TABLE attempts ADD COLUMN counted INTEGER;
    """,
    # 2 -> 3: fencing. Each attempt's launch nonce (recorded before the launch, written by the
    # wrapper into every status), and what a superseded attempt did after it was replaced.
    """
    ALTER TABLE attempts ADD COLUMN nonce TEXT NOT NULL DEFAULT '';
    ALTER TABLE attempts ADD COLUMN outcome TEXT;
    """,
    # 3 -> 4: reruns of a sweep (resume --retry-failed, resource or source changes): which
    # failures were rerun, the resources changed and the sources moved to.
    """
    CREATE TABLE reruns (
        id INTEGER PRIMARY KEY,
        sweep_id TEXT NOT NULL REFERENCES sweeps(id),
        time REAL NOT NULL,
        retry_failed INTEGER NOT NULL,
        causes_json TEXT,
        resources_json TEXT NOT NULL,
        sources_json TEXT,
        tasks INTEGER NOT NULL
    );
    CREATE INDEX reruns_sweep ON reruns(sweep_id, id);
    """,
    # 4 -> 5: the code a sweep runs (JSON: {"git", "dirty"} or {"hash"}; NULL: not recorded).
    """
    ALTER TABLE sweeps ADD COLUMN code_version_json TEXT;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the database up to SCHEMA_VERSION, one transaction per step."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > SCHEMA_VERSION:
        raise RuntimeError(
            f"state database schema {current} is newer than this hsm ({SCHEMA_VERSION})"
        )
    while current < SCHEMA_VERSION:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the write lock: another process may have migrated meanwhile.
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            if current < SCHEMA_VERSION:
                for statement in _split(MIGRATIONS[current]):
                    conn.execute(statement)
                current += 1
                conn.execute(f"PRAGMA user_version = {current}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _split(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
