"""The disk guard through ``hsm run``, on real small disks (tmpfs mounts: root only)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from hsm.jobscript import read_status
from tests.hsmcli import hsm, hsm_background, make_project, outputs, tmpfs, wait_for

pytestmark = [pytest.mark.timeout(90), pytest.mark.root]

# The log line of the contract, as hsm writes it: `YYYY-MM-DD HH:MM:SS LEVEL message`.
LOW_DISK = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d WARNING WARNING: Low disk space detected: "
    r"\d+\.\dGB remaining\b",
    re.M,
)

# Health thresholds at zero: these disks are tiny on purpose, and this test is about the
# wrapper's guard, not about the health of the source.
CONFIG = """\
local:
  max_parallel_jobs: 1
disk:
  project_min_free: {project_min_free}
  task_min_free: 1MB
  check_interval: 1
  warn_below: {warn_below}
  kill_below: {kill_below}
health:
  disk_critical_free: 0
  disk_critical_percent: 0
  disk_warning_free: 0
  disk_warning_percent: 0
  max_load_per_core: 1000
distributed:
  max_retries: 0
  enable_source_failsafe: false
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 32 MB tmpfs, unmounted at the end."""
    with tmpfs(tmp_path / "disk", "32m") as mount_point:
        yield mount_point


def test_too_little_space_for_the_project_refuses_to_start_tasks(small_disk: Path) -> None:
    # On this machine alone: one clear message (free, needed, the key), exit 3, the task
    # still pending, and `local` not disabled for the next sweep.
    config = CONFIG.format(project_min_free="100MB", warn_below="1MB", kill_below="1MB")
    project = make_project(
        small_disk / "project",
        config=config,
        sweep="""\
        command: [bash, task.sh]
        sweep:
          grid:
            a: [1, 3]
        """,
    )
    result = hsm("run", "sweeps/sweep.yaml", "--json", "--name", "pre", cwd=project)
    assert result.returncode == 3, result
    data = result.json()
    assert data["state"] == "aborted"
    assert data["counts"]["pending"] == 2 and data["counts"]["failed"] == 0
    first = next(t for t in data["tasks"] if t["attempts"])
    assert first["attempts"] == 1  # refused once, not retried in a storm
    task_dir = Path(first["task_dir"])
    assert not (task_dir / "marker").exists()  # the script never ran
    info = (task_dir / "task_info.txt").read_text()
    assert "Disk space check FAILED" in info
    assert "Required: at least 0.10 GB (100000000 bytes) free" in info
    assert info.rstrip().endswith("Status: FAILED_DISK_SPACE")
    assert re.search(
        r"the disk of local is too full to start tasks: \S+ has [\d.]+ GB", result.stderr
    ), result.stderr
    assert "disk.project_min_free: 0.1GB" in result.stderr
    listing = hsm("distributed", "list", "--json", cwd=project).json()
    local = next(s for s in listing["sources"] if s["name"] == "local")
    assert local["enabled"] is True, listing


def fill_project(disk: Path, *, kill_below: str) -> Path:
    """A project on ``disk`` whose one task runs ``fill.sh``; warnings below 20 MB."""
    config = CONFIG.format(project_min_free="1MB", warn_below="20MB", kill_below=kill_below)
    return make_project(
        disk / "project",
        config=config,
        sweep="""\
        command: [bash, fill.sh]
        sweep:
          grid:
            a: [1]
        """,
    )


def test_a_task_filling_the_disk_is_killed_with_a_warning_first(small_disk: Path) -> None:
    project = fill_project(small_disk, kill_below="10MB")
    # Writes 1 MB every 0.2 s: the guard (every second) sees the space fall below 20 MB
    # and then below 10 MB well before the disk is full.
    (project / "fill.sh").write_text(
        "for i in $(seq 200); do\n"
        '    head -c 1000000 /dev/zero > "$HSM_TASK_DIR/fill_$i" || true\n'
        "    sleep 0.2\n"
        "done\n"
    )
    result = hsm("run", "sweeps/sweep.yaml", "--json", "--name", "kill", cwd=project)
    assert result.returncode == 1, result
    (task,) = result.json()["tasks"]
    assert (task["status"], task["cause"]) == ("failed", "disk_kill")
    info = (Path(task["task_dir"]) / "task_info.txt").read_text()
    assert "WARNING: Low disk space detected: 0.0GB remaining" in info
    assert "CRITICAL: Disk space exhausted:" in info
    assert info.rstrip().endswith("Status: FAILED_DISK_SPACE")
    sweep_log = (project / "runs" / "kill" / "hsm.log").read_text()
    assert LOW_DISK.search(sweep_log), sweep_log
    assert LOW_DISK.search(result.stderr), result.stderr
    assert "Traceback" not in result.stderr
    # The task was stopped before it could fill the disk.
    assert os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize > 5_000_000


def test_a_low_disk_warning_is_reported_while_the_task_runs(small_disk: Path) -> None:
    project = fill_project(small_disk, kill_below="2MB")
    # Leaves about 17 MB free (warning below 20 MB), then waits for the test's go-ahead.
    (project / "fill.sh").write_text(
        'head -c 15000000 /dev/zero > "$HSM_TASK_DIR/fill"\n'
        'for i in $(seq 300); do [ -e "$HSM_TASK_DIR/go" ] && exit 0; sleep 0.1; done\n'
        "exit 3\n"
    )
    task_dir = project / "runs" / "live" / "tasks" / "task_0001"
    sweep_log = project / "runs" / "live" / "hsm.log"
    with hsm_background(
        "run", "sweeps/sweep.yaml", "--json", "--name", "live", cwd=project
    ) as proc:
        wait_for(
            lambda: sweep_log.exists() and LOW_DISK.search(sweep_log.read_text()),
            timeout=20,
            what="the low-disk warning in the sweep log",
        )
        status = read_status(task_dir)
        assert status is not None and status.status == "running"  # reported live
        (task_dir / "go").touch()
        assert proc.wait(timeout=30) == 0
    out, err = outputs(project)
    assert json.loads(out)["counts"]["completed"] == 1
    assert len(LOW_DISK.findall(sweep_log.read_text())) == 1  # once, not again at the end
    assert len(LOW_DISK.findall(err)) == 1
