"""The invariants every schedule must keep, checked on the database, the local sweep folder
and the simulated hosts' record of what really ran."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

from hsm.engine.failsafe import TASK_LEVEL_CAUSES
from hsm.engine.run import RunOutcome
from hsm.jobscript import read_status
from hsm.sources.base import task_folder_name
from hsm.state import AttemptRow, Store
from hsm.states import ACTIVE_ATTEMPT, TERMINAL_TASK, AttemptState, SweepState, TaskStatus
from tests.sim.world import EPOCH, LOST_AFTER, World

SWEEP = "sim"
STOP_MARGIN = 5.0  # a superseded attempt on a host that is back is stopped within this
USABLE_FOR = 7.0  # a source answering this long (a health interval, 2 s more) is usable
TASK_LEVEL = {c.value for c in TASK_LEVEL_CAUSES}
EXIT_CODES = {
    SweepState.COMPLETED: 0,
    SweepState.FAILED: 1,
    SweepState.ABORTED: 3,
    SweepState.CANCELLED: 130,
}
RATE = re.compile(r"high failure rate: (\d+)/(\d+)")


def check(world: World, store: Store, sweep_dir: Path, outcomes: list[RunOutcome]) -> list[str]:
    v: list[str] = []
    tasks = store.tasks(SWEEP)
    rows = store.attempts(SWEEP)
    by_task: dict[int, list[AttemptRow]] = defaultdict(list)
    for a in rows:
        by_task[a.number].append(a)

    # Every task ends.
    # After an abort, a task may wait in the queue, or hold an attempt whose launch was never
    # confirmed: that stays on record, unresolved, for the next resume to check on its host.
    aborted = bool(outcomes) and outcomes[-1].state is SweepState.ABORTED

    def unconfirmed(a: AttemptRow) -> bool:
        return aborted and a.state is AttemptState.LAUNCHING

    for t in tasks:
        waits = t.status is TaskStatus.PENDING or (
            t.status is TaskStatus.RUNNING
            and all(unconfirmed(a) for a in by_task[t.number] if a.state in ACTIVE_ATTEMPT)
        )
        if t.status not in TERMINAL_TASK and not (aborted and waits):
            v.append(f"task {t.number} did not end: it is {t.status.value}")
    for a in rows:
        if a.state in ACTIVE_ATTEMPT and not unconfirmed(a):
            v.append(f"attempt {a.number}.{a.attempt} on {a.source} is still {a.state.value}")

    # At most one completed attempt per task, and its outputs are in the task folder.
    for t in tasks:
        done = [a for a in by_task[t.number] if a.state is AttemptState.COMPLETED]
        if len(done) > 1:
            v.append(
                f"task {t.number} completed {len(done)} times: "
                + ", ".join(f"{a.attempt} on {a.source}" for a in done)
            )
        if t.status is TaskStatus.COMPLETED and len(done) == 1:
            v.extend(_files_match(sweep_dir, done[0]))
        elif t.status is TaskStatus.COMPLETED:
            v.append(f"task {t.number} is completed, with no completed attempt")
        elif done:
            v.append(
                f"task {t.number} is {t.status.value} although attempt {done[0].attempt} completed"
            )

    # No attempt is forgotten; no attempt number runs twice.
    runs: dict[tuple[int, int], list[str]] = defaultdict(list)
    for e in world.executions:
        runs[(e.number, e.attempt)].append(e.host)
        if not any(a.attempt == e.attempt and a.source == e.host for a in by_task[e.number]):
            v.append(f"attempt {e.number}.{e.attempt} ran on {e.host} and has no record")
    for (number, attempt), hosts in runs.items():
        if len(hosts) > 1:
            v.append(
                f"attempt {number}.{attempt} was started {len(hosts)} times ({', '.join(hosts)})"
            )

    # No verdict "lost" against an attempt that ran on a host that answered.
    for a in rows:
        if a.state is not AttemptState.LOST or a.finished is None:
            continue
        t_lost = a.finished - EPOCH
        host = world.hosts.get(a.source)
        ran = [
            e
            for e in world.executions
            if (e.number, e.attempt, e.host) == (a.number, a.attempt, a.source)
            and e.received <= t_lost
        ]
        if (
            host is not None
            and ran
            and not host.unreachable_through(t_lost - LOST_AFTER + 0.01, t_lost)
        ):
            v.append(
                f"attempt {a.number}.{a.attempt} on {a.source} was recorded lost at"
                f" t={t_lost:.2f} while it ran there and the host answered"
            )

    # No two attempts of a task ran at once, unless the first one's host was silent.
    by_number = defaultdict(list)
    for e in world.executions:
        by_number[e.number].append(e)
    for number, execs in by_number.items():
        execs.sort(key=lambda e: (e.attempt, e.received))
        for i, x in enumerate(execs):
            for y in execs[i + 1 :]:
                start = max(x.received, y.received)
                end = min(
                    x.ended if x.ended is not None else world.now,
                    y.ended if y.ended is not None else world.now,
                )
                if end <= start:
                    continue
                if not _excused(world, by_task[number], x, end):
                    v.append(
                        f"task {number}: attempt {x.attempt} on {x.host} and attempt"
                        f" {y.attempt} on {y.host} ran at the same time"
                        f" (t={start:.2f}..{end:.2f})"
                    )

    # Placement never goes back to a source that failed the task while another is usable.
    disabled = _disabled_times(store)
    names = list(world.hosts)
    for number, attempts in by_task.items():
        failed_on: set[str] = set()
        for a in sorted(attempts, key=lambda r: r.id):
            began = a.started - EPOCH
            if a.source in failed_on:
                others = [
                    n
                    for n in names
                    if n not in failed_on
                    and not world.hosts[n].outage_between(began - USABLE_FOR, began)
                    and not _disabled_at(disabled.get(n, []), a.started)
                ]
                if others:
                    v.append(
                        f"task {number}: attempt {a.attempt} went back to {a.source},"
                        f" which had failed it, while {others[0]} was usable"
                    )
            if a.state in (AttemptState.FAILED, AttemptState.LOST):
                failed_on.add(a.source)

    # A task failure is excused only by a task failure on another source.
    for a in rows:
        if (
            a.counted is False
            and a.cause in TASK_LEVEL
            and not any(
                b.source != a.source and b.state is AttemptState.FAILED and b.cause in TASK_LEVEL
                for b in by_task[a.number]
            )
        ):
            v.append(
                f"attempt {a.number}.{a.attempt} on {a.source} ({a.cause}) was"
                f" excused without a task failure elsewhere"
            )

    # The failure counts behind a disable message stay on record.
    for ev in store.events(limit=10_000):
        m = RATE.search(ev.message) if ev.kind == "disabled" else None
        if m is not None:
            counted = sum(1 for a in rows if a.source == ev.source and a.counted is True)
            if counted < int(m.group(1)):
                v.append(
                    f"{ev.source} was disabled for {m.group(1)}/{m.group(2)} failures;"
                    f" the record now counts {counted}"
                )

    # Lost tasks go first: no new task starts, on a source the lost task may go to, between a
    # loss and its task's next attempt (a retry waits for a source it has not failed on).
    for a in rows:
        if a.state is not AttemptState.LOST or a.finished is None:
            continue
        later = [b for b in by_task[a.number] if b.id > a.id]
        if not later:
            continue
        t_retry = min(b.started for b in later)
        failed_on = {
            b.source
            for b in by_task[a.number]
            if b.id <= a.id and b.state in (AttemptState.FAILED, AttemptState.LOST)
        }
        fresh = [
            b
            for b in rows
            if b.attempt == 1
            and b.number != a.number
            and a.finished < b.started < t_retry
            and b.source not in failed_on
        ]
        if fresh:
            v.append(
                f"task {a.number} was lost at t={a.finished - EPOCH:.2f}, and"
                f" {len(fresh)} new task(s) started before its retry"
            )

    # The exit code matches the outcome.
    for o in outcomes:
        if EXIT_CODES.get(o.state) != o.exit_code:
            v.append(f"sweep {o.state.value} with exit code {o.exit_code}")
    if outcomes:
        last = outcomes[-1]
        statuses = {t.status for t in tasks}
        if last.exit_code == 0 and statuses != {TaskStatus.COMPLETED} and tasks:
            v.append(f"exit code 0 with tasks {sorted(s.value for s in statuses)}")
        if last.exit_code == 1 and TaskStatus.FAILED not in statuses:
            v.append("exit code 1 with no failed task")
        if last.exit_code == 0 and store.sweep(SWEEP).state is not SweepState.COMPLETED:
            v.append(f"exit code 0, sweep recorded {store.sweep(SWEEP).state.value}")
    return v


def _files_match(sweep_dir: Path, a: AttemptRow) -> list[str]:
    """files = database: the task folder holds the completed attempt's outputs."""
    folder = sweep_dir / "tasks" / task_folder_name(a.number)
    status = read_status(folder)
    where = f"task {a.number} (completed by attempt {a.attempt} on {a.source})"
    if status is None:
        return [f"{where}: no readable status.json in its folder"]
    out = []
    if (status.attempt, status.host, status.status.value) != (a.attempt, a.source, "completed"):
        out.append(
            f"{where}: its status.json says attempt {status.attempt} on {status.host},"
            f" {status.status.value}"
        )
    try:
        result = json.loads((folder / "result.json").read_text())
    except (OSError, ValueError):
        return [*out, f"{where}: no readable result.json in its folder"]
    nonce = getattr(a, "nonce", None)
    if (result.get("attempt"), result.get("source")) != (a.attempt, a.source) or (
        nonce and result.get("nonce") != nonce
    ):
        out.append(
            f"{where}: its result.json is attempt {result.get('attempt')}'s on"
            f" {result.get('source')}"
        )
    return out


def _excused(world: World, attempts: list[AttemptRow], a: object, end: float) -> bool:
    """An overlap is allowed while the first attempt's host was silent long enough for it to
    be recorded lost, and until shortly after that host came back."""
    for row in attempts:
        if (row.attempt, row.source) != (a.attempt, a.host):  # type: ignore[attr-defined]
            continue
        if row.state is not AttemptState.LOST or row.finished is None:
            return False
        t_lost = row.finished - EPOCH
        host = world.hosts[row.source]
        o = host.unreachable_through(t_lost - LOST_AFTER + 0.01, t_lost)
        return o is not None and end <= o.t1 + STOP_MARGIN
    return False


def _disabled_times(store: Store) -> dict[str, list[tuple[float, bool]]]:
    out: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for ev in store.events(limit=10_000):
        if ev.kind in ("disabled", "enabled"):
            out[ev.source].append((ev.time, ev.kind == "disabled"))
    return out


def _disabled_at(changes: list[tuple[float, bool]], t: float) -> bool:
    state = False
    for when, disabled in changes:
        if when <= t:
            state = disabled
    return state
