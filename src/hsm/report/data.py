"""The report model: everything the HTML report shows, built from the store and task folders.

``build_report`` reads; it writes nothing, so it is safe while a sweep runs (the report
then shows the state so far). The model is plain dataclasses whose ``to_json`` is strict
JSON (no NaN), ready to embed in the page.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hsm.engine.codeversion import describe as describe_code
from hsm.jobscript import STDERR_LOG
from hsm.report.files import failure_key, json_safe, read_tail, task_metrics
from hsm.sources.base import task_folder_name
from hsm.spec.config import HealthConfig
from hsm.state import AttemptRow, EventRow, HealthRow, Store, SweepRow, TaskRow
from hsm.states import ACTIVE_ATTEMPT, SweepState, TaskStatus

REPORT_VERSION = 1
SPEC_FILE = "sweep.yaml"  # the copy of the sweep file kept in the sweep folder
SPEC_MAX_CHARS = 200_000
MAX_HEALTH_POINTS = 1500  # per source; longer series keep the lowest disk per time bucket
MAX_EVENTS = 100_000
# Tasks whose error-log tail is read: those that did not (yet) complete.
TAIL_STATUSES = frozenset(
    {TaskStatus.FAILED, TaskStatus.RUNNING, TaskStatus.CANCELLED, TaskStatus.PENDING}
)


@dataclass(frozen=True)
class SweepInfo:
    id: str
    state: str
    running: bool
    created: float
    finished: float | None
    duration: float
    sweep_dir: str
    spec_path: str
    spec_text: str
    command_line: str
    code_version: str
    message: str | None
    sources: list[str]
    total: int
    counts: dict[str, int]
    causes: dict[str, int]
    resume_command: str
    retry_command: str
    report_command: str


@dataclass(frozen=True)
class Lane:
    source: str
    slot: int | None
    label: str


@dataclass(frozen=True)
class Bar:
    task: int
    attempt: int
    lane: int
    start: float
    end: float | None  # None while running
    outcome: str  # an attempt state, launching counted as running (see ``outcome``)
    host: str | None
    exit_code: int | None
    cause: str | None


@dataclass(frozen=True)
class TaskInfo:
    number: int
    status: str
    cause: str | None
    source: str | None
    attempts: int
    exit_code: int | None
    params: dict[str, Any]
    task_dir: str
    log: int | None  # index into Report.logs: the tail of stderr.log


@dataclass(frozen=True)
class HealthLevels:
    disk_warning_free: int
    disk_warning_percent: float
    disk_critical_free: int
    disk_critical_percent: float
    max_load_per_core: float
    max_memory_percent: float

    @classmethod
    def of(cls, config: HealthConfig) -> HealthLevels:
        return cls(
            int(config.disk_warning_free),
            config.disk_warning_percent,
            int(config.disk_critical_free),
            config.disk_critical_percent,
            config.max_load_per_core,
            config.max_memory_percent,
        )

    def warning_bytes(self, total: int | None) -> int:
        """Free space below which a disk of ``total`` bytes is classified 'warning'."""
        share = int(total * self.disk_warning_percent / 100) if total else 0
        return max(self.disk_warning_free, share)

    def critical_bytes(self, total: int | None) -> int:
        share = int(total * self.disk_critical_percent / 100) if total else 0
        return max(self.disk_critical_free, share)


@dataclass(frozen=True)
class HealthSeries:
    """One source's health samples, as columns (one entry per sample)."""

    source: str
    warning_bytes: int  # the warning and critical levels for the latest disk size
    critical_bytes: int
    time: list[float] = field(default_factory=list)
    reachable: list[bool] = field(default_factory=list)
    free_bytes: list[int | None] = field(default_factory=list)
    total_bytes: list[int | None] = field(default_factory=list)
    load1: list[float | None] = field(default_factory=list)
    cores: list[int | None] = field(default_factory=list)
    memory_percent: list[float | None] = field(default_factory=list)
    disk_status: list[str | None] = field(default_factory=list)
    status: list[str] = field(default_factory=list)
    detail: list[str | None] = field(default_factory=list)
    samples: int = 0  # recorded in the window, before thinning


