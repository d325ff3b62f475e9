"""A project folder whose hsm_config.yaml points at the SSH test bed."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.hsmcli import hsm, write
from tests.testbed import Host

# Small disk thresholds for the 64 MB test-bed disks.
SMALL_DISK = {
    "project_min_free": "4MB",
    "task_min_free": "4MB",
    "check_interval": 1,
    "warn_below": "12MB",
    "kill_below": "6MB",
}
SMALL_HEALTH = {
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
    """Write hsm_config.yaml with one remote per host (named h1, h2, ...)."""
    remotes = {
        f"h{i + 1}": {"host": h.name, "remote_root": h.work_dir, "max_parallel_jobs": slots}
        for i, h in enumerate(hosts)
    }
    config: dict[str, Any] = {
        "ssh_config": str(hosts[0].ssh_config_path),
        "disk": dict(SMALL_DISK),
        "health": dict(SMALL_HEALTH),
        "distributed": {
            "include_local": include_local,
            "health_check_interval": 1,
            "remotes": remotes,
            **(distributed or {}),
        },
    }
    if extra:
        config.update(extra)
    root.mkdir(parents=True, exist_ok=True)
    (root / "hsm_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def sweep_file(
    root: Path, script: str, n: int, *, name: str = "sweep.yaml", extra: str = ""
) -> Path:
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


def status_json(root: Path, sweep_id: str | None = None) -> dict[str, Any]:
    args = ["status", "--json"] + ([sweep_id] if sweep_id else [])
    result = hsm(*args, cwd=root)
    assert result.returncode == 0, result
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def sweep_id_of(text: str) -> str:
    match = re.search(r"sweep (\d{8}-\d{6}-[0-9a-f]{4})", text)
    assert match, text
    return match.group(1)


def sweep_log(root: Path, sweep_id: str) -> str:
    return (root / "runs" / sweep_id / "hsm.log").read_text()
