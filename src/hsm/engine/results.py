"""Results as a table: one row per task, its parameters against its metrics.

It reads the state and the task folders and writes nothing, so it works while the sweep
runs: the tasks that have not finished show their status and no metrics yet. Metrics
are found as the report finds them (:func:`hsm.report.files.task_metrics`).
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hsm.errors import ConfigError
from hsm.report.files import task_metrics
from hsm.sources.base import task_folder_name
from hsm.state import AttemptRow, Store
from hsm.states import TERMINAL_TASK

FIXED_COLUMNS = ("number", "status", "cause", "source", "duration")


@dataclass(frozen=True)
class ResultRow:
    """One task: ``duration`` is the seconds of its last attempt (None if it has not
    finished); ``params`` and ``metrics`` map dotted keys to values."""

    number: int
    status: str
    cause: str | None
    source: str | None
    duration: float | None
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    task_dir: str = ""

    def flat(self) -> dict[str, Any]:
        """The row as one mapping: the fixed columns, the parameters, then the metrics (a
        metric named like a parameter or a fixed column is prefixed ``metrics.``)."""
        out: dict[str, Any] = {
            "number": self.number,
            "status": self.status,
            "cause": self.cause,
            "source": self.source,
            "duration": self.duration,
        }
        out.update(self.params)
        for key, value in self.metrics.items():
            out[f"metrics.{key}" if key in out else key] = value
        return out


@dataclass(frozen=True)
class ResultTable:
    """The rows, and the column names in order (fixed, parameters, metrics)."""

    sweep_id: str
    columns: list[str]
    rows: list[ResultRow]

    def records(self) -> list[dict[str, Any]]:
        return [row.flat() for row in self.rows]


def _durations(attempts: Iterable[AttemptRow]) -> dict[int, float | None]:
    last: dict[int, AttemptRow] = {}
    for attempt in attempts:  # in id order: the last one of a task wins
        last[attempt.number] = attempt
    return {
        n: (a.finished - a.started if a.finished is not None else None) for n, a in last.items()
    }


def read_results(
    store: Store,
    sweep_id: str,
    *,
    metrics_file: str | None = None,
    where: Sequence[str] = (),
    sort: str | None = None,
) -> ResultTable:
    """The results table of one sweep, filtered by ``where`` and sorted by ``sort``.

    Raises :class:`~hsm.errors.ConfigError` (exit 2) for a bad ``where`` or ``sort``.
    """
    sweep = store.sweep(sweep_id)
    durations = _durations(store.attempts(sweep_id))
    tasks_dir = Path(sweep.sweep_dir, "tasks")
    rows: list[ResultRow] = []
    for task in store.iter_tasks(sweep_id):
        folder = tasks_dir / task_folder_name(task.number)
        done = task.attempts and task.status in TERMINAL_TASK
        metrics = task_metrics(folder, metrics_file) if done else None
        rows.append(
            ResultRow(
                number=task.number,
                status=task.status.value,
                cause=task.cause,
                source=task.source,
                duration=durations.get(task.number),
                params=dict(task.params),
                metrics=metrics or {},
                task_dir=str(folder),
            )
        )
    columns: dict[str, None] = dict.fromkeys(FIXED_COLUMNS)
    for row in rows:
        columns.update(dict.fromkeys(row.params))
    for row in rows:
        columns.update(dict.fromkeys(row.flat()))
    names = list(columns)
    for text in where:
        test = parse_where(text, names)
        rows = [row for row in rows if test(row.flat())]
    if sort is not None:
        rows = sort_rows(rows, sort, names)
    return ResultTable(sweep_id=sweep_id, columns=names, rows=rows)


# -- --where and --sort --------------------------------------------------------------------
_WHERE = re.compile(r"\s*([^=!<>\s][^=!<>]*?)\s*(==|!=|>=|<=|=|>|<)\s*(.*?)\s*")
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
}


def _column(name: str, columns: Sequence[str], what: str) -> str:
    if name in columns:
        return name
    close = difflib.get_close_matches(name, list(columns), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"{what}: unknown column {name!r}{hint} (columns: {', '.join(columns)})")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_where(text: str, columns: Sequence[str]) -> Callable[[dict[str, Any]], bool]:
    """A test of one row from ``KEY OP VALUE``, OP one of ``= == != > < >= <=``.

    Numbers compare as numbers (``lr>0.001``, ``duration<60``); otherwise ``=`` and ``!=``
    compare the text (``status=completed``, ``cause=null``, ``flag=true``). A row without
    the key (e.g. a task with no metrics yet) does not match, except for ``!=``.
    """
    match = _WHERE.fullmatch(text)
    if match is None or not match.group(3):
        raise ConfigError(
            f"--where {text!r}: expected KEY=VALUE, KEY!=VALUE, KEY>N, KEY<N, "
            "KEY>=N or KEY<=N (e.g. --where status=completed --where 'lr>0.001')"
        )
    key, op, raw = match.groups()
    key = _column(key, columns, f"--where {text!r}")
    wanted = _number(raw)
    compare = _OPS[op]
    if op in (">", "<", ">=", "<=") and wanted is None:
        raise ConfigError(f"--where {text!r}: {op} needs a number, found {raw!r}")

    def test(row: dict[str, Any]) -> bool:
        if key not in row:
            return op == "!="
        value = row[key]
        number = _number(value)
        if wanted is not None and number is not None and not math.isnan(number):
            return compare(number, wanted)
        if op in ("=", "==", "!="):
            return compare(_text(value), raw)
        return False

    return test


def sort_rows(rows: list[ResultRow], key: str, columns: Sequence[str]) -> list[ResultRow]:
    """Rows sorted by a column (``-KEY``: descending); rows without a value come last,
    numbers before text."""
    descending = key.startswith("-")
    name = _column(key[1:] if descending else key, columns, f"--sort {key!r}")
    present: list[tuple[tuple[int, float, str], ResultRow]] = []
    missing: list[ResultRow] = []
    for row in rows:
        value = row.flat().get(name)
        number = _number(value)
        if value is None or (number is not None and math.isnan(number)):
            missing.append(row)
        elif number is not None:
            present.append(((0, number, ""), row))
        else:
            present.append(((1, 0.0, _text(value)), row))
    present.sort(key=lambda item: item[0], reverse=descending)
    return [row for _, row in present] + missing
