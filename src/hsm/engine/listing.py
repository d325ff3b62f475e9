"""What ``hsm list`` and ``hsm distributed list`` show: typed rows, read from the config and
the state. The CLI renders them; it decides nothing. Also which sweep a command that takes
an optional sweep ID is about."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from hsm.engine.results import ResultTable, read_results
from hsm.engine.service import Project
from hsm.errors import StateError
from hsm.sources.registry import LOCAL, known_sources
from hsm.state import SourceRow, SweepRow
from hsm.states import TaskStatus

CONFIG_DISABLED = "enabled: false in the config"
SWEEPS_LISTED = 50


@dataclass(frozen=True)
class SourceListing:
    """One source: its type, and whether new tasks may go there. A source is enabled when
    the config enables it and the disabled set does not hold it; the reason recorded in
    the disabled set comes before the config's."""

    name: str
    kind: str  # "local", or the type of the remote ("ssh", "slurm", "pbs")
    enabled: bool
    disabled_reason: str | None
    disabled_at: float | None  # when it was put in the disabled set; None when it is not

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.kind,
            "enabled": self.enabled,
            "disabled_reason": self.disabled_reason,
            "disabled_at": self.disabled_at,
        }


def source_listing(project: Project, name: str, row: SourceRow | None) -> SourceListing:
    """The listing of source ``name``; ``row`` is its state (None: nothing recorded)."""
    remote = project.loaded.config.distributed.remotes.get(name)
    kind = LOCAL if remote is None else remote.type
    if row is not None and not row.enabled:
        return SourceListing(name, kind, False, row.disabled_reason, row.disabled_at)
    if remote is not None and not remote.enabled:
        return SourceListing(name, kind, False, CONFIG_DISABLED, None)
    return SourceListing(name, kind, True, None, None)


def list_sources(project: Project) -> list[SourceListing]:
    """Every source of the config, in its order (this machine first)."""
    states: Mapping[str, SourceRow] = {}
    if project.has_state():
        with closing(project.open_store(create=True)) as store:
            states = store.enabled_states()
    return [source_listing(project, n, states.get(n)) for n in known_sources(project.loaded)]


@dataclass(frozen=True)
class SweepListing:
    """One recorded sweep and its tasks counted by status."""

    sweep: SweepRow
    counts: Mapping[TaskStatus, int]  # every status, 0 when no task has it

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "sweep_id": self.sweep.id,
            "state": self.sweep.state.value,
            "created": self.sweep.created,
            "total": self.total,
            "counts": {status.value: n for status, n in self.counts.items()},
            "sweep_dir": self.sweep.sweep_dir,
        }


def list_sweeps(project: Project, limit: int = SWEEPS_LISTED) -> list[SweepListing]:
    """The latest sweeps, newest first (none before the first sweep has run)."""
    if not project.has_state():
        return []
    with closing(project.open_store()) as store:
        return [SweepListing(s, store.task_counts(s.id)) for s in store.sweeps(limit=limit)]


def sweep_or_latest(project: Project, sweep_id: str | None) -> str:
    """The sweep a command is about: the one named, else the latest one."""
    if not project.has_state():
        if sweep_id:
            raise StateError(
                f"unknown sweep ID {sweep_id!r}: no sweep has run in {project.root} yet"
            )
        raise StateError(f"no sweep has run in {project.root} yet; start one with: hsm run")
    if sweep_id is not None:
        return sweep_id
    with closing(project.open_store()) as store:
        latest = store.latest_sweep()
    if latest is None:
        raise StateError(f"no sweep has run in {project.root} yet; start one with: hsm run")
    return latest.id


def project_results(
    project: Project, sweep_id: str | None, *, where: Sequence[str] = (), sort: str | None = None
) -> ResultTable:
    """The results table of a sweep of ``project`` (the latest if no ID)."""
    chosen = sweep_or_latest(project, sweep_id)
    with closing(project.open_store()) as store:
        return read_results(
            store,
            chosen,
            where=where,
            sort=sort,
            metrics_file=project.loaded.config.results.metrics_file,
        )