@dataclass(frozen=True)
class SourceEvent:
    time: float
    source: str
    kind: str  # "enabled", "disabled", or another recorded kind
    message: str


@dataclass(frozen=True)
class SourceStats:
    name: str
    enabled: bool
    disabled_reason: str | None
    submitted: int
    completed: int
    failed: int  # failures counted against the source, as in ``hsm status``
    failure_rate: float
    failed_by_cause: dict[str, int]
    running: int
    first_dispatch: float | None
    last_result: float | None
    span: float | None  # seconds from the first dispatch to the last result


@dataclass(frozen=True)
class FailureGroup:
    cause: str
    count: int
    tail: str | None  # the tail of the first task in the group, as written
    key: str  # the normalised error the group shares (files.failure_key)
    tasks: list[int]
    sources: list[str]


@dataclass(frozen=True)
class MetricsTable:
    """Parameters against the values of each task's ``metrics.json``."""

    params: list[str]  # parameter names, those that vary across tasks first
    varying: list[str]  # the parameters that take more than one value
    metrics: list[str]
    rows: list[dict[str, Any]]  # {"task", "status", "metrics": {name: value}}


@dataclass(frozen=True)
class Report:
    version: int
    generated: float
    utc_offset: int  # seconds east of UTC where the report was made; times show in that zone
    sweep: SweepInfo
    window: tuple[float, float]  # the time axis shared by the timeline and health charts
    lanes: list[Lane]
    bars: list[Bar]
    tasks: list[TaskInfo]
    logs: list[str]  # distinct error-log tails, referenced by TaskInfo.log
    levels: HealthLevels
    health: list[HealthSeries]
    events: list[SourceEvent]
    sources: list[SourceStats]
    failures: list[FailureGroup]
    metrics: MetricsTable | None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = json_safe(asdict(self))
        return data


def build_report(
    store: Store,
    sweep_id: str,
    *,
    health: HealthConfig,
    now: float | None = None,
    metrics_file: str | None = None,
) -> Report:
    """Read one sweep's state and task folders into a report model."""
    now = time.time() if now is None else now
    sweep = store.sweep(sweep_id)
    tasks = store.tasks(sweep_id)
    attempts = store.attempts(sweep_id)
    running = sweep.state is SweepState.RUNNING
    start = sweep.created
    end = now if running or sweep.finished is None else sweep.finished
    end = max([end, start, *(a.finished for a in attempts if a.finished is not None)])
    names = _source_names(sweep.sources, attempts)
    tasks_dir = Path(sweep.sweep_dir, "tasks")

    logs: list[str] = []
    log_index: dict[str, int] = {}
    infos: list[TaskInfo] = []
    tails: dict[int, str] = {}
    for task in tasks:
        folder = tasks_dir / task_folder_name(task.number)
        index = None
        if task.attempts and task.status in TAIL_STATUSES:
            tail = read_tail(folder / STDERR_LOG)
            if tail is not None:
                tails[task.number] = tail
                index = log_index.setdefault(tail, len(logs))
                if index == len(logs):
                    logs.append(tail)
        infos.append(
            TaskInfo(
                task.number,
                task.status.value,
                task.cause,
                task.source,
                task.attempts,
                task.exit_code,
                json_safe(task.params),
                str(folder),
                index,
            )
        )

    lanes, bars = timeline(attempts, names)
    levels = HealthLevels.of(health)
    series = [
        health_series(store.health_samples(n, limit=10**9, since=start), n, levels, end=end)
        for n in names
    ]
    return Report(
        version=REPORT_VERSION,
        generated=now,
        utc_offset=time.localtime(now).tm_gmtoff,
        sweep=sweep_info(sweep, tasks, now),
        window=(start, end),
        lanes=lanes,
        bars=bars,
        tasks=infos,
        logs=logs,
        levels=levels,
        health=series,
        events=source_events(store.events(since=start, limit=MAX_EVENTS), names, sweep_id, end=end),
        sources=[source_stats(store, sweep_id, n, attempts) for n in names],
        failures=failure_groups(tasks, tails),
        metrics=metrics_table(tasks, tasks_dir, metrics_file),
    )


