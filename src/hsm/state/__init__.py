"""Durable state: SQLite in WAL mode."""

from hsm.state.store import (
    DB_NAME,
    AttemptRow,
    EventRow,
    HealthRow,
    RerunRow,
    SourceCounts,
    SourceRow,
    Store,
    SweepRow,
    TaskRow,
)

__all__ = [
    "DB_NAME",
    "AttemptRow",
    "EventRow",
    "HealthRow",
    "RerunRow",
    "SourceCounts",
    "SourceRow",
    "Store",
    "SweepRow",
    "TaskRow",
]
