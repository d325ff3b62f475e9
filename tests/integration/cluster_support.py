"""Helpers of the cluster tests: projects whose config names a Slurm or PBS source, and facts
read back from a finished sweep."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.hsmcli import Result, merged, write
from tests.testbed import SlurmCluster

# Small disk-guard thresholds and a health classification that never holds tasks back.
QUIET = {
    "disk": {
        "project_min_free": "1MB",
        "task_min_free": "1MB",
        "warn_below": "1MB",
        "kill_below": "1MB",
    },
    "health": {
        "disk_critical_free": 0,
        "disk_critical_percent": 0,
        "disk_warning_free": 0,
        "disk_warning_percent": 0,
        "max_load_per_core": 1000,
    },
}

# The task: appends start and end lines to a marker file in its task folder (a task that ran
# twice shows two start lines); `fail=N` exits N; `sleep=S` sleeps; `fill=MB` writes MB
# megabytes into its temp folder, one per 0.1 s; `hang=1` sleeps 10 minutes on attempt 1.
TASK = r"""
set -u
marker="$HSM_TASK_DIR/marker"
echo "start $HSM_ATTEMPT $(date +%s.%N) $(hostname)" >> "$marker"
fail=0 secs=0 fill=0 hang=0
for arg in "$@"; do
  case "$arg" in
    fail=*) fail=${arg#fail=} ;;
    sleep=*) secs=${arg#sleep=} ;;
    fill=*) fill=${arg#fill=} ;;
    hang=*) hang=${arg#hang=} ;;
  esac
done
if [ "$hang" = 1 ] && [ "$HSM_ATTEMPT" = 1 ]; then sleep 600; fi
for ((i = 0; i < fill; i++)); do
  head -c 1000000 /dev/zero >> "$TMPDIR/filler" || exit 9
  sleep 0.1
done
sleep "$secs"
echo "ran with $*"
echo "done $HSM_ATTEMPT $(date +%s.%N)" >> "$marker"
exit "$fail"
"""


def cluster_project(
    root: Path,
    remotes: Mapping[str, Mapping[str, Any]],
    *,
    max_retries: int = 0,
    extra: Mapping[str, Any] | None = None,
    ssh_config: Path | None = None,
) -> Path:
    config: dict[str, Any] = {
        **QUIET,
        "distributed": {
            "include_local": False,
            "max_retries": max_retries,
            "health_check_interval": 5,
            "remotes": dict(remotes),
        },
    }
    if ssh_config is not None:
        config["ssh_config"] = str(ssh_config)
    root.mkdir(parents=True, exist_ok=True)
    (root / "hsm_config.yaml").write_text(yaml.safe_dump(merged(config, extra), sort_keys=False))
    write(root / "task.sh", TASK)
    return root


def sweep_file(
    root: Path,
    *,
    sleep: Sequence[float],
    fail: Sequence[int] | None = None,
    fill: Sequence[int] | None = None,
    hang: Sequence[int] | None = None,
    name: str = "sweep.yaml",
    resources: Mapping[str, Any] | None = None,
) -> Path:
    """One task per ``sleep`` value (paired with ``fail`` exit codes, ``fill`` sizes and
    ``hang`` flags)."""
    group: dict[str, list[Any]] = {"sleep": list(sleep), "fail": list(fail or [0] * len(sleep))}
    for key, values in (("fill", fill), ("hang", hang)):
        if values is not None:
            group[key] = list(values)
    spec: dict[str, Any] = {
        "command": ["bash", "task.sh"],
        "sweep": {"paired": [group]},
        "output_dir_arg": None,
        "wandb_group_arg": None,
    }
    if resources:
        spec["resources"] = dict(resources)
    path = root / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def tasks_by_number(result: Result) -> dict[int, dict[str, Any]]:
    data = json.loads(result.stdout)
    return {t["number"]: t for t in data["tasks"]}


def marker_lines(root: Path, sweep_id: str, number: int) -> list[str]:
    path = root / "runs" / sweep_id / "tasks" / f"task_{number:04d}" / "marker"
    return path.read_text().splitlines() if path.exists() else []


def starts(root: Path, sweep_id: str, number: int) -> int:
    return sum(line.startswith("start") for line in marker_lines(root, sweep_id, number))


def max_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """The largest number of intervals that overlap at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def run_intervals(root: Path, sweep_id: str, numbers: Iterable[int]) -> list[tuple[float, float]]:
    out = []
    for number in numbers:
        lines = marker_lines(root, sweep_id, number)
        start = [float(x.split()[2]) for x in lines if x.startswith("start")]
        done = [float(x.split()[2]) for x in lines if x.startswith("done")]
        out += list(zip(start, done, strict=False))
    return out


def submitted_arrays(root: Path, sweep_id: str) -> list[str]:
    log = (root / "runs" / sweep_id / "hsm.log").read_text()
    found = re.findall(r"submitted \d+ task\(s\) as (.+)$", log, re.MULTILINE)
    return [job for line in found for job in line.split(", ")]


def cancel_leftovers(cluster: SlurmCluster, where: Path) -> None:
    """Cancel every array a sweep under ``where`` submitted (after a failed test: no job of a
    test outlives it)."""
    arrays = []
    for log in where.glob("**/runs/*/hsm.log"):
        arrays += submitted_arrays(log.parents[2], log.parent.name)
    if arrays:
        cluster.run(["scancel", *arrays], timeout=30)
