"""What every test shares: run the real ``hsm`` command in a subprocess, wait on state, write
projects and read back what a sweep left (through the Store, never raw SQL).

Shared by tests/cli and tests/integration (ssh_support.py and cluster_support.py there build
on it). ``hsm`` is started as ``python -m hsm.cli`` with the interpreter running the tests.
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

from hsm.state import AttemptRow, Store, TaskRow

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
    """The environment of ``hsm`` in a test: a wide terminal, unbuffered output and no
    ssh-agent of the caller (a test that wants one passes it in ``extra``)."""
    env = dict(os.environ)
    env["COLUMNS"] = "200"
    env["PYTHONUNBUFFERED"] = "1"
    for key in ("SSH_AUTH_SOCK", "SSH_AGENT_PID"):
        env.pop(key, None)
    if extra:
        env.update(extra)
    return env


def hsm(
    *args: str | Path, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 120.0
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


class Background:
    """``hsm ARGS`` started without waiting, its output in files under ``cwd/.out`` (named
    ``stem``.stdout and ``stem``.stderr, a fresh stem unless given); killed at the end of a
    ``with`` block if still running. ``new_session`` starts it in a session of its own."""

    def __init__(
        self,
        *args: str | Path,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        new_session: bool = True,
        stem: str | None = None,
    ) -> None:
        out_dir = cwd / ".out"
        out_dir.mkdir(exist_ok=True)
        stem = f"bg-{time.monotonic_ns()}." if stem is None else stem
        self.out = out_dir / f"{stem}stdout"
        self.err = out_dir / f"{stem}stderr"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                [*HSM, *map(str, args)],
                cwd=cwd,
                env=hsm_env(env),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                text=True,
                start_new_session=new_session,
            )

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def wait(self, timeout: float = 120.0) -> Result:
        code = self.proc.wait(timeout=timeout)
        return Result(code, self.out.read_text(), self.err.read_text())

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


@contextmanager
def hsm_background(
    *args: str | Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
) -> Iterator[subprocess.Popen[str]]:
    """Start ``hsm ARGS`` (in the tests' session) and yield the process; it is killed at the
    end if still running. Its output goes to ``cwd/.out`` (read it with :func:`outputs`)."""
    with Background(*args, cwd=cwd, env=env, new_session=False, stem="") as background:
        yield background.proc


def outputs(cwd: Path) -> tuple[str, str]:
    """The output of the last :func:`hsm_background` in ``cwd``."""
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


def merged(base: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """``base`` with ``overrides`` on top: a mapping under a key that holds a mapping updates
    it (one level deep); anything else replaces it."""
    out = {key: dict(value) if isinstance(value, Mapping) else value for key, value in base.items()}
    for key, value in (overrides or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key].update(value)
        else:
            out[key] = value
    return out


def sweep_log(root: Path, sweep_id: str) -> str:
    return (root / "runs" / sweep_id / "hsm.log").read_text()


def status_json(root: Path, sweep_id: str | None = None) -> dict[str, Any]:
    """What ``hsm status --json`` says of the sweep (the latest one by default)."""
    result = hsm("status", "--json", *([sweep_id] if sweep_id else []), cwd=root)
    assert result.returncode == 0, result
    data: dict[str, Any] = json.loads(result.stdout)
    return data


# What a sweep left in the project's state, read through the Store.


@contextmanager
def open_store(root: Path) -> Iterator[Store]:
    """The project's state database, closed at the end."""
    store = Store.open(root / ".hsm" / "hsm.db", create=False)
    try:
        yield store
    finally:
        store.close()


def latest_sweep(root: Path) -> str | None:
    """The id of the project's newest sweep (None before the first one is written)."""
    if not (root / ".hsm" / "hsm.db").exists():
        return None
    with open_store(root) as store:
        sweep = store.latest_sweep()
    return sweep.id if sweep else None


def tasks(root: Path, sweep_id: str) -> list[TaskRow]:
    with open_store(root) as store:
        return store.tasks(sweep_id)


def attempts(root: Path, sweep_id: str) -> list[AttemptRow]:
    """Every attempt of the sweep, in the order they began."""
    with open_store(root) as store:
        return store.attempts(sweep_id)
