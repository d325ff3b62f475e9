"""The library entry points: ``hsm.run(...)`` and ``hsm.results(...)``.

They return results and never print (log records go to the ``hsm`` loggers, which the
caller may configure). Errors raise :class:`~hsm.errors.HsmError` subclasses, each with
the exit code the CLI would use.
"""

from __future__ import annotations

import importlib
import logging
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hsm.engine.listing import project_results
from hsm.engine.results import ResultRow, ResultTable
from hsm.engine.service import Project, open_project, plan_run, start_run
from hsm.engine.summary import summarize
from hsm.errors import StateError

__all__ = ["ResultRow", "RunResult", "results", "results_table", "run"]

# A library prints nothing: without a handler of the caller's, hsm's records go nowhere
# (rather than to logging's last-resort handler on stderr).
logging.getLogger("hsm").addHandler(logging.NullHandler())


@dataclass(frozen=True)
class RunResult:
    """The end of ``hsm.run``: ``exit_code`` as the CLI's (0 all completed, 1 some failed,
    3 aborted, 130 interrupted); ``counts`` by task status."""

    sweep_id: str
    sweep_dir: str
    state: str
    exit_code: int
    counts: dict[str, int]
    message: str | None = None


def run(
    sweep_file: str | Path,
    *,
    sources: Sequence[str] = (),
    distributed: bool = False,
    parallel: int | None = None,
    name: str | None = None,
    config: str | Path | None = None,
    cwd: str | Path | None = None,
) -> RunResult:
    """Run a sweep file to its end, as ``hsm run`` does, and return how it ended."""
    project = _project(config, cwd)
    path = Path(sweep_file)
    if not path.is_absolute() and cwd is not None:
        path = Path(cwd) / path
    plan = plan_run(project, path, sources=sources, distributed=distributed, parallel=parallel)
    command = ["hsm.run", str(sweep_file), *(f"--source={s}" for s in sources)]
    outcome = start_run(project, plan, name=name, command_line=shlex.join(command))
    store = project.open_store()
    try:
        summary = summarize(store, outcome.sweep_id)
    finally:
        store.close()
    return RunResult(
        sweep_id=outcome.sweep_id,
        sweep_dir=summary.sweep.sweep_dir,
        state=outcome.state.value,
        exit_code=int(outcome.exit_code),
        counts=dict(summary.counts),
        message=outcome.message,
    )


def results_table(
    sweep_id: str | None = None,
    *,
    where: Sequence[str] = (),
    sort: str | None = None,
    config: str | Path | None = None,
    cwd: str | Path | None = None,
) -> ResultTable:
    """The results of a sweep (the latest if no ID) as rows of :class:`ResultRow`."""
    return project_results(_project(config, cwd), sweep_id, where=where, sort=sort)


def results(
    sweep_id: str | None = None,
    *,
    where: Sequence[str] = (),
    sort: str | None = None,
    as_frame: bool | None = None,
    config: str | Path | None = None,
    cwd: str | Path | None = None,
) -> Any:
    """One row per task: number, status, cause, source, duration, parameters, metrics.

    Returns a pandas DataFrame when pandas is installed (``pip install 'hsm[pandas]'``),
    else a list of :class:`ResultRow`. ``as_frame=False`` always gives the rows;
    ``as_frame=True`` needs pandas.
    """
    table = results_table(sweep_id, where=where, sort=sort, config=config, cwd=cwd)
    if as_frame is False:
        return table.rows
    try:
        pandas = importlib.import_module("pandas")  # optional: the 'pandas' extra
    except ImportError:
        if as_frame:
            raise StateError(
                "hsm.results(as_frame=True) needs pandas: pip install 'hsm[pandas]'"
            ) from None
        return table.rows
    return pandas.DataFrame.from_records(table.records(), columns=table.columns)


def _project(config: str | Path | None, cwd: str | Path | None) -> Project:
    return open_project(
        Path(config) if config is not None else None, Path(cwd) if cwd is not None else None
    )
