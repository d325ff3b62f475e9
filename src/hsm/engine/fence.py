"""Fencing of results: only the current attempt's outputs ever reach a task folder, and
only as a whole.

Layout under the local sweep folder::

    tasks/task_NNNN/                      the task's result: its current attempt's folder
    tasks/.incoming/<source>/task_NNNN/   a remote attempt's folder as pulled (staging)
    tasks/.attempts/task_NNNN/<A>/        folders of earlier attempts, A = attempt number

A remote attempt's folder is pulled into staging, its status is checked against the
attempt's identity (attempt number and launch nonce), and only then renamed into place.
An attempt that runs in the task folder itself (this machine) gets the folder to itself:
an earlier attempt's folder is moved to ``.attempts`` before the launch. Every step is a
rename on one file system and can be repeated after a crash.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

from hsm.jobscript import STATUS_FILE, WrapperStatus, read_status

log = logging.getLogger(__name__)

INCOMING = ".incoming"
ATTEMPTS = ".attempts"


def incoming_dir(sweep_dir: str | Path, source: str) -> Path:
    """Where a remote source's task folders are pulled to, before they are checked."""
    return Path(sweep_dir, "tasks", INCOMING, source)


def _final(status: WrapperStatus | None, attempt: int, nonce: str) -> bool:
    return status is not None and status.terminal and status.belongs_to(attempt, nonce)


def verify(folder: Path, attempt: int, nonce: str) -> bool:
    """Whether ``folder`` holds a final status of this attempt."""
    return _final(read_status(folder), attempt, nonce)


def set_aside(final: Path) -> None:
    """Move an earlier attempt's folder out of the way (to ``.attempts``), if there is one.
    A folder with no status of any attempt (nothing ran there) is removed."""
    if not final.exists():
        return
    status = read_status(final)
    if status is None and not (final / STATUS_FILE).exists():
        shutil.rmtree(final, ignore_errors=True)
        return
    label = str(status.attempt) if status is not None else "unknown"
    parent = final.parent / ATTEMPTS / final.name
    parent.mkdir(parents=True, exist_ok=True)
    target = parent / label
    n = 1
    while target.exists():
        n += 1
        target = parent / f"{label}.{n}"
    os.rename(final, target)


def accept(staged: Path, final: Path, attempt: int, nonce: str) -> bool:
    """Put a pulled attempt folder in place, if it is this attempt's. False (and nothing
    moved) when the staged folder holds another attempt's status, or none."""
    if not verify(staged, attempt, nonce):
        return verify(final, attempt, nonce)  # True: already in place (repeat after a crash)
    if not verify(final, attempt, nonce):
        set_aside(final)
    else:
        shutil.rmtree(final)  # the same attempt, pulled again: the newer copy wins
    final.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staged, final)
    return True


def clear_staging(staged: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(staged)
