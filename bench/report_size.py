"""The HTML report of a large sweep: its size, and how long Chromium takes to draw it.

A synthetic sweep of 10,000 tasks is written through the Store API, as if it had run for a
week on four sources (80 slots): about 8 % of the tasks fail with a few distinct errors,
some attempts are lost or killed by the disk guard and retried, one source is disabled for
a day, health samples come every 5 minutes, and completed tasks write a metrics.json.
Then ``hsm report`` builds the page, and headless Chromium opens it; the time is from the
navigation until the report's script has drawn every section.

Targets: the file is under 10 MB, and Chromium draws it in under 3 s.

Run: .venv/bin/python bench/report_size.py [--tasks N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hsm import clock as hsm_clock  # noqa: E402
from hsm.report.data import build_report  # noqa: E402
from hsm.report.render import render_html  # noqa: E402
from hsm.spec.config import HealthConfig  # noqa: E402
from hsm.state import AttemptRow, Store  # noqa: E402
from hsm.states import AttemptState, Cause, SweepState, TaskStatus  # noqa: E402
from tests.integration.test_report_e2e import chromium, need_chromium  # noqa: E402

MAX_BYTES = 10 * 10**6
MAX_SECONDS = 3.0
SOURCES = {"local": 8, "blossom": 16, "bramble": 24, "cluster": 32}
DAY = 86400.0
GB = 10**9
ERRORS = [
    'Traceback (most recent call last):\n  File "train.py", line 88, in step\n'
    "    loss.backward()\nRuntimeError: CUDA out of memory. Tried to allocate {a:.2f} GiB",
    'Traceback (most recent call last):\n  File "train.py", line 41, in <module>\n'
    "ValueError: loss is nan at step {n}",
    'Traceback (most recent call last):\n  File "data.py", line 17, in load\n'
    "FileNotFoundError: [Errno 2] No such file or directory: '/data/shard_{n}.bin'",
]


@contextmanager
def clock(start: float) -> Iterator[Callable[[float], None]]:
    """Make the store's timestamps come from a settable clock (the synthetic week)."""
    now = [start]
    hsm_clock.install(lambda: now[0], time.monotonic)  # the store reads hsm.clock.time()

    def set_time(t: float) -> None:
        now[0] = t

    try:
        yield set_time
    finally:
        hsm_clock.reset()


