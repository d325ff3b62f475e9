import sqlite3
from pathlib import Path

import pytest

from hsm.errors import StateError, UnknownSweepError
from hsm.state import Store
from hsm.states import AttemptState, Cause, SourceEventKind, SweepState, TaskStatus


def make(tmp_path: Path, n: int = 3) -> Store:
    store = Store.open(tmp_path / "hsm.db")
    store.create_sweep(
        sweep_id="s1",
        spec_path="sweep.yaml",
        spec={"script": "t.py"},
        sweep_dir=str(tmp_path / "s1"),
        project_root=str(tmp_path),
        sources=["local"],
        parallel=2,
        command_line="hsm run",
        params=({"seed": i} for i in range(n)),
    )
    return store


def test_create_and_count(tmp_path: Path) -> None:
    store = make(tmp_path)
    assert store.task_counts("s1")[TaskStatus.PENDING] == 3
    assert [t.params for t in store.tasks("s1")] == [{"seed": 0}, {"seed": 1}, {"seed": 2}]
    assert store.sweep("s1").state is SweepState.RUNNING
    assert store.path.exists()
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_duplicate_sweep_id_is_refused(tmp_path: Path) -> None:
    store = make(tmp_path)
    with pytest.raises(StateError):
        make(tmp_path)
    assert store.task_counts("s1")[TaskStatus.PENDING] == 3


def test_attempt_lifecycle_and_retry(tmp_path: Path) -> None:
    store = make(tmp_path)
    a = store.begin_attempt("s1", 1, source="local", slot=0)
    assert a.attempt == 1 and store.task("s1", 1).status is TaskStatus.RUNNING
    store.attempt_launched(a.id, {"task_dir": "x"}, "host")
    store.finish_attempt(
        a,
        state=AttemptState.LOST,
        cause=Cause.LOST,
        exit_code=None,
        task_status=TaskStatus.PENDING,
        counted=True,
    )
    assert store.task("s1", 1).status is TaskStatus.PENDING
    b = store.begin_attempt("s1", 1, source="other", slot=0)
    assert b.attempt == 2
    store.finish_attempt(
        b,
        state=AttemptState.COMPLETED,
        cause=Cause.COMPLETED,
        exit_code=0,
        task_status=TaskStatus.COMPLETED,
    )
    t = store.task("s1", 1)
    assert (t.status, t.attempts, t.source, t.exit_code) == (TaskStatus.COMPLETED, 2, "other", 0)
    assert store.failed_placements("s1") == {1: {"local"}}
    counts = store.source_counts("local", sweep_id="s1")
    assert (counts.submitted, counts.failed, counts.completed) == (1, 1, 0)


def test_stale_attempt_cannot_overwrite_newer_task_state(tmp_path: Path) -> None:
    store = make(tmp_path)
    a = store.begin_attempt("s1", 1, source="local", slot=0)
    store.finish_attempt(
        a, state=AttemptState.LOST, cause=Cause.LOST, exit_code=None, task_status=TaskStatus.PENDING
    )
    b = store.begin_attempt("s1", 1, source="local", slot=0)
    # A late report about attempt 1 must not touch the task, which is on attempt 2 now.
    store.finish_attempt(
        a,
        state=AttemptState.FAILED,
        cause=Cause.TASK_FAILED,
        exit_code=1,
        task_status=TaskStatus.FAILED,
    )
    assert store.task("s1", 1).status is TaskStatus.RUNNING
    assert b.attempt == 2


def test_an_attempt_that_never_started_stays_on_record(tmp_path: Path) -> None:
    store = make(tmp_path)
    a = store.begin_attempt("s1", 2, source="local", slot=1)
    store.finish_attempt(
        a,
        state=AttemptState.NOT_STARTED,
        cause=None,
        exit_code=None,
        task_status=TaskStatus.PENDING,
        counted=False,
    )
    t = store.task("s1", 2)
    assert (t.status, t.attempts) == (TaskStatus.PENDING, 1)
    assert [r.state for r in store.attempts("s1")] == [AttemptState.NOT_STARTED]
    assert store.tries("s1", 2) == 0  # it used no try
    b = store.begin_attempt("s1", 2, source="local", slot=1)
    assert b.attempt == 2 and b.nonce != a.nonce  # never the same identity twice
    assert store.source_counts("local", sweep_id="s1").submitted == 1  # only the real one


def test_every_attempt_gets_its_own_nonce(tmp_path: Path) -> None:
    store = make(tmp_path)
    rows = [store.begin_attempt("s1", n, source="local", slot=0) for n in (1, 2, 3)]
    nonces = {r.nonce for r in rows}
    assert len(nonces) == 3 and all(len(n) == 16 for n in nonces)
    assert [r.nonce for r in store.attempts("s1")] == [r.nonce for r in rows]


