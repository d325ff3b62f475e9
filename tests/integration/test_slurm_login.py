"""A Slurm cluster reached through its login node over SSH.

The login node is the first test-bed host: a real sshd with Slurm inside it. Code goes up and
results come back exactly as for an SSH source. The one walltime test (Slurm's time limits have
a granularity of one minute) starts with the module and is checked by its last test.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hsm.states import AttemptState
from tests.hsmcli import attempts, hsm, hsm_background, outputs
from tests.integration.cluster_support import (
    cancel_leftovers,
    cluster_project,
    marker_lines,
    starts,
    submitted_arrays,
    sweep_file,
    tasks_by_number,
)
from tests.testbed import Host, SlurmCluster, TestBed

pytestmark = [pytest.mark.root, pytest.mark.testbed, pytest.mark.slurm]


@pytest.fixture(scope="module")
def login(testbed: TestBed, slurm_on_host: SlurmCluster) -> Host:
    host = testbed.hosts[0]
    host.reset(clear_work_dir=False)
    return host


def cluster(host: Host, folder: str, **extra: Any) -> dict[str, Any]:
    return {"type": "slurm", "host": host.name, "remote_root": f"{host.work_dir}/{folder}", **extra}


def clean(host: Host, folder: str) -> None:
    shutil.rmtree(host.disk_dir / folder, ignore_errors=True)


@dataclass
class Background:
    root: Path
    proc: subprocess.Popen[str]
    began: float


@pytest.fixture(scope="module", autouse=True)
def walltime_run(
    login: Host, slurm_on_host: SlurmCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Background]:
    """A task that outlives its one-minute walltime on its first attempt only. Polls stay
    within 4 s of each other, so the attempt's end is recorded soon after Slurm's."""
    root = cluster_project(
        tmp_path_factory.mktemp("walltime") / "p",
        {"cluster": cluster(login, "walltime", max_parallel_jobs=1, poll_max_interval=4)},
        max_retries=1,
        ssh_config=login.ssh_config_path,
    )
    sweep_file(root, sleep=[0], hang=[1], resources={"walltime": 1})
    try:
        with hsm_background(
            "run", "sweep.yaml", "--source", "cluster", "--name", "walltime", "--json", cwd=root
        ) as proc:
            yield Background(root, proc, time.monotonic())
    finally:
        cancel_leftovers(slurm_on_host, root)
        clean(login, "walltime")


def test_sweep_through_the_login_node(
    login: Host, slurm_on_host: SlurmCluster, tmp_path: Path
) -> None:
    root = cluster_project(
        tmp_path / "p",
        {"cluster": cluster(login, "basic", max_parallel_jobs=2)},
        ssh_config=login.ssh_config_path,
    )
    sweep_file(root, sleep=[0.2] * 4, fail=[0, 0, 5, 0], resources={"mem": "100M"})
    try:
        result = hsm("run", "sweep.yaml", "--source", "cluster", "--json", cwd=root, timeout=120)
        assert result.returncode == 1, result
        sweep_id = json.loads(result.stdout)["sweep_id"]
        tasks = tasks_by_number(result)
        assert {n: (t["status"], t["cause"]) for n, t in tasks.items()} == {
            1: ("completed", "completed"),
            2: ("completed", "completed"),
            3: ("failed", "task_failed"),
            4: ("completed", "completed"),
        }
        # The elements ran on the cluster's node (inside the login host) ...
        [array] = submitted_arrays(root, sweep_id)
        assert sorted(slurm_on_host.job_states(array)) == ["COMPLETED"] * 3 + ["FAILED"]
        # ... and their folders came back, with everything the wrapper writes.
        for number in (1, 2, 3, 4):
            lines = marker_lines(root, sweep_id, number)
            assert lines[0].split()[-1] == login.name
            task = root / "runs" / sweep_id / "tasks" / f"task_{number:04d}"
            assert f"Host: {login.name}" in (task / "task_info.txt").read_text()
        assert (
            "ran with sleep=0.2 fail=5"
            in (root / "runs" / sweep_id / "tasks" / "task_0003" / "stdout.log").read_text()
        )
        # A failed sweep keeps its remote folders, job scripts included.
        jobs = list((login.disk_dir / "basic").glob("*/sweeps/*/cluster/.hsm/jobs/*.sh"))
        assert len(jobs) == 1 and "#SBATCH --array=1-4%2" in jobs[0].read_text()
    finally:
        cancel_leftovers(slurm_on_host, root)
        clean(login, "basic")


def test_disk_guard_inside_a_job(login: Host, slurm_on_host: SlurmCluster, tmp_path: Path) -> None:
    root = cluster_project(
        tmp_path / "p",
        {"cluster": cluster(login, "disk")},
        ssh_config=login.ssh_config_path,
        extra={
            "disk": {
                "project_min_free": "4MB",
                "task_min_free": "4MB",
                "check_interval": 1,
                "warn_below": "30MB",
                "kill_below": "20MB",
            }
        },
    )
    sweep_file(root, sleep=[0], fill=[60])
    try:
        result = hsm("run", "sweep.yaml", "--source", "cluster", "--json", cwd=root, timeout=120)
        assert result.returncode == 1, result
        [task] = json.loads(result.stdout)["tasks"]
        assert (task["status"], task["cause"]) == ("failed", "disk_kill")
        sweep_id = json.loads(result.stdout)["sweep_id"]
        log = (root / "runs" / sweep_id / "hsm.log").read_text()
        assert re.search(r"WARNING: Low disk space detected: 0\.\dGB remaining", log)
        info = (root / "runs" / sweep_id / "tasks" / "task_0001" / "task_info.txt").read_text()
        assert "CRITICAL: Disk space exhausted" in info
        assert "Status: FAILED_DISK_SPACE" in info
        assert login.disk_free() < 25 * 10**6  # it really filled the login node's disk
    finally:
        cancel_leftovers(slurm_on_host, root)
        clean(login, "disk")
    assert login.disk_free() > 50 * 10**6


def test_cluster_beside_an_ssh_host(
    login: Host, slurm_on_host: SlurmCluster, testbed: TestBed, tmp_path: Path
) -> None:
    worker = testbed.hosts[1]
    remotes = {
        "cluster": cluster(login, "dist", max_parallel_jobs=2),
        "worker": {
            "host": worker.name,
            "remote_root": f"{worker.work_dir}/dist",
            "max_parallel_jobs": 2,
        },
    }
    root = cluster_project(tmp_path / "p", remotes, ssh_config=login.ssh_config_path)
    sweep_file(root, sleep=[0.5] * 6)
    try:
        result = hsm("run", "sweep.yaml", "--distributed", "--json", cwd=root, timeout=120)
        assert result.returncode == 0, result
        data = json.loads(result.stdout)
        used = {t["source"] for t in data["tasks"]}
        assert used == {"cluster", "worker"}
        assert data["sources"]["cluster"]["completed"] + data["sources"]["worker"]["completed"] == 6
        hosts = {
            marker_lines(root, data["sweep_id"], t["number"])[0].split()[-1] for t in data["tasks"]
        }
        assert hosts == {login.name, worker.name}
    finally:
        cancel_leftovers(slurm_on_host, root)
        clean(login, "dist")
        shutil.rmtree(worker.disk_dir / "dist", ignore_errors=True)


def test_walltime_exceeded_is_requeued(
    walltime_run: Background, login: Host, slurm_on_host: SlurmCluster
) -> None:
    config = slurm_on_host.run(["scontrol", "show", "config"], check=True).stdout
    assert re.search(r"KillWait\s+=\s+5 sec", config)
    assert re.search(r"OverTimeLimit\s+=\s+0 min", config)
    # The limit is one minute; Slurm checks limits every 30 s and then allows KillWait.
    code = walltime_run.proc.wait(timeout=max(10.0, 150 - (time.monotonic() - walltime_run.began)))
    root = walltime_run.root
    stdout, stderr = outputs(root)
    assert code == 0, stdout + stderr
    [task] = json.loads(stdout)["tasks"]
    assert (task["status"], task["attempts"]) == ("completed", 2)
    rows = attempts(root, "walltime")
    assert [(a.state, a.cause) for a in rows] == [
        (AttemptState.FAILED, "timeout"),
        (AttemptState.COMPLETED, "completed"),
    ]
    log = (root / "runs" / "walltime" / "hsm.log").read_text()
    assert "task 1 failed on cluster (timeout); retrying" in log
    first, second = submitted_arrays(root, "walltime")
    assert slurm_on_host.job_states(first) == ["TIMEOUT"]
    assert slurm_on_host.job_states(second) == ["COMPLETED"]
    assert starts(root, "walltime", 1) == 2
    assert rows[0].finished is not None
    ran = rows[0].finished - rows[0].started
    assert 60 <= ran <= 100, ran
