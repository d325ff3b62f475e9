"""The console wording of a failed task and the level of the wrapper's event lines."""

from __future__ import annotations

import logging
from pathlib import Path

from hsm.engine.messages import event_level, failed_task_message, stderr_tail


def test_a_failed_task_shows_the_end_of_its_stderr_and_where_it_is(tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    log.write_text("".join(f"line {i}\n" for i in range(1, 9)) + "\n\n", encoding="utf-8")
    message = failed_task_message(3, "local", "task_failed", 127, log)
    head, *rest = message.splitlines()
    assert head == f"task 3 failed on local: task_failed (exit code 127); the end of {log}:"
    assert rest == [f"    line {i}" for i in range(4, 9)]


def test_no_exit_code_is_shown_when_there_is_none(tmp_path: Path) -> None:
    assert failed_task_message(1, "h1", "launch_failed", None, None) == (
        "task 1 failed on h1: launch_failed"
    )
    missing = tmp_path / "none.log"
    assert "None" not in failed_task_message(1, "h1", "host_lost", None, missing)
    empty = tmp_path / "empty.log"
    empty.write_text("")
    assert failed_task_message(2, "local", "task_failed", 1, empty).endswith(f"{empty} is empty")


def test_the_tail_reads_only_the_end_of_a_large_log(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    log.write_bytes(b"x" * 1_000_000 + b"\nlast \xff line\n")
    assert stderr_tail(log)[-1] == "last \ufffd line"


def test_the_disk_kill_line_is_an_error() -> None:
    assert event_level("CRITICAL: Disk space exhausted: 0.1GB remaining") == logging.ERROR
    assert event_level("WARNING: Low disk space detected: 0.4GB remaining") == logging.WARNING
