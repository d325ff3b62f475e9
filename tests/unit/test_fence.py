"""Fencing of results: only the current attempt's folder ever becomes the task folder."""

from __future__ import annotations

import json
from pathlib import Path

from hsm.engine import fence
from hsm.jobscript import STATUS_FILE, STATUS_SIZE


def folder(
    path: Path, attempt: int, nonce: str, status: str = "completed", result: str = ""
) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    body = json.dumps(
        {
            "version": 2,
            "attempt": attempt,
            "nonce": nonce,
            "status": status,
            "cause": None if status == "running" else "completed",
            "exit_code": None if status == "running" else 0,
            "pid": 1,
            "pgid": 2,
            "host": "h",
            "started": 1.0,
            "finished": None if status == "running" else 2.0,
        }
    )
    (path / STATUS_FILE).write_text(body.ljust(STATUS_SIZE - 1) + "\n")
    (path / "result.json").write_text(result or f"{attempt}:{nonce}")
    return path


def test_accept_puts_the_current_attempt_in_place_and_keeps_the_old_apart(tmp_path: Path) -> None:
    final = folder(tmp_path / "tasks/task_0001", 1, "aa", status="completed")
    staged = folder(fence.incoming_dir(tmp_path, "h2") / "task_0001", 2, "bb")
    assert fence.accept(staged, final, 2, "bb")
    assert (final / "result.json").read_text() == "2:bb"
    assert not staged.exists()
    old = tmp_path / "tasks" / fence.ATTEMPTS / "task_0001" / "1"
    assert (old / "result.json").read_text() == "1:aa"


def test_accept_refuses_another_attempts_folder(tmp_path: Path) -> None:
    final = folder(tmp_path / "tasks/task_0001", 2, "bb")
    staged = folder(fence.incoming_dir(tmp_path, "h4") / "task_0001", 1, "aa")
    assert not fence.accept(staged, final, 1, "aa" + "x")  # not the attempt asked for
    assert not fence.accept(staged, final, 2, "bb" + "0")
    assert (final / "result.json").read_text() == "2:bb"  # untouched


def test_accept_refuses_a_running_status(tmp_path: Path) -> None:
    final = tmp_path / "tasks/task_0001"
    staged = folder(fence.incoming_dir(tmp_path, "h") / "task_0001", 1, "aa", "running")
    assert not fence.accept(staged, final, 1, "aa")
    assert not final.exists()


def test_accept_is_idempotent_after_a_crash(tmp_path: Path) -> None:
    final = tmp_path / "tasks/task_0001"
    staged = folder(fence.incoming_dir(tmp_path, "h") / "task_0001", 1, "aa")
    assert fence.accept(staged, final, 1, "aa")
    # The controller died before recording it: the next one finds it in place.
    assert fence.accept(staged, final, 1, "aa")
    # ... or pulls it again: the newer copy replaces the same attempt's folder.
    folder(staged, 1, "aa", result="again")
    assert fence.accept(staged, final, 1, "aa")
    assert (final / "result.json").read_text() == "again"
    assert not (tmp_path / "tasks" / fence.ATTEMPTS).exists()


def test_set_aside_moves_an_earlier_attempt_and_drops_empty_leftovers(tmp_path: Path) -> None:
    final = folder(tmp_path / "tasks/task_0003", 1, "aa", status="completed")
    fence.set_aside(final)
    assert not final.exists()
    folder(final, 1, "aa")
    fence.set_aside(final)  # the same attempt number again: kept apart, not overwritten
    kept = sorted(p.name for p in (tmp_path / "tasks" / fence.ATTEMPTS / "task_0003").iterdir())
    assert kept == ["1", "1.2"]
    (final / ".hsm").mkdir(parents=True)  # only a folder made for a launch, nothing ran
    fence.set_aside(final)
    assert not final.exists()
    fence.set_aside(final)  # nothing there: nothing to do
