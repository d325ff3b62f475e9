"""The disk guard on a remote host (64 MB tmpfs work disks): killed when the disk fills up
mid-task, refused when it is too small from the start; retried on another host."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.hsmcli import Background, attempts, wait_for
from tests.integration.ssh_support import make_project, marks, remote, started_on
from tests.testbed import Host

pytestmark = [pytest.mark.root, pytest.mark.testbed]

MB = 1 << 20
GUARD = {
    "project_min_free": "1MB",
    "task_min_free": "1MB",
    "check_interval": 1,
    "warn_below": "20MB",
    "kill_below": "10MB",
}


def test_disk_filled_mid_task_kills_it(tmp_path: Path, testbed_hosts: list[Host]) -> None:
    host = testbed_hosts[0]
    root = make_project(
        tmp_path / "proj",
        [host],
        n=1,
        sleep=60,
        config={"disk": GUARD, "distributed": {"max_retries": 0}},
    )
    with Background("run", "sweep.yaml", "--source", "h1", "--json", cwd=root) as run:
        wait_for(lambda: started_on([host], 1, host), timeout=20, what="the task to start")
        host.fill_disk(leave_bytes=5 * MB)
        result = run.wait(timeout=30)
    assert result.returncode == 1, result
    data = result.json()
    task = data["tasks"][0]
    assert (task["status"], task["cause"]) == ("failed", "disk_kill")
    folder = Path(task["task_dir"])
    info = (folder / "task_info.txt").read_text()
    assert "Status: FAILED_DISK_SPACE" in info
    assert "CRITICAL: Disk space exhausted" in info
    status = json.loads((folder / "status.json").read_text())
    assert (status["status"], status["cause"]) == ("failed", "disk_kill")
    log = (Path(data["sweep_dir"]) / "hsm.log").read_text()
    assert "WARNING: Low disk space detected: 0.0GB remaining [task 1 on h1]" in log
    assert marks([host])[1] == [("start", "1", host.name)]  # killed before it was done


def test_a_low_disk_warning_is_reported_while_the_task_runs(
    tmp_path: Path, testbed_hosts: list[Host]
) -> None:
    host = testbed_hosts[0]
    root = make_project(
        tmp_path / "proj",
        [host],
        n=1,
        sleep=6,
        config={"disk": GUARD, "distributed": {"max_retries": 0}},
    )

    def warned() -> str | None:
        logs = [p.read_text() for p in root.glob("runs/*/hsm.log")]
        return next((text for text in logs if "Low disk space detected" in text), None)

    with Background("run", "sweep.yaml", "--source", "h1", "--json", cwd=root) as run:
        wait_for(lambda: started_on([host], 1, host), timeout=20, what="the task to start")
        host.fill_disk(leave_bytes=15 * MB)  # below the warning level, above the kill level
        log = wait_for(warned, timeout=5, what="the warning in the sweep log")
        assert marks([host])[1] == [("start", "1", host.name)]  # the task still runs
        host.free_disk()
        result = run.wait(timeout=30)
    assert result.returncode == 0, result
    assert "WARNING: Low disk space detected: 0.0GB remaining [task 1 on h1]" in log
    assert log.count("Low disk space detected") == 1
    final = (Path(result.json()["sweep_dir"]) / "hsm.log").read_text()
    assert final.count("Low disk space detected") == 1  # not logged again at the end


def test_disk_kill_is_retried_on_another_host(tmp_path: Path, testbed_hosts: list[Host]) -> None:
    h1, h2 = testbed_hosts[:2]
    (h1.disk_dir / "slow_1").write_text("")
    remotes = {"h1": remote(h1, max_parallel_jobs=1), "h2": remote(h2, max_parallel_jobs=1)}
    root = make_project(
        tmp_path / "proj",
        [h1, h2],
        n=1,
        sleep=0.5,
        remotes=remotes,
        config={"disk": GUARD},
        defaults={"slow": 60},
    )
    with Background(
        "run", "sweep.yaml", "--source", "h1", "--source", "h2", "--json", cwd=root
    ) as run:
        wait_for(lambda: started_on([h1], 1, h1), timeout=20, what="task 1 on h1")
        h1.fill_disk(leave_bytes=5 * MB)
        result = run.wait(timeout=30)
    assert result.returncode == 0, result
    rows = [(a.source, a.state.value, a.cause) for a in attempts(root, result.json()["sweep_id"])]
    assert rows == [("h1", "failed", "disk_kill"), ("h2", "completed", "completed")], rows


def test_too_small_disk_is_refused_before_the_task_starts(
    tmp_path: Path, testbed_hosts: list[Host]
) -> None:
    host = testbed_hosts[1]
    guard = {**GUARD, "project_min_free": "100MB"}  # more than the whole 64 MB disk
    root = make_project(
        tmp_path / "proj", [host], n=1, config={"disk": guard, "distributed": {"max_retries": 0}}
    )
    with Background("run", "sweep.yaml", "--source", "h1", "--json", cwd=root) as run:
        result = run.wait(timeout=30)
    # The only source refuses it: one clear message and exit 3; the task stays pending.
    assert result.returncode == 3, result
    assert "the disk of h1 is too full to start tasks" in result.stderr, result.stderr
    assert "disk.project_min_free: 0.1GB" in result.stderr
    task = result.json()["tasks"][0]
    assert (task["status"], task["attempts"]) == ("pending", 1)
    info = (Path(task["task_dir"]) / "task_info.txt").read_text()
    assert "Disk space check FAILED" in info and "Status: FAILED_DISK_SPACE" in info
    assert "Started:" not in info
    assert 1 not in marks([host])  # the script never ran