def test_revive_records_the_lost_attempt_as_running_again(tmp_path: Path) -> None:
    store = make(tmp_path)
    a = store.begin_attempt("s1", 1, source="h1", slot=0)
    store.attempt_launched(a.id, {"task_dir": "x"}, "host1")
    store.finish_attempt(
        a,
        state=AttemptState.LOST,
        cause=Cause.LOST,
        exit_code=None,
        task_status=TaskStatus.PENDING,
        counted=False,
    )
    lost = store.task_attempts("s1", 1)[0]
    b = store.revive_attempt(lost, slot=1)
    assert b is not None
    assert (b.id, b.attempt, b.state, b.slot, b.nonce) == (
        a.id,
        1,
        AttemptState.RUNNING,
        1,
        a.nonce,
    )
    [row] = store.task_attempts("s1", 1)  # the same row, running again
    assert (row.id, row.state, row.handle, row.cause) == (
        a.id,
        AttemptState.RUNNING,
        {"task_dir": "x"},
        None,
    )
    t = store.task("s1", 1)
    assert (t.status, t.attempts, t.source) == (TaskStatus.RUNNING, 1, "h1")


def test_a_superseded_attempt_cannot_be_revived(tmp_path: Path) -> None:
    store = make(tmp_path)
    a = store.begin_attempt("s1", 1, source="h1", slot=0)
    store.finish_attempt(
        a,
        state=AttemptState.LOST,
        cause=Cause.LOST,
        exit_code=None,
        task_status=TaskStatus.PENDING,
        counted=False,
    )
    b = store.begin_attempt("s1", 1, source="h2", slot=0)
    store.finish_attempt(
        b,
        state=AttemptState.FAILED,
        cause=Cause.DISK_KILL,
        exit_code=None,
        task_status=TaskStatus.PENDING,
        counted=True,
    )
    assert store.revive_attempt(store.task_attempts("s1", 1)[0], slot=0) is None
    store.record_outcome(store.task_attempts("s1", 1)[0], "completed")
    rows = store.task_attempts("s1", 1)
    assert [(r.state, r.outcome) for r in rows] == [
        (AttemptState.LOST, "completed"),
        (AttemptState.FAILED, None),
    ]
    assert store.task("s1", 1).status is TaskStatus.PENDING
    assert store.failed_placements("s1") == {1: {"h1", "h2"}}
    assert store.tries("s1", 1) == 2


def test_failed_sources_of_task_counts_only_the_given_causes(tmp_path: Path) -> None:
    store = make(tmp_path)
    a = store.begin_attempt("s1", 1, source="h1", slot=0)
    store.finish_attempt(
        a,
        state=AttemptState.FAILED,
        cause=Cause.DISK_KILL,
        exit_code=None,
        task_status=TaskStatus.PENDING,
        counted=True,
    )
    b = store.begin_attempt("s1", 1, source="h2", slot=0)
    store.finish_attempt(
        b,
        state=AttemptState.FAILED,
        cause=Cause.TASK_FAILED,
        exit_code=1,
        task_status=TaskStatus.PENDING,
    )
    assert store.failed_sources_of_task("s1", 1, ["task_failed"]) == ["h2"]


def test_task_failures_count_only_once_judged(tmp_path: Path) -> None:
    store = make(tmp_path)
    a = store.begin_attempt("s1", 1, source="h", slot=0)
    store.finish_attempt(
        a,
        state=AttemptState.FAILED,
        cause=Cause.TASK_FAILED,
        exit_code=1,
        task_status=TaskStatus.PENDING,
    )
    counts = store.source_counts("h")
    assert (counts.failed, counts.unjudged, counts.finished) == (0, 1, 0)
    # The task then succeeds elsewhere: the failure was the host's.
    assert (
        store.judge_task_failures("s1", 1, counted=True, causes=["task_failed"], other_than="g")
        == 1
    )
    counts = store.source_counts("h")
    assert (counts.failed, counts.unjudged, counts.finished) == (1, 0, 1)
    assert counts.failure_rate == 1.0


def test_sweep_failure_facts(tmp_path: Path) -> None:
    store = make(tmp_path)
    for number, source in ((1, "a"), (2, "b")):
        a = store.begin_attempt("s1", number, source=source, slot=0)
        store.finish_attempt(
            a,
            state=AttemptState.FAILED,
            cause=Cause.TASK_FAILED,
            exit_code=1,
            task_status=TaskStatus.FAILED,
        )
    assert store.sweep_failure_facts("s1", ["task_failed"]) == (0, 2, 2)
    first = store.first_failed_attempt("s1", ["task_failed"])
    assert first is not None and first.number == 1


def test_unknown_sweep(tmp_path: Path) -> None:
    store = make(tmp_path)
    with pytest.raises(UnknownSweepError, match="s1"):
        store.sweep("nope")


def test_corrupt_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "hsm.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match="cannot use the state database"):
        Store.open(path)


def test_missing_database_is_not_created_when_reading(tmp_path: Path) -> None:
    with pytest.raises(StateError):
        Store.open(tmp_path / "none" / "hsm.db", create=False)
    assert not (tmp_path / "none").exists()