def _source_names(configured: Sequence[str], attempts: Iterable[AttemptRow]) -> list[str]:
    names = list(dict.fromkeys(configured))
    for a in attempts:
        if a.source not in names:
            names.append(a.source)
    return names


def sweep_info(sweep: SweepRow, tasks: Sequence[TaskRow], now: float) -> SweepInfo:
    """The summary. Counts come from ``tasks``, so they match the rest of the report even
    while the sweep runs."""
    counts = dict.fromkeys((s.value for s in TaskStatus), 0)
    causes: dict[str, int] = {}
    for task in tasks:
        counts[task.status.value] += 1
        if task.cause is not None:
            causes[task.cause] = causes.get(task.cause, 0) + 1
    running = sweep.state is SweepState.RUNNING
    end = now if running or sweep.finished is None else sweep.finished
    ident = shlex.quote(sweep.id)
    return SweepInfo(
        id=sweep.id,
        state=sweep.state.value,
        running=running,
        created=sweep.created,
        finished=None if running else sweep.finished,
        duration=max(0.0, end - sweep.created),
        sweep_dir=sweep.sweep_dir,
        spec_path=sweep.spec_path,
        spec_text=spec_text(sweep),
        command_line=sweep.command_line,
        code_version=describe_code(sweep.code_version),
        message=sweep.abort_reason,
        sources=list(sweep.sources),
        total=sum(counts.values()),
        counts=counts,
        causes=dict(sorted(causes.items())),
        resume_command=f"hsm resume {ident}",
        retry_command=f"hsm resume {ident} --retry-failed",
        report_command=f"hsm report {ident}",
    )


