"""Helpers of the SSH integration tests: a project whose hsm_config.yaml points at the test bed,
``hsm`` run as a subprocess, and readers for the state and the per-task markers.

The task script (``TASK``) runs under the hosts' system python. It appends ``start``/``done``
lines to ``/srv/hsm/marks/task_NNNN`` on its host (outside the sweep folders), so a test can
count how often each task really ran, on which host, and how it ended.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from hsm.state import AttemptRow, Store, TaskRow
from tests.hsmcli import HSM, Result
from tests.testbed import Host

REMOTE_ROOT = "/srv/hsm/root"
MARKS = "/srv/hsm/marks"

# Small thresholds for the 64 MB test-bed disks.
SMALL_DISK = {
    "project_min_free": "2MB",
    "task_min_free": "2MB",
    "check_interval": 1,
    "warn_below": "8MB",
    "kill_below": "4MB",
}
SMALL_HEALTH = {
    "disk_critical_free": "3MB",
    "disk_critical_percent": 1,
    "disk_warning_free": "6MB",
    "disk_warning_percent": 2,
}

# key=value arguments: sleep=SECONDS, exit=CODE; a file /srv/hsm/slow_<i> on the host makes
# task i sleep `slow` seconds instead. Writes result.json (argv, environment, host) into
# HSM_TASK_DIR and a line per start and end into /srv/hsm/marks/task_NNNN.
TASK = r"""
import json, os, socket, subprocess, sys, time

args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
number, attempt = int(os.environ["HSM_TASK_NUMBER"]), os.environ["HSM_ATTEMPT"]
os.makedirs("/srv/hsm/marks", exist_ok=True)
def mark(what):
    with open(f"/srv/hsm/marks/task_{number:04d}", "a") as f:
        f.write(f"{what} {attempt} {socket.gethostname()} {os.getpid()}\n")
mark("start")
seconds = float(args.get("sleep", "0"))
if os.path.exists(f"/srv/hsm/slow_{args.get('i')}"):
    seconds = float(args.get("slow", "60"))
if args.get("child"):  # a grandchild in the task's process group
    subprocess.Popen(["sleep", args["child"]])
env = {k: v for k, v in os.environ.items() if k.startswith(("HSM_", "CUDA_", "SETUP_", "TMP"))}
record = {"argv": sys.argv, "env": env, "host": socket.gethostname(), "cwd": os.getcwd()}
with open(os.path.join(os.environ["HSM_TASK_DIR"], "result.json"), "w") as f:
    json.dump(record, f)
print(f"task {number} on {socket.gethostname()}", flush=True)
time.sleep(seconds)
mark("done")
sys.exit(int(args.get("exit", "0")))
"""


def remote(bed_host: Host, /, **overrides: Any) -> dict[str, Any]:
    """A remote entry for a test-bed host (by its ssh_config alias unless overridden)."""
    entry: dict[str, Any] = {
        "host": bed_host.name,
        "remote_root": REMOTE_ROOT,
        "max_parallel_jobs": 2,
    }
    entry.update(overrides)
    return entry


def make_project(
    root: Path,
    hosts: Sequence[Host],
    *,
    n: int = 4,
    sleep: float = 0.2,
    remotes: Mapping[str, Mapping[str, Any]] | None = None,
    config: Mapping[str, Any] | None = None,
    sweep: str | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> Path:
    """A project with hsm_config.yaml (remotes h1.. for ``hosts``), task.py and sweep.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    if remotes is None:
        remotes = {f"h{i + 1}": remote(h) for i, h in enumerate(hosts)}
    data: dict[str, Any] = {
        "disk": dict(SMALL_DISK),
        "health": dict(SMALL_HEALTH),
        "distributed": {
            "include_local": False,
            "ssh_config": str(hosts[0].ssh_config_path),
            "remotes": dict(remotes),
        },
    }
    for key, value in (config or {}).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    (root / "hsm_config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (root / "task.py").write_text(TASK)
    if sweep is None:
        sweep_data = {
            "script": "task.py",
            "sweep": {"grid": {"i": list(range(1, n + 1))}},
            "defaults": {"sleep": sleep, **(defaults or {})},
        }
        sweep = yaml.safe_dump(sweep_data, sort_keys=False, allow_unicode=True)
    (root / "sweep.yaml").write_text(sweep)
    return root


def env(extra: Mapping[str, str] | None = None, *, drop: Iterable[str] = ()) -> dict[str, str]:
    out = dict(os.environ)
    out["COLUMNS"] = "200"
    out["PYTHONUNBUFFERED"] = "1"
    for key in ("SSH_AUTH_SOCK", "SSH_AGENT_PID", *drop):
        out.pop(key, None)
    out.update(extra or {})
    return out


def hsm(
    *args: str | Path, cwd: Path, extra_env: Mapping[str, str] | None = None, timeout: float = 120.0
) -> Result:
    proc = subprocess.run(
        [*HSM, *map(str, args)],
        cwd=cwd,
        env=env(extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


class Background:
    """``hsm`` started in its own session, output to files; killed at the end if needed."""

    def __init__(
        self, *args: str | Path, cwd: Path, extra_env: Mapping[str, str] | None = None
    ) -> None:
        self.out = cwd / f".hsm-bg-{time.monotonic_ns()}.out"
        self.err = self.out.with_suffix(".err")
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                [*HSM, *map(str, args)],
                cwd=cwd,
                env=env(extra_env),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
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
        if self.proc.poll() is None:
            self.kill()


def wait_for(
    predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.05
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def open_store(root: Path) -> Store:
    return Store.open(root / ".hsm" / "hsm.db", create=False)


def latest_sweep(root: Path) -> str | None:
    path = root / ".hsm" / "hsm.db"
    if not path.exists():
        return None
    store = Store.open(path, create=False)
    try:
        sweep = store.latest_sweep()
        return sweep.id if sweep else None
    finally:
        store.close()


def tasks(root: Path, sweep_id: str) -> list[TaskRow]:
    store = open_store(root)
    try:
        return store.tasks(sweep_id)
    finally:
        store.close()


def attempts(root: Path, sweep_id: str) -> list[AttemptRow]:
    store = open_store(root)
    try:
        return store.attempts(sweep_id)
    finally:
        store.close()


def marks(hosts: Sequence[Host]) -> dict[int, list[tuple[str, str, str]]]:
    """task number -> [(start|done, attempt, host name)] over every host."""
    out: dict[int, list[tuple[str, str, str]]] = {}
    for host in hosts:
        folder = host.disk_dir / "marks"
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("task_*")):
            number = int(path.name.split("_")[1])
            for line in path.read_text().splitlines():
                what, attempt, name, _pid = line.split()
                out.setdefault(number, []).append((what, attempt, name))
    return out


def started_on(hosts: Sequence[Host], number: int, host: Host) -> bool:
    return any(w == "start" and h == host.name for w, _, h in marks(hosts).get(number, []))


def remote_path(host: Host, inside: str) -> Path:
    """A path on the host's work disk as seen from here."""
    rel = Path(inside).relative_to(host.work_dir)
    return host.disk_dir / rel


def sweep_id_from(text: str) -> str:
    match = re.search(r"sweep (\d{8}-\d{6}-[0-9a-f]{4})", text)
    assert match, text
    return match.group(1)


def host_processes(host: Host, pattern: str) -> list[str]:
    """Command lines of the host's processes that contain ``pattern``."""
    found = []
    for pid in host.pids():
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if pattern in args:
            found.append(args.strip())
    return found
