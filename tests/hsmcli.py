"""Run the real ``hsm`` command in a subprocess, and small helpers around it.

Shared by tests/cli and tests/integration. ``hsm`` is started as
``python -m hsm.cli`` with the interpreter running the tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

HSM = [sys.executable, "-m", "hsm.cli"]
T = TypeVar("T")


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def hsm_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["COLUMNS"] = "200"
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def hsm(
    *args: str | Path, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> Result:
    """Run ``hsm ARGS`` to its end."""
    proc = subprocess.run(
        [*HSM, *map(str, args)],
        cwd=cwd,
        env=hsm_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@contextmanager
def hsm_background(
    *args: str | Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
) -> Iterator[subprocess.Popen[str]]:
    """Start ``hsm ARGS`` and yield the process; it is killed at the end if still running.

    Its output goes to files in ``cwd/.out`` (read them with :func:`outputs`).
    """
    out_dir = cwd / ".out"
    out_dir.mkdir(exist_ok=True)
    with (out_dir / "stdout").open("w") as out, (out_dir / "stderr").open("w") as err:
        proc = subprocess.Popen(
            [*HSM, *map(str, args)],
            cwd=cwd,
            env=hsm_env(env),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()


def outputs(cwd: Path) -> tuple[str, str]:
    out_dir = cwd / ".out"
    return (out_dir / "stdout").read_text(), (out_dir / "stderr").read_text()


def wait_for(
    predicate: Callable[[], T | None],
    *,
    timeout: float = 20.0,
    what: str = "",
    interval: float = 0.02,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s, with
    what ``on_timeout`` says about the state then."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\n{on_timeout()}" if on_timeout is not None else ""
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what or predicate}{detail}"
            )
        time.sleep(interval)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file under ``root`` with its content (None for folders): to prove nothing changed.

    The WAL side files of SQLite are left out: opening a database for reading may create
    them without changing any data.
    """
    out: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if rel.endswith(("-wal", "-shm")) or rel.startswith(".out"):
            continue
        out[rel] = None if path.is_dir() else path.read_bytes()
    return out


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real small disk: a tmpfs of ``size`` (e.g. ``"8m"``) mounted on ``path``, unmounted
    at the end. It needs root; without it the test is skipped (a failure in CI)."""
    if os.geteuid() != 0:
        import pytest

        pytest.skip("needs root: mounts a tmpfs")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)


def pid_alive(pid: int) -> bool:
    """A live (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


# A project config for tests: small disk-guard thresholds (tests run on whatever disk the
# machine has) and a health classification that does not hold tasks back on a busy machine.
TEST_CONFIG = """\
local:
  max_parallel_jobs: 2
disk:
  project_min_free: 1MB
  task_min_free: 1MB
  warn_below: 1MB
  kill_below: 1MB
health:
  disk_critical_free: 0
  disk_critical_percent: 0
  disk_warning_free: 0
  disk_warning_percent: 0
  max_load_per_core: 1000
distributed:
  max_retries: 0
"""

# The task of most tests: records its argv and environment in its task folder; fails
# with exit 3 for a=2 while the file `broken` exists in the project; with hold=1, waits
# until the file `release` exists in the project (at most 60 s); then sleeps `sleep`
# seconds (a parameter), with a grandchild process when the environment has GRANDCHILD.
TASK_SH = r"""
set -u
dir="$HSM_TASK_DIR"
printf '%s\n' "$@" > "$dir/args.txt"
env | grep -E '^(HSM_|TMPDIR|TMP|TEMP|CUDA_|WANDB_)' | sort > "$dir/env.txt"
echo "start $(date +%s.%N)" >> "$dir/marker"
sleep_for=0
for arg in "$@"; do
    case "$arg" in
        a=2) if [ -e broken ]; then echo "task a=2 is broken" >&2; exit 3; fi ;;
        sleep=*) sleep_for="${arg#sleep=}" ;;
        hold=1) for _ in $(seq 1200); do [ -e release ] && break; sleep 0.05; done ;;
    esac
done
if [ -n "${GRANDCHILD:-}" ]; then
    sleep 60 &
    echo $! > "$dir/grandchild.pid"
fi
sleep "$sleep_for"
echo "done $(date +%s.%N)" >> "$dir/marker"
"""


def make_project(root: Path, *, config: str | None = TEST_CONFIG, sweep: str | None = None) -> Path:
    """A project folder with hsm_config.yaml (unless ``config`` is None), task.sh and,
    if given, sweeps/sweep.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    if config is not None:
        write(root / "hsm_config.yaml", config)
    write(root / "task.sh", TASK_SH)
    if sweep is not None:
        write(root / "sweeps" / "sweep.yaml", sweep)
    return root
