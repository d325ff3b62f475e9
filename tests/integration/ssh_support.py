"""Helpers of the SSH integration tests: a project whose hsm_config.yaml points at the test bed,
and readers for the per-task markers on the hosts (running ``hsm`` and reading the state are
in tests.hsmcli).

The task script (``TASK``) runs under the hosts' system python. It appends ``start``/``done``
lines to ``/srv/hsm/marks/task_NNNN`` on its host (outside the sweep folders), so a test can
count how often each task really ran, on which host, and how it ended.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.hsmcli import merged, write
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
    (root / "hsm_config.yaml").write_text(yaml.safe_dump(merged(data, config), sort_keys=False))
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


# The failsafe tests fill disks and cut links: larger margins than SMALL_DISK, and every host
# checked each second.
FAILSAFE_DISK = {
    "project_min_free": "4MB",
    "task_min_free": "4MB",
    "check_interval": 1,
    "warn_below": "12MB",
    "kill_below": "6MB",
}
FAILSAFE_HEALTH = {
    "disk_critical_free": "8MB",
    "disk_critical_percent": 1,
    "disk_warning_free": "16MB",
    "disk_warning_percent": 2,
}


def bed_project(
    root: Path,
    hosts: Sequence[Host],
    *,
    slots: int = 2,
    distributed: dict[str, Any] | None = None,
    include_local: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """A project (see :func:`make_project`) with one remote per host (named h1, h2, ...)
    working in the host's work folder, the failsafe margins and a health check each second;
    ``distributed`` and ``extra`` go on top."""
    remotes = {
        f"h{i + 1}": remote(h, remote_root=h.work_dir, max_parallel_jobs=slots)
        for i, h in enumerate(hosts)
    }
    config: dict[str, Any] = {
        "disk": FAILSAFE_DISK,
        "health": FAILSAFE_HEALTH,
        **(extra or {}),
    }
    config["distributed"] = {
        "include_local": include_local,
        "health_check_interval": 1,
        **(distributed or {}),
        **config.get("distributed", {}),
    }
    return make_project(root, hosts, remotes=remotes, config=config)


def script_sweep(
    root: Path, script: str, n: int, *, name: str = "sweep.yaml", extra: str = ""
) -> Path:
    """``script`` as task.py, and a sweep file running it for i = 1..n."""
    write(root / "task.py", script)
    return write(
        root / name,
        f"""
        script: task.py
        sweep:
          grid:
            i: [{", ".join(str(i) for i in range(1, n + 1))}]
        {extra}
    """,
    )
