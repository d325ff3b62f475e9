"""The report model, built from a real store and real task folders (no browser)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ByteSize

from hsm.engine.summary import summarize
from hsm.report.data import Report, build_report, thin
from hsm.report.files import failure_key, normalise_tail, read_metrics, read_tail
from hsm.report.render import embed_json, render_html
from hsm.spec.config import HealthConfig
from hsm.state import AttemptRow, HealthRow, Store
from hsm.states import AttemptState, Cause, SweepState, TaskStatus

HOSTILE = "</script><script>alert(1)</script><!-- \u2028 & <b>"
GB = 10**9


def make_store(
    tmp_path: Path, params: list[dict[str, Any]], sources: tuple[str, ...] = ("alpha", "beta")
) -> tuple[Store, Path]:
    store = Store.open(tmp_path / "state" / "hsm.db")
    sweep_dir = tmp_path / "runs" / "s1"
    (sweep_dir / "tasks").mkdir(parents=True)
    (sweep_dir / "sweep.yaml").write_text("script: train.py\nsweep:\n  grid:\n    seed: [1, 2]\n")
    store.create_sweep(
        sweep_id="s1",
        spec_path=str(tmp_path / "sweep.yaml"),
        spec={"script": "train.py"},
        sweep_dir=str(sweep_dir),
        project_root=str(tmp_path),
        sources=list(sources),
        parallel=None,
        command_line="hsm run sweep.yaml --name s1",
        params=params,
    )
    return store, sweep_dir


def task_dir(sweep_dir: Path, number: int) -> Path:
    path = sweep_dir / "tasks" / f"task_{number:04d}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def run(
    store: Store,
    number: int,
    source: str,
    slot: int | None,
    cause: Cause | None,
    *,
    retry: bool = False,
    host: str = "node1",
) -> AttemptRow:
    """One attempt of a task; ``cause`` None leaves it running."""
    attempt = store.begin_attempt("s1", number, source=source, slot=slot)
    store.attempt_launched(attempt.id, {"job_id": str(number)}, host)
    if cause is None:
        return attempt
    state = {
        Cause.COMPLETED: AttemptState.COMPLETED,
        Cause.LOST: AttemptState.LOST,
        Cause.CANCELLED: AttemptState.CANCELLED,
    }.get(cause, AttemptState.FAILED)
    status = (
        TaskStatus.PENDING
        if retry
        else {
            AttemptState.COMPLETED: TaskStatus.COMPLETED,
            AttemptState.CANCELLED: TaskStatus.CANCELLED,
        }.get(state, TaskStatus.FAILED)
    )
    exit_code = 0 if cause is Cause.COMPLETED else (None if cause is Cause.LOST else 1)
    store.finish_attempt(attempt, state=state, cause=cause, exit_code=exit_code, task_status=status)
    return attempt


def health(
    store: Store, source: str, free: int, *, total: int = 20 * GB, reachable: bool = True
) -> None:
    store.record_health(
        source=source,
        reachable=reachable,
        disk_path="/work",
        free_bytes=free if reachable else None,
        total_bytes=total if reachable else None,
        load1=1.5,
        cores=4,
        memory_percent=40.0,
        disk_status="healthy",
        status="healthy",
        detail=None,
        consecutive_failures=0,
    )


def report(store: Store, **kw: Any) -> Report:
    return build_report(store, "s1", health=HealthConfig(), **kw)


# -- timeline -------------------------------------------------------------------------------
def test_one_lane_per_source_and_slot_one_bar_per_attempt(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path, [{"seed": i} for i in range(1, 6)])
    run(store, 1, "alpha", 0, Cause.COMPLETED)
    run(store, 2, "alpha", 1, Cause.TASK_FAILED)
    run(store, 3, "beta", 0, Cause.LOST, retry=True)
    run(store, 3, "alpha", 0, Cause.COMPLETED)
    run(store, 4, "beta", 0, None)  # still running
    model = report(store)

    assert [(lane.source, lane.slot, lane.label) for lane in model.lanes] == [
        ("alpha", 0, "alpha #0"),
        ("alpha", 1, "alpha #1"),
        ("beta", 0, "beta #0"),
    ]
    bars = [(b.task, b.attempt, model.lanes[b.lane].label, b.outcome) for b in model.bars]
    assert bars == [
        (1, 1, "alpha #0", "completed"),
        (2, 1, "alpha #1", "failed"),
        (3, 1, "beta #0", "lost"),
        (3, 2, "alpha #0", "completed"),
        (4, 1, "beta #0", "running"),
    ]
    running = model.bars[-1]
    assert running.end is None and running.host == "node1"
    assert all(b.end is not None and b.end >= b.start for b in model.bars[:-1])
    assert model.bars[1].exit_code == 1 and model.bars[1].cause == "task_failed"
    # Task 5 never started: it has no bar, but it is in the task list.
    assert [t.number for t in model.tasks] == [1, 2, 3, 4, 5]
    assert model.tasks[4].status == "pending" and model.tasks[4].attempts == 0


def test_a_running_sweep_shows_its_state_so_far(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path, [{"seed": 1}, {"seed": 2}])
    run(store, 1, "alpha", 0, Cause.COMPLETED)
    run(store, 2, "alpha", 1, None)
    now = time.time() + 60
    model = report(store, now=now)
    assert model.sweep.running and model.sweep.finished is None
    assert model.window == (model.sweep.created, now)
    assert model.sweep.counts["running"] == 1 and model.sweep.counts["completed"] == 1
    assert model.sweep.duration == pytest.approx(now - model.sweep.created)


def test_a_finished_sweep_ends_at_its_finish_time(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path, [{"seed": 1}])
    run(store, 1, "alpha", 0, Cause.TASK_FAILED)
    store.set_sweep_state("s1", SweepState.FAILED, abort_reason="1 task(s) failed")
    model = report(store, now=time.time() + 3600)
    sweep = store.sweep("s1")
    assert not model.sweep.running and model.sweep.finished == sweep.finished
    assert model.window[1] == sweep.finished
    assert model.sweep.message == "1 task(s) failed"
    assert model.sweep.resume_command == "hsm resume s1"
    assert model.sweep.retry_command == "hsm resume s1 --retry-failed"
    assert model.sweep.spec_text.startswith("script: train.py")
    assert model.sweep.causes == {"task_failed": 1} == store.cause_counts("s1")
    assert model.sweep.counts == {k.value: v for k, v in store.task_counts("s1").items()}


# -- failures -------------------------------------------------------------------------------
def test_failures_are_grouped_by_cause_and_normalised_log_tail(tmp_path: Path) -> None:
    store, sweep_dir = make_store(tmp_path, [{"seed": i} for i in range(1, 7)])
    logs = {
        1: 'loading data\nTraceback (most recent call last):\n  File "train.py", line 12\n'
        "ValueError: loss is nan at step 1200 (lr=0.31)\n",
        2: 'other output 17\nTraceback (most recent call last):\n  File "train.py", line 12\n'
        "ValueError: loss is nan at step 3400 (lr=0.77)\n",
        3: "Traceback (most recent call last):\n  File \"train.py\", line 40\nKeyError: 'x'\n",
        4: 'Traceback (most recent call last):\n  File "train.py", line 12\n'
        "ValueError: loss is nan at step 99 (lr=0.1)\n",
        6: "all good\n",
    }
    for number, text in logs.items():
        (task_dir(sweep_dir, number) / "stderr.log").write_text(text)
    for number in (1, 2, 3):
        run(store, number, "alpha", 0, Cause.TASK_FAILED)
    run(store, 4, "beta", 0, Cause.DISK_KILL)
    run(store, 5, "beta", 0, Cause.TASK_FAILED)  # no stderr.log at all
    run(store, 6, "beta", 0, Cause.COMPLETED)
    model = report(store)

    groups = [(g.cause, g.count, g.tasks, g.sources) for g in model.failures]
    assert groups == [
        ("task_failed", 2, [1, 2], ["alpha"]),
        ("task_failed", 1, [3], ["alpha"]),
        ("disk_kill", 1, [4], ["beta"]),
        ("task_failed", 1, [5], ["beta"]),
    ]
    first = model.failures[0]
    assert first.tail is not None and first.tail.endswith("at step 1200 (lr=0.31)")
    assert model.failures[3].tail is None and model.failures[3].key == ""
    # Tails are kept for tasks that did not complete, each distinct text once.
    by_number = {t.number: t for t in model.tasks}
    assert by_number[6].log is None
    assert model.logs[by_number[1].log or 0].endswith("(lr=0.31)")
    assert len(model.logs) == 4


def test_normalise_tail_keeps_line_numbers_and_drops_what_varies() -> None:
    a = (
        "2024-05-01 12:00:03 error in /runs/s1/tasks/task_0007/out at 0x7f3a2b\n"
        '  File "train.py", line 12, in main\nRuntimeError: CUDA out of memory. Tried to '
        "allocate 2.00 GiB (id 1b4e28ba-2fa1-11d2-883f-0016d3cca427)"
    )
    b = (
        "2024-05-02 01:09:13 error in /runs/s1/tasks/task_0123/out at 0x55aa\n"
        '  File "train.py", line 12, in main\nRuntimeError: CUDA out of memory. Tried to '
        "allocate 3.50 GiB (id 00000000-2fa1-11d2-883f-0016d3cca427)"
    )
    c = a.replace("line 12", "line 13")
    assert normalise_tail(a) == normalise_tail(b)
    assert normalise_tail(a) != normalise_tail(c)
    assert "conv2d" in normalise_tail("error in conv2d layer 3")


def test_failure_key_is_the_last_traceback_or_the_last_lines() -> None:
    traceback = "Traceback (most recent call last):\n  File \"t.py\", line 3\nKeyError: 'a'"
    assert failure_key(f"step 1 ok\n{traceback}") == failure_key(f"other words\n{traceback}")
    assert failure_key(f"{traceback}\nretrying\n{traceback}").count("Traceback") == 1
    plain = "\n".join(f"progress line {w}" for w in "abcdefg") + "\nfatal: out of disk"
    assert failure_key(plain).splitlines() == [
        "progress line d",
        "progress line e",
        "progress line f",
        "progress line g",
        "fatal: out of disk",
    ]


def test_read_tail_keeps_the_last_lines_of_progress_bars_and_drops_colours(tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    lines = [f"line {i}" for i in range(100)]
    log.write_text(
        "\n".join(lines) + "\n 10%|#\r 50%|####\r100%|########\n\x1b[31mError: boom\x1b[0m\n\n"
    )
    tail = read_tail(log, lines=3)
    assert tail == "line 99\n100%|########\nError: boom"
    huge = tmp_path / "huge.log"
    huge.write_bytes(b"x" * 100_000 + b"\n\xff\xfe last line\n")
    tail = read_tail(huge, chars=50)
    assert tail is not None and tail.endswith("last line") and len(tail) <= 50
    assert read_tail(tmp_path / "missing.log") is None
    (tmp_path / "empty.log").write_text("\n\n")
    assert read_tail(tmp_path / "empty.log") is None


# -- sources --------------------------------------------------------------------------------
def test_per_source_stats_match_hsm_status(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path, [{"seed": i} for i in range(1, 6)])
    run(store, 1, "alpha", 0, Cause.COMPLETED)
    run(store, 2, "alpha", 0, Cause.TASK_FAILED)
    run(store, 3, "beta", 0, Cause.LOST, retry=True)
    run(store, 3, "alpha", 1, Cause.COMPLETED)
    run(store, 4, "beta", 0, Cause.DISK_KILL)
    run(store, 5, "beta", 1, None)
    store.set_source_enabled("beta", False, reason="disk full", sweep_id="s1")
    model = report(store)
    stats = {s.name: s for s in model.sources}
    attempts = store.attempts("s1")

    alpha, beta = stats["alpha"], stats["beta"]
    assert (alpha.submitted, alpha.completed, alpha.running) == (3, 2, 0)
    assert alpha.failed_by_cause == {"task_failed": 1}
    assert (beta.submitted, beta.completed, beta.running) == (3, 0, 1)
    assert beta.failed_by_cause == {"disk_kill": 1, "lost": 1}
    assert (alpha.enabled, beta.enabled, beta.disabled_reason) == (True, False, "disk full")
    mine = [a for a in attempts if a.source == "alpha"]
    assert alpha.first_dispatch == min(a.started for a in mine)
    assert alpha.last_result == max(a.finished or 0 for a in mine)
    assert alpha.span == pytest.approx(alpha.last_result - alpha.first_dispatch)
    # "failed" and the failure rate are those that hsm status reports.
    for s in summarize(store, "s1").sources:
        assert (stats[s.name].failed, stats[s.name].failure_rate) == (
            s.failed,
            round(s.failure_rate, 4),
        )


def test_a_source_with_no_attempts_has_empty_stats(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path, [{"seed": 1}])
    model = report(store)
    assert [s.name for s in model.sources] == ["alpha", "beta"]
    assert model.lanes == [] and model.bars == []
    assert all(s.first_dispatch is None and s.span is None for s in model.sources)


# -- health and events ----------------------------------------------------------------------
def test_health_series_levels_and_source_events(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path, [{"seed": 1}])
    health(store, "alpha", 9 * GB)
    health(store, "alpha", 2 * GB, total=40 * GB)
    health(store, "alpha", 0, reachable=False)
    health(store, "gamma", 1 * GB)  # not a source of this sweep
    store.set_source_enabled(
        "alpha", False, reason="3 consecutive health check failures", sweep_id="s1"
    )
    store.set_source_enabled("alpha", True, reason="enabled by hsm distributed enable")
    store.set_source_enabled("gamma", False, reason="not ours")
    config = HealthConfig(
        disk_warning_free=ByteSize(3 * GB),
        disk_warning_percent=10,
        disk_critical_free=ByteSize(1 * GB),
        disk_critical_percent=1,
    )
    model = build_report(store, "s1", health=config)

    assert [h.source for h in model.health] == ["alpha", "beta"]
    alpha, beta = model.health
    assert alpha.free_bytes == [9 * GB, 2 * GB, None]
    assert alpha.reachable == [True, True, False]
    assert alpha.samples == 3 and beta.samples == 0 and beta.time == []
    # The levels use the latest disk size: 10 % of 40 GB beats 3 GB; 1 GB beats 1 %.
    assert (alpha.warning_bytes, alpha.critical_bytes) == (4 * GB, 1 * GB)
    assert model.levels.disk_warning_free == 3 * GB and model.levels.max_load_per_core == 2.0
    assert [(e.source, e.kind, e.message) for e in model.events] == [
        ("alpha", "disabled", "3 consecutive health check failures"),
        ("alpha", "enabled", "enabled by hsm distributed enable"),
    ]


def test_events_after_a_finished_sweep_are_left_out_unless_it_recorded_them(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path, [{"seed": 1}])
    run(store, 1, "alpha", 0, Cause.COMPLETED)
    store.set_sweep_state("s1", SweepState.COMPLETED)
    time.sleep(0.01)
    store.set_source_enabled("alpha", False, reason="later, by hand")
    store.set_source_enabled("beta", False, reason="recorded by the sweep", sweep_id="s1")
    health(store, "alpha", 5 * GB)
    model = report(store)
    assert [e.message for e in model.events] == ["recorded by the sweep"]
    assert model.health[0].time == []


def test_long_health_series_are_thinned_keeping_the_lowest_disk() -> None:
    rows = [
        HealthRow(
            float(i),
            "a",
            True,
            "/",
            (10 - (i % 10)) * GB,
            20 * GB,
            1.0,
            2,
            50.0,
            "healthy",
            "healthy",
            None,
        )
        for i in range(5000)
    ]
    rows[2345] = HealthRow(
        2345.0, "a", True, "/", 1, 20 * GB, 1.0, 2, 50.0, "critical", "unhealthy", None
    )
    kept = thin(rows, 100)
    assert len(kept) == 100
    assert [r.time for r in kept] == sorted(r.time for r in kept)
    assert any(r.free_bytes == 1 for r in kept)
    assert all(r.free_bytes == GB for r in kept if r.free_bytes != 1)


# -- metrics --------------------------------------------------------------------------------
def test_metrics_table_of_parameters_against_metrics_json(tmp_path: Path) -> None:
    params = [{"seed": s, "lr": lr, "model": "small"} for s in (1, 2) for lr in (0.1, 0.01)]
    store, sweep_dir = make_store(tmp_path, params)
    metrics = {
        1: {"loss": 0.5, "eval": {"acc": 0.9, "f1": 0.8}, "curve": [1, 2]},
        2: {"loss": float("nan"), "eval": {"acc": 0.7}},
        3: {"loss": 0.25, "note": "best"},
    }
    for number, values in metrics.items():
        (task_dir(sweep_dir, number) / "metrics.json").write_text(json.dumps(values))
    (task_dir(sweep_dir, 4) / "metrics.json").write_text("{not json")
    for number in (1, 2, 3, 4):
        run(store, number, "alpha", 0, Cause.COMPLETED)
    model = report(store)

    table = model.metrics
    assert table is not None
    assert table.varying == ["seed", "lr"] and table.params == ["seed", "lr", "model"]
    assert table.metrics == ["loss", "eval.acc", "eval.f1", "note"]
    assert [r["task"] for r in table.rows] == [1, 2, 3]
    assert table.rows[0]["metrics"] == {"loss": 0.5, "eval.acc": 0.9, "eval.f1": 0.8}
    assert table.rows[1]["metrics"]["loss"] == "nan"
    json.dumps(model.to_json(), allow_nan=False)  # strict JSON


def test_no_metrics_json_means_no_metrics_table(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path, [{"seed": 1}])
    run(store, 1, "alpha", 0, Cause.COMPLETED)
    assert report(store).metrics is None


def test_read_metrics_rejects_what_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_text("[1, 2]")
    assert read_metrics(path) is None
    path.write_text('{"a": {"b": {"c": Infinity}}, "d": true, "e": null}')
    assert read_metrics(path) == {"a.b.c": "inf", "d": True, "e": None}


# -- the page -------------------------------------------------------------------------------
def embedded(page: str) -> str:
    match = re.search(r'<script type="application/json" id="hsm-data">(.*?)</script>', page, re.S)
    assert match is not None
    return match.group(1)


def test_hostile_values_cannot_break_out_of_the_embedded_json(tmp_path: Path) -> None:
    store, sweep_dir = make_store(tmp_path, [{"name": HOSTILE, "seed": 1}])
    (task_dir(sweep_dir, 1) / "stderr.log").write_text(f"Error: {HOSTILE}\n")
    run(store, 1, "alpha", 0, Cause.TASK_FAILED)
    store.set_source_enabled("alpha", False, reason=HOSTILE, sweep_id="s1")
    model = report(store)
    page = render_html(model)

    data = embedded(page)
    assert "<" not in data and ">" not in data and "&" not in data and "\u2028" not in data
    assert json.loads(data) == json.loads(json.dumps(model.to_json()))
    assert json.loads(data)["tasks"][0]["params"]["name"] == HOSTILE
    # Exactly the two script elements of the template, and nothing after the closing tag.
    assert page.count("<script") == 2 and page.lower().count("</script") == 2
    assert page.rstrip().endswith("</html>")
    # The server-side summary escapes too.
    assert "<b>" not in page.split('<script type="application/json"')[0]


def test_embed_json_round_trips() -> None:
    value = {"a": "</script>", "b": "<!--", "c": "x\u2028y\u2029&", "d": [1.5, None, True]}
    assert json.loads(embed_json(value)) == value
    with pytest.raises(ValueError):
        embed_json({"x": float("nan")})


def test_the_page_allows_only_its_own_inline_style_and_script(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path, [{"seed": 1}])
    page = render_html(report(store))
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert csp is not None and "default-src 'none'" in csp.group(1)
    script = re.findall(r"<script>(.*?)</script>", page, re.S)
    style = re.findall(r"<style>(.*?)</style>", page, re.S)
    assert len(script) == 1 and len(style) == 1
    for text in (script[0], style[0]):
        digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp.group(1)
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page)
    assert "@import" not in page and "url(" not in page
