"""Rendering for the CLI: log handlers, progress, tables. No business logic."""

from __future__ import annotations

import itertools
import json
import logging
import math
import sys
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from hsm.engine.service import FILE_ONLY, LOG_DATEFMT, LOG_FORMAT
from hsm.engine.summary import SweepSummary, iter_task_json
from hsm.spec.overrides import describe_resources
from hsm.state import Store
from hsm.states import TaskStatus

err_console = Console(stderr=True, highlight=False, soft_wrap=True)
out_console = Console(highlight=False, soft_wrap=True)


class ConsoleHandler(logging.Handler):
    """Log lines on stderr as ``YYYY-MM-DD HH:MM:SS LEVEL message`` (above a live progress)."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console
        self.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATEFMT))

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, FILE_ONLY, False):
            return
        try:
            line = self.format(record)
            if self.console.is_terminal:  # a live progress may be drawn below the logs
                self.console.print(line, markup=False, highlight=False, soft_wrap=True)
            else:  # a file or a pipe: plain lines, cheaply (thousands of tasks)
                self.console.file.write(line + "\n")
                self.console.file.flush()
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        """A log line that cannot be written (e.g. a closed pipe) is dropped quietly."""


def setup_console_logging(verbose: bool = False) -> ConsoleHandler:
    root = logging.getLogger("hsm")
    root.setLevel(logging.DEBUG)  # the sweep log file keeps per-task lines
    for h in list(root.handlers):
        if isinstance(h, ConsoleHandler):
            root.removeHandler(h)
    handler = ConsoleHandler(err_console)
    handler.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.addHandler(handler)
    root.propagate = False
    return handler


class EtaEstimator:
    """The time a sweep has left, from the durations of its finished tasks and the number
    of tasks that run at once.

    Tasks are taken to end in the order they started (the counts say how many, not which).
    Nothing is estimated until a task has finished."""

    def __init__(self) -> None:
        self._starts: deque[float] = deque()  # start times of the running tasks, oldest first
        self._finished = 0
        self._durations = 0.0
        self._ended = 0
        self._slots = 0  # the most tasks seen running at once

    def observe(self, now: float, counts: dict[TaskStatus, int]) -> float | None:
        running = counts.get(TaskStatus.RUNNING, 0)
        finished = counts.get(TaskStatus.COMPLETED, 0) + counts.get(TaskStatus.FAILED, 0)
        pending = counts.get(TaskStatus.PENDING, 0)
        for _ in range(max(0, finished - self._finished)):
            if self._starts:
                self._durations += now - self._starts.popleft()
                self._ended += 1
        self._finished = finished
        while len(self._starts) > running:  # back to the queue (a retry), not finished
            self._starts.popleft()
        while len(self._starts) < running:
            self._starts.append(now)
        self._slots = max(self._slots, running)
        if not self._ended:
            return None
        mean = self._durations / self._ended
        running_left = sum(max(0.0, mean - (now - start)) for start in self._starts)
        return (running_left + pending * mean) / max(self._slots, 1)


class EtaColumn(ProgressColumn):
    """``ETA 0:01:23``, counting down between updates; ``ETA -:--:--`` before an estimate."""

    def render(self, task: Task) -> Text:
        finish_at = task.fields.get("finish_at")
        if finish_at is None:
            return Text("ETA -:--:--", style="progress.remaining")
        left = max(0, int(finish_at - time.monotonic() + 0.999))
        return Text(f"ETA {timedelta(seconds=left)}", style="progress.remaining")


class ProgressView:
    """A rich progress bar on a terminal; plain periodic lines otherwise."""

    def __init__(self, *, live: bool) -> None:
        self.live = live and err_console.is_terminal
        self._progress: Progress | None = None
        self._task: Any = None
        self._last_plain = 0.0
        self._last: dict[TaskStatus, int] = {}
        self._eta = EtaEstimator()

    @contextmanager
    def active(self) -> Iterator[ProgressView]:
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                EtaColumn(),
                console=err_console,
                transient=False,
                refresh_per_second=4,
            )
            with self._progress:
                self._task = self._progress.add_task("sweep", total=None, detail="", finish_at=None)
                yield self
        else:
            yield self
            self._plain(force=True)

    def update(self, counts: dict[TaskStatus, int]) -> None:
        self._last = counts
        if self._progress is not None:
            now = time.monotonic()
            left = self._eta.observe(now, counts)
            total = sum(counts.values())
            # Cancelled tasks did not run: a cancelled sweep's bar shows what was done.
            done = counts.get(TaskStatus.COMPLETED, 0) + counts.get(TaskStatus.FAILED, 0)
            detail = (
                f"[green]{counts.get(TaskStatus.COMPLETED, 0)} done[/] "
                f"[red]{counts.get(TaskStatus.FAILED, 0)} failed[/] "
                f"[cyan]{counts.get(TaskStatus.RUNNING, 0)} running[/]"
            )
            self._progress.update(
                self._task,
                total=total,
                completed=done,
                detail=detail,
                finish_at=None if left is None else now + left,
            )
        else:
            self._plain()

    def _plain(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self._last or (not force and now - self._last_plain < 10):
            return
        self._last_plain = now
        c = self._last
        logging.getLogger("hsm.progress").info(
            "progress: %d completed, %d failed, %d running, %d pending of %d",
            c.get(TaskStatus.COMPLETED, 0),
            c.get(TaskStatus.FAILED, 0),
            c.get(TaskStatus.RUNNING, 0),
            c.get(TaskStatus.PENDING, 0),
            sum(c.values()),
        )


NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def strict(obj: Any) -> Any:
    """``obj`` with every non-finite float written as the string ``"NaN"``, ``"Infinity"``
    or ``"-Infinity"`` (strict JSON has no such numbers; ``float()`` reads these strings)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else NON_FINITE[repr(obj)]
    if isinstance(obj, dict):
        return {key: strict(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(value) for value in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """Strict JSON text (see :func:`strict`); raises on anything else that is not JSON."""
    return json.dumps(strict(obj), ensure_ascii=False, allow_nan=False, **kwargs)


# The version of the JSON objects hsm prints, in each of them as its first key. A key added
# keeps the version; a key removed, renamed or changed in meaning raises it by one.
JSON_VERSION_KEY = "hsm_json"
JSON_VERSION = 1


def envelope(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` as hsm prints it: with the version of its JSON objects."""
    return {JSON_VERSION_KEY: JSON_VERSION, **obj}


def json_text(obj: Mapping[str, Any]) -> str:
    """The text of one JSON object as hsm prints it: indented, with its version."""
    return dumps(envelope(obj), indent=2) + "\n"


def print_json(obj: Mapping[str, Any]) -> None:
    sys.stdout.write(json_text(obj))
    sys.stdout.flush()


def write_json_line(obj: Mapping[str, Any]) -> None:
    """One JSON object on one line, with its version (a stream of them, one per line)."""
    sys.stdout.write(dumps(envelope(obj)) + "\n")
    sys.stdout.flush()


class _Items(list[Any]):
    """A JSON array whose items are made as the encoder reaches them, so that they are
    never all in memory. ``JSONEncoder.iterencode`` asks a list whether it is empty with
    ``bool`` and walks it with ``for``: this list holds nothing itself and answers both
    from ``items``. (Only ``iterencode``: a one-shot ``json.dumps`` may take the C encoder,
    which reads a list's own storage.)"""

    def __init__(self, items: Iterator[Any]) -> None:
        super().__init__()
        try:
            first = next(items)
        except StopIteration:
            self._items: Iterator[Any] | None = None
        else:
            self._items = itertools.chain([first], items)

    def __bool__(self) -> bool:
        return self._items is not None

    def __iter__(self) -> Iterator[Any]:
        return map(strict, self._items or ())


def print_summary_json(summary: SweepSummary, store: Store) -> None:
    """The JSON object of a sweep: the same text as ``print_json(summary.to_json(store))``,
    written while its tasks are read, so that they are never all in memory at once."""
    write_summary_json(summary, store, sys.stdout)
    sys.stdout.flush()


WRITE_CHUNK = 1 << 16


def write_summary_json(summary: SweepSummary, store: Store, out: TextIO) -> None:
    """The whole object goes through one encoder; its text is written in chunks."""
    obj = strict(envelope(summary.to_json(with_tasks=False)))
    obj["tasks"] = _Items(iter_task_json(store, summary.sweep))
    encoder = json.JSONEncoder(indent=2, ensure_ascii=False, allow_nan=False)
    buffer: list[str] = []
    size = 0
    for text in encoder.iterencode(obj):
        buffer.append(text)
        size += len(text)
        if size >= WRITE_CHUNK:
            out.write("".join(buffer))
            buffer.clear()
            size = 0
    out.write("".join(buffer) + "\n")


def summary_table(summary: SweepSummary) -> Table:
    """The counts of a sweep; tasks that hit their walltime apart from the other failures."""
    sweep = summary.sweep
    table = Table(title=f"sweep {sweep.id} — {sweep.state.value}", show_header=True)
    c = summary.counts
    timeouts = summary.timeouts
    cells = {
        "completed": c.get(TaskStatus.COMPLETED, 0),
        "failed": c.get(TaskStatus.FAILED, 0) - timeouts,
        "timed out": timeouts,
        "running": c.get(TaskStatus.RUNNING, 0),
        "pending": c.get(TaskStatus.PENDING, 0),
        "cancelled": c.get(TaskStatus.CANCELLED, 0),
    }
    if not timeouts:
        del cells["timed out"]
    for col in (*cells, "total"):
        table.add_column(col, justify="right")
    table.add_row(*(str(v) for v in cells.values()), str(summary.total))
    return table


def rerun_lines(summary: SweepSummary) -> list[str]:
    """One line per recorded rerun of the sweep: what it reran, changed and moved."""
    lines = []
    for r in summary.reruns:
        what = []
        if r.retry_failed:
            what.append("failed tasks" + (f" ({', '.join(r.causes)})" if r.causes else ""))
        if r.resources:
            what.append("resources " + describe_resources(r.resources))
        if r.sources:
            what.append("on " + ", ".join(r.sources))
        lines.append(
            f"rerun {fmt_time(r.time)}: {r.tasks} task(s) back in the queue; " + "; ".join(what)
        )
    return lines


def sources_table(summary: SweepSummary) -> Table:
    table = Table(title="sources")
    for col in ("source", "enabled", "submitted", "completed", "failed", "failure rate"):
        table.add_column(col)
    for s in summary.sources:
        enabled = "yes" if s.enabled else f"no ({s.disabled_reason})"
        table.add_row(
            s.name,
            enabled,
            str(s.submitted),
            str(s.completed),
            str(s.failed),
            f"{s.failure_rate:.0%}",
        )
    return table


def fmt_time(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) if epoch else "-"