def synthesize(root: Path, n_tasks: int, seed: int = 7) -> tuple[Store, str]:
    rng = random.Random(seed)
    store = Store.open(root / ".hsm" / "hsm.db")
    sweep_dir = root / "runs" / "big"
    tasks_dir = sweep_dir / "tasks"
    tasks_dir.mkdir(parents=True)
    (sweep_dir / "sweep.yaml").write_text(
        "script: train.py\nsweep:\n  grid:\n    seed: [0, 1, ...]\n"
        "    optimizer.lr: [0.1, 0.03, 0.01, 0.003, 0.001]\n"
        "    model.width: [128, 256, 512, 1024]\n"
    )
    params = [
        {
            "seed": i // 20,
            "optimizer.lr": [0.1, 0.03, 0.01, 0.003, 0.001][i % 5],
            "model.width": [128, 256, 512, 1024][i // 5 % 4],
            "data": "imagenet-subset",
        }
        for i in range(n_tasks)
    ]
    start = time.time() - 8 * DAY
    events: list[tuple[float, int, str, Any]] = []  # (time, order, kind, payload)
    order = 0

    def at(t: float, kind: str, payload: Any) -> None:
        nonlocal order
        order += 1
        events.append((t, order, kind, payload))

    # Dispatch: each free slot takes the next task; failures of the machine are retried.
    disabled = ("bramble", start + 2 * DAY, start + 3 * DAY)
    slots = [(start + rng.uniform(0, 60), name, s) for name, k in SOURCES.items() for s in range(k)]
    heapq.heapify(slots)
    queue = [(number, 1, start) for number in range(1, n_tasks + 1)]  # (task, attempt, ready)
    end = start
    while queue:
        number, attempt, ready = queue.pop(0)
        t, name, slot = heapq.heappop(slots)
        t = max(t, ready)
        if name == disabled[0] and disabled[1] <= t < disabled[2]:
            heapq.heappush(slots, (disabled[2] + rng.uniform(0, 30), name, slot))
            queue.insert(0, (number, attempt, ready))
            continue
        duration = rng.uniform(600, 5400)
        roll = rng.random()
        if roll < 0.02 and attempt < 3:
            cause, duration = Cause.LOST, duration * rng.random()
            queue.append((number, attempt + 1, t + duration + 1))
        elif roll < 0.035 and attempt < 3:
            cause, duration = Cause.DISK_KILL, duration * rng.random()
            queue.append((number, attempt + 1, t + duration + 1))
        elif roll < 0.115:
            cause = Cause.TASK_FAILED
        else:
            cause = Cause.COMPLETED
        at(t, "begin", (number, name, slot))
        at(t + duration, "finish", (number, cause))
        heapq.heappush(slots, (t + duration + rng.uniform(1, 20), name, slot))
        end = max(end, t + duration)
    for name in SOURCES:
        total, free = 500 * GB, 300.0 * GB
        t = start
        while t <= end:
            free = max(2 * GB, min(total, free + rng.uniform(-3, 2.5) * GB))
            at(t, "health", (name, free, total, rng.uniform(0.2, 2.6) * 4, 4, rng.uniform(20, 90)))
            t += 300
    at(disabled[1], "enable", (disabled[0], False, "3 consecutive health check failures"))
    at(disabled[2], "enable", (disabled[0], True, "enabled by hsm distributed enable"))
    events.sort()

    with clock(start) as set_time:
        store.create_sweep(
            sweep_id="big",
            spec_path=str(root / "sweep.yaml"),
            spec={"script": "train.py"},
            sweep_dir=str(sweep_dir),
            project_root=str(root),
            sources=list(SOURCES),
            parallel=None,
            command_line="hsm run sweep.yaml --distributed --name big",
            params=params,
        )
        running: dict[int, AttemptRow] = {}
        for t, _, kind, payload in events:
            set_time(t)
            if kind == "begin":
                number, name, slot = payload
                row = store.begin_attempt("big", number, source=name, slot=slot)
                store.attempt_launched(row.id, {"job_id": str(number)}, f"{name}-node")
                running[number] = row
            elif kind == "finish":
                number, cause = payload
                finish(store, running.pop(number), cause, tasks_dir, rng)
            elif kind == "health":
                name, free, total, load, cores, mem = payload
                store.record_health(
                    source=name,
                    reachable=True,
                    disk_path="/scratch",
                    free_bytes=int(free),
                    total_bytes=total,
                    load1=load,
                    cores=cores,
                    memory_percent=mem,
                    disk_status="healthy",
                    status="healthy",
                    detail=None,
                    consecutive_failures=0,
                )
            else:
                name, enabled, reason = payload
                store.set_source_enabled(name, enabled, reason=reason, sweep_id="big")
        set_time(end + 5)
        store.set_sweep_state("big", SweepState.FAILED, abort_reason="tasks failed")
    return store, "big"


def finish(
    store: Store, row: AttemptRow, cause: Cause, tasks_dir: Path, rng: random.Random
) -> None:
    folder = tasks_dir / f"task_{row.number:04d}"
    folder.mkdir(exist_ok=True)
    if cause is Cause.COMPLETED:
        (folder / "metrics.json").write_text(
            json.dumps(
                {
                    "loss": round(rng.uniform(0.1, 2.5), 4),
                    "eval": {"acc": round(rng.random(), 4)},
                    "epochs": rng.randint(5, 50),
                }
            )
        )
        store.finish_attempt(
            row,
            state=AttemptState.COMPLETED,
            cause=cause,
            exit_code=0,
            task_status=TaskStatus.COMPLETED,
        )
        return
    retry = cause in (Cause.LOST, Cause.DISK_KILL)
    if cause is Cause.TASK_FAILED:
        error = rng.choice(ERRORS).format(a=rng.uniform(1, 8), n=rng.randint(1, 99999))
        (folder / "stderr.log").write_text(f"epoch 1/30 loss 2.31\n{error}\n")
    state = AttemptState.LOST if cause is Cause.LOST else AttemptState.FAILED
    store.finish_attempt(
        row,
        state=state,
        cause=cause,
        exit_code=None if cause is Cause.LOST else 1,
        task_status=TaskStatus.PENDING if retry else TaskStatus.FAILED,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, default=None, help="Keep the files here.")
    parser.add_argument(
        "--json", type=Path, metavar="FILE", help="also write the figures as JSON to FILE"
    )
    args = parser.parse_args()
    need_chromium()
    work = Path(tempfile.mkdtemp(prefix="hsm-bench-report-"))
    try:
        t0 = time.perf_counter()
        store, sweep_id = synthesize(work, args.tasks)
        made = time.perf_counter() - t0
        t0 = time.perf_counter()
        model = build_report(store, sweep_id, health=HealthConfig())
        page = render_html(model)
        built = time.perf_counter() - t0
        path = work / "report.html"
        path.write_text(page, encoding="utf-8")
        size = path.stat().st_size
        with chromium() as browser:
            seconds = browser.open(path, timeout=60)
            in_page = float(browser.evaluate("document.body.dataset.renderMs")) / 1000
            bars = browser.evaluate("document.querySelectorAll('rect.bar').length")
            problems = browser.problems() + [
                str(browser.evaluate("document.body.dataset.errors || ''"))
            ]
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, args.keep / "report.html")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    problems = [p for p in problems if p]
    ok = size < MAX_BYTES and seconds < MAX_SECONDS and not problems
    rows = [
        ("tasks / attempts / bars drawn", f"{args.tasks} / {len(model.bars)} / {bars}"),
        (
            "health samples (kept in the page)",
            f"{sum(h.samples for h in model.health)} ({sum(len(h.time) for h in model.health)})",
        ),
        ("synthetic store written in", f"{made:.1f} s"),
        ("report built and rendered to HTML in", f"{built:.2f} s"),
        ("report file size", f"{size / 1e6:.2f} MB (target < {MAX_BYTES / 1e6:.0f} MB)"),
        ("Chromium: navigation to drawn", f"{seconds:.2f} s (target < {MAX_SECONDS:.0f} s)"),
        ("  of which in the page (performance.now)", f"{in_page:.2f} s"),
        ("result", "ok" if ok else "FAILED" + (f": {problems}" if problems else "")),
    ]
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "tasks": args.tasks,
                    "size_bytes": size,
                    "built_s": built,
                    "chromium_s": seconds,
                    "in_page_s": in_page,
                    "max_bytes": MAX_BYTES,
                    "max_seconds": MAX_SECONDS,
                    "ok": ok,
                    "problems": problems,
                }
            )
        )
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
