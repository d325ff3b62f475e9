"""Console wording of what happened to a task: a failed task's line, an event line's level."""

from __future__ import annotations

import logging
from pathlib import Path

TAIL_LINES = 5
TAIL_BYTES = 64 * 1024


def stderr_tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    """The last ``lines`` non-empty lines of a log file (read from its end), or none."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            data = f.read()
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace")
    return [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]


def failed_task_message(
    number: int, source: str, cause: str, exit_code: int | None, stderr_log: Path | None
) -> str:
    """``task 3 failed on local: task_failed (exit code 127)``, then, indented, the last lines
    of its stderr.log and where that file is. No exit code is shown when there is none."""
    code = f" (exit code {exit_code})" if exit_code is not None else ""
    head = f"task {number} failed on {source}: {cause}{code}"
    if stderr_log is None or not stderr_log.is_file():
        return head
    tail = stderr_tail(stderr_log)
    if not tail:
        return f"{head}; {stderr_log} is empty"
    shown = "\n".join(f"    {line}" for line in tail)
    return f"{head}; the end of {stderr_log}:\n{shown}"


def event_level(line: str) -> int:
    """The log level of a wrapper event line: ``CRITICAL:`` lines (the disk-kill line) are
    errors, the others warnings."""
    return logging.ERROR if line.startswith(("CRITICAL:", "ERROR:")) else logging.WARNING