def spec_text(sweep: SweepRow) -> str:
    """The sweep file as it was at the start (its copy in the sweep folder)."""
    try:
        text = Path(sweep.sweep_dir, SPEC_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return json.dumps(json_safe(sweep.spec), indent=2, ensure_ascii=False)
    if len(text) > SPEC_MAX_CHARS:
        text = text[:SPEC_MAX_CHARS] + "\n… (cut)"
    return text


def outcome(attempt: AttemptRow) -> str:
    if attempt.state in ACTIVE_ATTEMPT:
        return "running"
    return attempt.state.value


def timeline(attempts: Sequence[AttemptRow], names: Sequence[str]) -> tuple[list[Lane], list[Bar]]:
    """One lane per (source, slot), in source order; one bar per attempt."""
    order = {n: i for i, n in enumerate(names)}
    keys = sorted(
        {(a.source, a.slot) for a in attempts},
        key=lambda k: (order.get(k[0], len(order)), k[0], -1 if k[1] is None else k[1]),
    )
    lanes = [Lane(src, slot, src if slot is None else f"{src} #{slot}") for src, slot in keys]
    index = {k: i for i, k in enumerate(keys)}
    bars = [
        Bar(
            a.number,
            a.attempt,
            index[(a.source, a.slot)],
            a.started,
            a.finished,
            outcome(a),
            a.host,
            a.exit_code,
            a.cause,
        )
        for a in sorted(attempts, key=lambda a: (a.started, a.id))
    ]
    return lanes, bars


def health_series(
    rows: Sequence[HealthRow],
    source: str,
    levels: HealthLevels,
    *,
    end: float,
    max_points: int = MAX_HEALTH_POINTS,
) -> HealthSeries:
    """A source's samples up to ``end``, thinned to ``max_points`` (the lowest disk kept)."""
    rows = [r for r in rows if r.time <= end]
    count = len(rows)
    if len(rows) > max_points:
        rows = thin(rows, max_points)
    totals = [r.total_bytes for r in rows if r.total_bytes]
    total = totals[-1] if totals else None
    series = HealthSeries(
        source, levels.warning_bytes(total), levels.critical_bytes(total), samples=count
    )
    for r in rows:
        series.time.append(r.time)
        series.reachable.append(r.reachable)
        series.free_bytes.append(r.free_bytes)
        series.total_bytes.append(r.total_bytes)
        series.load1.append(r.load1)
        series.cores.append(r.cores)
        series.memory_percent.append(r.memory_percent)
        series.disk_status.append(r.disk_status)
        series.status.append(r.status)
        series.detail.append(r.detail)
    return series


def thin(rows: Sequence[HealthRow], max_points: int) -> list[HealthRow]:
    """Keep one sample per time bucket: the worst one (least free disk, else unreachable)."""
    first, last = rows[0].time, rows[-1].time
    width = (last - first) / max_points or 1.0
    buckets: dict[int, HealthRow] = {}
    for r in rows:
        b = min(int((r.time - first) / width), max_points - 1)
        kept = buckets.get(b)
        if kept is None or _worse(r, kept):
            buckets[b] = r
    return [buckets[b] for b in sorted(buckets)]


def _worse(a: HealthRow, b: HealthRow) -> bool:
    if a.reachable != b.reachable:
        return not a.reachable
    if a.free_bytes is None or b.free_bytes is None:
        return False
    return a.free_bytes < b.free_bytes


def source_events(
    rows: Iterable[EventRow], names: Sequence[str], sweep_id: str, *, end: float
) -> list[SourceEvent]:
    """Events of the sweep's sources in its window, and events recorded by the sweep."""
    wanted = set(names)
    return [
        SourceEvent(e.time, e.source, e.kind, e.message)
        for e in rows
        if e.source in wanted and (e.time <= end or e.sweep_id == sweep_id)
    ]


def source_stats(
    store: Store, sweep_id: str, name: str, attempts: Sequence[AttemptRow]
) -> SourceStats:
    counts = store.source_counts(name, sweep_id=sweep_id)
    row = store.source(name)
    mine = [a for a in attempts if a.source == name]
    first = min((a.started for a in mine), default=None)
    last = max((a.finished for a in mine if a.finished is not None), default=None)
    return SourceStats(
        name=name,
        enabled=row.enabled,
        disabled_reason=row.disabled_reason,
        submitted=counts.submitted,
        completed=counts.completed,
        failed=counts.failed,
        failure_rate=round(counts.failure_rate, 4),
        failed_by_cause=dict(sorted((counts.failed_by_cause or {}).items())),
        running=sum(1 for a in mine if outcome(a) == "running"),
        first_dispatch=first,
        last_result=last,
        span=None if first is None or last is None else last - first,
    )


def failure_groups(tasks: Sequence[TaskRow], tails: dict[int, str]) -> list[FailureGroup]:
    """Failed tasks grouped by cause and normalised error-log tail, largest group first
    (then by first task)."""
    groups: dict[tuple[str, str], list[TaskRow]] = {}
    for task in tasks:
        if task.status is not TaskStatus.FAILED:
            continue
        tail = tails.get(task.number)
        key = failure_key(tail) if tail else ""
        groups.setdefault((task.cause or "unknown", key), []).append(task)
    out = [
        FailureGroup(
            cause=cause,
            count=len(members),
            tail=tails.get(members[0].number),
            key=key,
            tasks=[t.number for t in members],
            sources=sorted({t.source for t in members if t.source}),
        )
        for (cause, key), members in groups.items()
    ]
    out.sort(key=lambda g: (-g.count, g.tasks[0]))
    return out


def metrics_table(
    tasks: Sequence[TaskRow], tasks_dir: Path, metrics_file: str | None = None
) -> MetricsTable | None:
    """Parameters against metrics, for the tasks that have metrics (see
    :func:`~hsm.report.files.task_metrics`)."""
    rows: list[dict[str, Any]] = []
    metric_names: dict[str, None] = {}
    for task in tasks:
        if not task.attempts:
            continue
        values = task_metrics(tasks_dir / task_folder_name(task.number), metrics_file)
        if values is None:
            continue
        metric_names.update(dict.fromkeys(values))
        rows.append({"task": task.number, "status": task.status.value, "metrics": values})
    if not rows:
        return None
    with_metrics = {r["task"] for r in rows}
    seen: dict[str, set[str]] = {}
    for task in tasks:
        if task.number in with_metrics:
            for key, value in task.params.items():
                seen.setdefault(key, set()).add(repr(value))
    varying = [k for k, v in seen.items() if len(v) > 1]
    fixed = [k for k, v in seen.items() if len(v) <= 1]
    return MetricsTable(
        params=varying + fixed, varying=varying, metrics=list(metric_names), rows=rows
    )
