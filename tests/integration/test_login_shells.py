"""Everything hsm runs on a host works whatever root's login shell is there: sweeps, cancels,
health probes and a cluster login, on test-bed hosts whose login shell is tcsh or fish."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hsmcli import Background, hsm, latest_sweep, tasks, wait_for
from tests.integration.cluster_support import cancel_leftovers, cluster_project, sweep_file
from tests.integration.ssh_support import host_processes, make_project, marks, remote
from tests.testbed import Host, SlurmCluster, TestBed

pytestmark = [pytest.mark.root, pytest.mark.testbed]

SHELLS = ["/usr/bin/tcsh", "/usr/bin/fish"]


@pytest.fixture(params=SHELLS, ids=lambda s: s.rsplit("/", 1)[-1])
def shell_host(request: pytest.FixtureRequest, testbed_hosts: list[Host]) -> Iterator[Host]:
    host = testbed_hosts[1]
    host.set_login_shell(request.param)
    probe = host.run(["getent", "passwd", "root"], check=True).stdout
    assert probe.strip().endswith(request.param)
    try:
        yield host
    finally:
        host.set_login_shell(None)


def test_sweep_with_setup_lines(tmp_path: Path, shell_host: Host) -> None:
    setup = ["export SETUP_GREETING='it'\"'\"'s a \\\\ $HOME !x'"]
    root = make_project(
        tmp_path / "proj", [shell_host], n=3, remotes={"h1": remote(shell_host, setup=setup)}
    )
    result = hsm("run", "sweep.yaml", "--source", "h1", "--json", cwd=root)
    assert result.returncode == 0, result
    data = result.json()
    assert data["counts"]["completed"] == 3
    for task in data["tasks"]:
        record = json.loads((Path(task["task_dir"]) / "result.json").read_text())
        assert record["host"] == shell_host.name
        assert record["env"]["SETUP_GREETING"] == "it's a \\\\ $HOME !x"  # as bash reads it


def test_cancel_and_health(tmp_path: Path, shell_host: Host) -> None:
    root = make_project(
        tmp_path / "proj", [shell_host], n=2, sleep=300, remotes={"h1": remote(shell_host)}
    )
    health = hsm("distributed", "health", "--all", "--json", cwd=root, timeout=60)
    rows = {r["name"]: r for r in health.json()["sources"]}
    assert rows["h1"]["reachable"] and rows["h1"]["status"] == "healthy", rows
    with Background("run", "sweep.yaml", "--source", "h1", "--json", cwd=root) as run:
        sweep_id = wait_for(lambda: latest_sweep(root), timeout=20, what="the sweep")
        wait_for(lambda: len(marks([shell_host])) == 2, timeout=20, what="two tasks running")
        cancelled = hsm("cancel", sweep_id, cwd=root)
        assert cancelled.returncode == 0, cancelled
        result = run.wait(timeout=30)
    assert result.returncode == 130, result
    assert [t.status.value for t in tasks(root, sweep_id)] == ["cancelled", "cancelled"]
    assert not host_processes(shell_host, "task.py")


@pytest.mark.slurm
@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s.rsplit("/", 1)[-1])
def test_cluster_login(
    shell: str, testbed: TestBed, slurm_on_host: SlurmCluster, tmp_path: Path
) -> None:
    login = testbed.hosts[0]
    login.set_login_shell(shell)
    folder = f"shell-{shell.rsplit('/', 1)[-1]}"
    root = cluster_project(
        tmp_path / "p",
        {
            "cluster": {
                "type": "slurm",
                "host": login.name,
                "remote_root": f"{login.work_dir}/{folder}",
                "max_parallel_jobs": 2,
            }
        },
        ssh_config=login.ssh_config_path,
    )
    sweep_file(root, sleep=[0.2] * 2, fail=[0, 0])
    try:
        result = hsm("run", "sweep.yaml", "--source", "cluster", "--json", cwd=root, timeout=120)
        assert result.returncode == 0, result
        assert json.loads(result.stdout)["counts"]["completed"] == 2
    finally:
        login.set_login_shell(None)
        cancel_leftovers(slurm_on_host, root)
        shutil.rmtree(login.disk_dir / folder, ignore_errors=True)
