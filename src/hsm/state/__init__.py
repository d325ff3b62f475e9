"""Durable state: SQLite in WAL mode."""

from hsm.state.attempts import AttemptRow
from hsm.state.sources import EventRow, HealthRow, SourceCounts, SourceRow
from hsm.state.store import DB_NAME, Store
from hsm.state.sweeps import RerunRow, SweepRow, TaskRow

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