def test_source_enable_disable_events(tmp_path: Path) -> None:
    store = make(tmp_path)
    store.set_source_enabled("h", False, reason="broken")
    assert store.source("h").enabled is False
    assert store.source("h").disabled_reason == "broken"
    store.set_source_enabled("h", True, reason="fixed")
    assert store.source("h").enabled and store.source("h").disabled_reason is None
    assert [e.kind for e in store.events(source="h")] == ["disabled", "enabled"]
    enabled_at = store.last_event_time("h", SourceEventKind.ENABLED)
    assert enabled_at == store.events(source="h")[-1].time
    assert store.last_event_time("other", SourceEventKind.ENABLED) is None


def test_active_attempts_are_the_launching_and_running_ones(tmp_path: Path) -> None:
    store = make(tmp_path)
    launching = store.begin_attempt("s1", 1, source="local", slot=0)
    running = store.begin_attempt("s1", 2, source="local", slot=1)
    store.attempt_launched(running.id, {"task_dir": "x"})
    done = store.begin_attempt("s1", 3, source="local", slot=2)
    store.finish_attempt(
        done,
        state=AttemptState.COMPLETED,
        cause=Cause.COMPLETED,
        exit_code=0,
        task_status=TaskStatus.COMPLETED,
    )
    active = store.attempts("s1", active_only=True)
    assert [(a.id, a.state) for a in active] == [
        (launching.id, AttemptState.LAUNCHING),
        (running.id, AttemptState.RUNNING),
    ]
    assert len(store.attempts("s1")) == 3
    assert store.running_attempts("local") == 2
    assert store.running_attempts("other") == 0
    assert store.source_counts("local").submitted == 3


def test_concurrent_first_opens_migrate_once(tmp_path: Path) -> None:
    import threading

    errors: list[BaseException] = []

    def open_db() -> None:
        try:
            Store.open(tmp_path / "race.db").close()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=open_db) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    conn = sqlite3.connect(tmp_path / "race.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] >= 2


def test_a_version_2_database_gains_the_reruns_table(tmp_path: Path) -> None:
    from hsm.state.schema import MIGRATIONS, _split

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:2]:
        for statement in _split(script):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    store = Store.open(path)
    assert store.reruns("none") == []


def test_a_rerun_puts_back_the_failures_of_its_causes_and_is_recorded(tmp_path: Path) -> None:
    store = make(tmp_path, n=4)
    for number, cause in ((1, Cause.TIMEOUT), (2, Cause.TASK_FAILED), (3, Cause.COMPLETED)):
        a = store.begin_attempt("s1", number, source="local", slot=0)
        done = cause is Cause.COMPLETED
        store.finish_attempt(
            a,
            state=AttemptState.COMPLETED if done else AttemptState.FAILED,
            cause=cause,
            exit_code=0 if done else 1,
            task_status=TaskStatus.COMPLETED if done else TaskStatus.FAILED,
        )
    assert store.failed_causes("s1") == {"timeout": 1, "task_failed": 1}
    count = store.record_rerun(
        "s1",
        retry_failed=True,
        causes=["timeout"],
        resources={"walltime": "04:00:00"},
        sources=["cluster"],
    )
    assert count == 1
    assert [t.status for t in store.tasks("s1")] == [
        TaskStatus.PENDING,
        TaskStatus.FAILED,
        TaskStatus.COMPLETED,
        TaskStatus.PENDING,
    ]
    [rerun] = store.reruns("s1")
    assert (rerun.causes, rerun.resources, rerun.sources, rerun.tasks) == (
        ["timeout"],
        {"walltime": "04:00:00"},
        ["cluster"],
        1,
    )
    # A plain resume changes nothing and records nothing.
    assert (
        store.record_rerun("s1", retry_failed=False, causes=None, resources={}, sources=None) == 0
    )
    assert len(store.reruns("s1")) == 1


def test_the_code_version_is_stored_with_the_sweep(tmp_path: Path) -> None:
    store = make(tmp_path)
    assert store.sweep("s1").code_version is None  # not recorded
    store.create_sweep(
        sweep_id="s2",
        spec_path="sweep.yaml",
        spec={},
        sweep_dir="s2",
        project_root=str(tmp_path),
        sources=["local"],
        parallel=None,
        command_line="",
        params=[{}],
        code_version={"git": "ab", "dirty": True},
    )
    assert store.sweep("s2").code_version == {"git": "ab", "dirty": True}


def test_source_counts_count_the_disk_guard_failures(tmp_path: Path) -> None:
    store = make(tmp_path)
    for number, cause in ((1, Cause.DISK_KILL), (2, Cause.DISK_PRECHECK), (3, Cause.TASK_FAILED)):
        attempt = store.begin_attempt("s1", number, source="local", slot=0)
        store.finish_attempt(
            attempt,
            state=AttemptState.FAILED,
            cause=cause,
            exit_code=1,
            task_status=TaskStatus.FAILED,
        )
    counts = store.source_counts("local")
    assert (counts.submitted, counts.disk_failures, counts.unjudged) == (3, 2, 3)
    assert counts.failed_by_cause == {"disk_kill": 1, "disk_precheck": 1, "task_failed": 1}
