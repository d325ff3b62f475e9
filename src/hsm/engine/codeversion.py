"""Which code a sweep runs: recorded in the state when the sweep starts.

A project inside a git repository is described by its commit and whether its files differ
from it (``dirty``: changes to tracked files, or untracked files that are not ignored, in
the project folder; hsm's own state and output folders do not count). Any other project is
described by a hash of its files: their paths and contents (files above
:data:`CONTENT_LIMIT` by size and modification time, so that a big data file costs
nothing), leaving out what the code push leaves out (``.git/``, ``__pycache__/``, ``*.pyc``,
hsm's folders).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hsm.sources.process import run_local_sync

log = logging.getLogger(__name__)

CONTENT_LIMIT = 16 * 1024 * 1024
_SKIP_DIRS = {".git", "__pycache__", ".hsm"}
_GIT_TIMEOUT = 30.0


def _git(root: Path, *args: str) -> str | None:
    try:
        result = run_local_sync(["git", "-C", str(root), *args], timeout=_GIT_TIMEOUT)
    except (OSError, TimeoutError):
        return None
    return result.stdout if result.returncode == 0 else None


def _inside(path: Path, root: Path) -> str | None:
    """``path`` relative to ``root``, when it is below it."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def content_hash(root: Path, skip: Iterable[Path] = ()) -> str:
    """A SHA-256 over the project's files (see the module docstring)."""
    skipped = {p.resolve() for p in skip}
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(
            d for d in dirs if d not in _SKIP_DIRS and (here / d).resolve() not in skipped
        )
        for name in sorted(files):
            if name.endswith(".pyc"):
                continue
            path = here / name
            try:
                info = path.lstat()
                rel = path.relative_to(root).as_posix()
                digest.update(rel.encode("utf-8", "surrogateescape") + b"\0")
                if path.is_symlink():
                    digest.update(b"L" + os.readlink(path).encode("utf-8", "surrogateescape"))
                elif info.st_size > CONTENT_LIMIT:
                    digest.update(f"S{info.st_size}:{info.st_mtime_ns}".encode())
                else:
                    digest.update(b"F" + hashlib.sha256(path.read_bytes()).digest())
            except OSError:
                continue
            digest.update(b"\0")
    return digest.hexdigest()


def code_version(root: Path, skip: Iterable[Path] = ()) -> dict[str, Any]:
    """``{"git": COMMIT, "dirty": BOOL}`` in a git repository, else ``{"hash": SHA256}``.

    ``skip`` are folders that do not count (hsm's state and output folders).
    """
    skip = list(skip)
    commit = _git(root, "rev-parse", "--verify", "HEAD")
    if commit is not None and commit.strip():
        excludes = [f":(exclude){rel}" for p in skip if (rel := _inside(p, root))]
        status = _git(root, "status", "--porcelain", "--", ".", *excludes)
        return {"git": commit.strip(), "dirty": status is None or bool(status.strip())}
    return {"hash": content_hash(root, skip)}


def describe(version: dict[str, Any] | None) -> str:
    """One line for people: ``git 1a2b3c4d5e6f (dirty)``, ``content 9f8e7d6c5b4a``."""
    if not version:
        return "not recorded"
    if "git" in version:
        return f"git {str(version['git'])[:12]}" + (" (dirty)" if version.get("dirty") else "")
    return f"content {str(version.get('hash', ''))[:12]}"


def warn_if_changed(
    recorded: dict[str, Any] | None, root: Path, skip: Iterable[Path], sweep_id: str
) -> bool:
    """On resume: warn when the project's code is no longer the one the sweep started with.
    Returns whether it changed (``False`` when nothing was recorded)."""
    if not recorded:
        return False
    now = code_version(root, skip)
    if now == recorded:
        return False
    log.warning(
        "the code changed since sweep %s started (%s, now %s): tasks on this machine, "
        "and on hosts that get their first copy of the sweep's code now, run the "
        "current code; hosts that have the sweep's snapshot keep it",
        sweep_id,
        describe(recorded),
        describe(now),
    )
    return True
