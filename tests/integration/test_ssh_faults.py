"""Controller and host failures on the SSH test bed: SIGKILL of the controller then resume,
hosts lost mid-task (link cut, sshd frozen, sshd killed), hosts that come back, cancel."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.hsmcli import Background, attempts, hsm, latest_sweep, tasks, wait_for
from tests.integration.ssh_support import (
    REMOTE_ROOT,
    host_processes,
    make_project,
    marks,
    remote,
    remote_path,
    started_on,
)
from tests.testbed import Host

pytestmark = [pytest.mark.root, pytest.mark.testbed]


def assert_each_task_ran_once(hosts: list[Host], n: int) -> None:
    runs = marks(hosts)
    assert sorted(runs) == list(range(1, n + 1)), runs
    for number, lines in runs.items():
        assert [w for w, _, _ in lines] == ["start", "done"], (number, lines)


def test_controller_sigkill_then_resume_runs_every_task_once(
    tmp_path: Path, testbed_hosts: list[Host]
) -> None:
    n = 18
    root = make_project(tmp_path / "proj", testbed_hosts, n=n, sleep=1.5)
    with Background(
        "run", "sweep.yaml", "--source", "h1", "--source", "h2", "--source", "h3", cwd=root
    ) as run:
        sweep_id = wait_for(lambda: latest_sweep(root), timeout=20, what="the sweep")

        def halfway() -> bool:
            statuses = [t.status.value for t in tasks(root, sweep_id)]
            on_hosts = [i for i, lines in marks(testbed_hosts).items() if lines[-1][0] == "start"]
            return (
                statuses.count("completed") >= 3
                and statuses.count("pending") >= 3
                and len(on_hosts) >= 3
            )

        wait_for(halfway, timeout=30, what="tasks done, running and waiting")
        run.kill()
    before = {t.number: t.status.value for t in tasks(root, sweep_id)}
    assert "pending" in before.values()
    # The tasks that had started go on without the controller, and end.
    started = [i for i, lines in marks(testbed_hosts).items() if lines[-1][0] == "start"]
    assert started
    wait_for(
        lambda: all(marks(testbed_hosts)[i][-1][0] == "done" for i in started),
        timeout=20,
        what="the detached tasks to finish",
    )

    result = hsm("resume", sweep_id, "--json", cwd=root)
    assert result.returncode == 0, result
    data = result.json()
    assert data["counts"]["completed"] == n
    assert_each_task_ran_once(testbed_hosts, n)
    for task in data["tasks"]:
        assert task["attempts"] == 1, task
        info = (Path(task["task_dir"]) / "task_info.txt").read_text()
        assert info.count("Status: COMPLETED") == 1
    log = (Path(data["sweep_dir"]) / "hsm.log").read_text()
    assert "reattached task" in log


@pytest.mark.parametrize("fault", ["cut_link", "freeze_sshd", "kill_sshd_and_sessions"])
def test_lost_host_fails_over_and_the_old_attempt_is_stopped(
    tmp_path: Path, testbed_hosts: list[Host], fault: str
) -> None:
    h1 = testbed_hosts[0]
    # Task 1 lands on h1 (round robin) and would take a minute there; elsewhere it takes 6 s,
    # long enough for h1 to come back while the new attempt still runs.
    (h1.disk_dir / "slow_1").write_text("")
    remotes = {
        f"h{i + 1}": remote(h, max_parallel_jobs=1, keep_remote=True)
        for i, h in enumerate(testbed_hosts)
    }
    sweep = (
        "script: task.py\nsweep:\n  paired:\n    - {i: [1, 2, 3], sleep: [6, 0.5, 0.5]}\n"
        "defaults: {slow: 60}\n"
    )
    root = make_project(tmp_path / "proj", testbed_hosts, remotes=remotes, sweep=sweep)
    with Background(
        "run",
        "sweep.yaml",
        "--source",
        "h1",
        "--source",
        "h2",
        "--source",
        "h3",
        "--json",
        cwd=root,
    ) as run:
        wait_for(lambda: started_on(testbed_hosts, 1, h1), timeout=20, what="task 1 on h1")
        time.sleep(0.3)
        cut = time.monotonic()
        if fault == "cut_link":
            h1.cut_link()
        elif fault == "freeze_sshd":
            h1.freeze_sshd(sessions=True)
        else:
            h1.kill_sshd()
            for pid in h1.pids():
                if Path(f"/proc/{pid}/comm").read_text().strip().startswith("sshd"):
                    os.kill(pid, signal.SIGKILL)
        others = testbed_hosts[1:]
        wait_for(
            lambda: any(started_on(testbed_hosts, 1, h) for h in others),
            timeout=20,
            what="task 1 to start elsewhere",
        )
        failover = time.monotonic() - cut
        h1.reset(clear_work_dir=False)  # the host comes back while task 1 runs elsewhere
        result = run.wait(timeout=60)
    assert result.returncode == 0, result
    assert failover <= 10, failover
    data = result.json()
    assert data["counts"]["completed"] == 3
    first = data["tasks"][0]
    assert first["source"] in ("h2", "h3") and first["attempts"] == 2
    states = [
        (a.source, a.state.value, a.cause)
        for a in attempts(root, data["sweep_id"])
        if a.number == 1
    ]
    assert states[0] == ("h1", "lost", "lost") and states[1][1] == "completed", states
    # The old attempt on h1 was stopped once h1 was back: no second run of task 1.
    log = (Path(data["sweep_dir"]) / "hsm.log").read_text()
    assert "had been started again elsewhere: stopped its old attempt 1 on h1" in log, log
    old = remote_path(h1, f"{REMOTE_ROOT}/proj/sweeps/{data['sweep_id']}/h1/task_0001")
    status = json.loads((old / "status.json").read_text())
    assert (status["status"], status["cause"]) == ("cancelled", "cancelled")
    lines = marks(testbed_hosts)[1]
    assert [w for w, _, h in lines if h == h1.name] == ["start"], lines
    assert [w for w, _, h in lines if h != h1.name] == ["start", "done"], lines
    assert not host_processes(h1, "task.py")


def test_host_back_before_the_task_moved_reattaches_it(
    tmp_path: Path, testbed_hosts: list[Host]
) -> None:
    host = testbed_hosts[1]
    root = make_project(tmp_path / "proj", [host], n=1, sleep=12, remotes={"h1": remote(host)})
    with Background("run", "sweep.yaml", "--source", "h1", "--json", cwd=root) as run:
        sweep_id = wait_for(lambda: latest_sweep(root), timeout=20, what="the sweep")
        wait_for(lambda: started_on([host], 1, host), timeout=20, what="task 1 to start")
        host.cut_link()
        wait_for(
            lambda: any(a.state.value == "lost" for a in attempts(root, sweep_id)),
            timeout=10,
            what="the attempt to be recorded lost",
        )
        host.restore_link()
        result = run.wait(timeout=60)
    assert result.returncode == 0, result
    data = result.json()
    assert data["counts"]["completed"] == 1
    rows = [
        (a.attempt, a.state.value, (a.handle or {}).get("attempt"))
        for a in attempts(root, sweep_id)
    ]
    assert rows == [(1, "completed", 1)], rows  # recorded as the attempt that ran
    assert_each_task_ran_once([host], 1)
    log = (Path(data["sweep_dir"]) / "hsm.log").read_text()
    assert "still runs on h1, which is back: reattached" in log


def test_sshd_restart_does_not_lose_running_tasks(
    tmp_path: Path, testbed_hosts: list[Host]
) -> None:
    """Stopping the listening sshd leaves open connections alone: nothing is lost."""
    root = make_project(tmp_path / "proj", testbed_hosts[:2], n=4, sleep=2)
    with Background(
        "run", "sweep.yaml", "--source", "h1", "--source", "h2", "--json", cwd=root
    ) as run:
        wait_for(lambda: len(marks(testbed_hosts)) == 4, timeout=20, what="all tasks started")
        testbed_hosts[0].kill_sshd()
        result = run.wait(timeout=60)
    assert result.returncode == 0, result
    assert all(t["attempts"] == 1 for t in result.json()["tasks"])
    assert_each_task_ran_once(testbed_hosts, 4)


def test_cancel_kills_every_process_group(tmp_path: Path, testbed_hosts: list[Host]) -> None:
    hosts = testbed_hosts[:2]
    root = make_project(tmp_path / "proj", hosts, n=6, sleep=300, defaults={"child": 333})
    with Background(
        "run", "sweep.yaml", "--source", "h1", "--source", "h2", "--json", cwd=root
    ) as run:
        sweep_id = wait_for(lambda: latest_sweep(root), timeout=20, what="the sweep")
        wait_for(
            lambda: sum(len(host_processes(h, "sleep 333")) for h in hosts) == 4,
            timeout=20,
            what="four tasks and their children running",
        )
        cancelled = hsm("cancel", sweep_id, cwd=root)
        assert cancelled.returncode == 0, cancelled
        assert f"sweep {sweep_id}: cancelled" in cancelled.stdout
        result = run.wait(timeout=30)
    assert result.returncode == 130, result
    data = result.json()
    assert data["state"] == "cancelled"
    assert data["counts"]["cancelled"] == 6
    for task in data["tasks"][:4]:
        assert task["cause"] == "cancelled"
        assert "Status: CANCELLED" in (Path(task["task_dir"]) / "task_info.txt").read_text()
    for host in hosts:  # the task, its child and the wrapper are all gone
        assert not host_processes(host, "sleep 333")
        assert not host_processes(host, "task.py")
        assert not host_processes(host, "wrapper-")


def test_cancel_with_no_controller_left(tmp_path: Path, testbed_hosts: list[Host]) -> None:
    host = testbed_hosts[2]
    root = make_project(tmp_path / "proj", [host], n=2, sleep=300, remotes={"h1": remote(host)})
    with Background("run", "sweep.yaml", "--source", "h1", cwd=root) as run:
        sweep_id = wait_for(lambda: latest_sweep(root), timeout=20, what="the sweep")
        wait_for(lambda: len(marks([host])) == 2, timeout=20, what="two tasks running")
        run.kill()
    assert host_processes(host, "task.py")
    cancelled = hsm("cancel", sweep_id, cwd=root)
    assert cancelled.returncode == 0, cancelled
    assert [t.status.value for t in tasks(root, sweep_id)] == ["cancelled", "cancelled"]
    assert not host_processes(host, "task.py")


def test_resume_stops_an_old_run_left_on_a_host_that_was_away(
    tmp_path: Path, testbed_hosts: list[Host]
) -> None:
    h1, h2 = testbed_hosts[:2]
    (h1.disk_dir / "slow_1").write_text("")
    remotes = {"h1": remote(h1, max_parallel_jobs=1), "h2": remote(h2, max_parallel_jobs=1)}
    root = make_project(
        tmp_path / "proj", [h1, h2], n=1, sleep=0.5, remotes=remotes, defaults={"slow": 120}
    )
    with Background(
        "run", "sweep.yaml", "--source", "h1", "--source", "h2", "--json", cwd=root
    ) as run:
        wait_for(lambda: started_on([h1], 1, h1), timeout=20, what="task 1 on h1")
        h1.cut_link()
        result = run.wait(timeout=60)  # done on h2 while h1 is still away
    try:
        assert result.returncode == 0, result
        assert host_processes(h1, "task.py")  # the old run goes on, out of reach
    finally:
        h1.restore_link()
    resumed = hsm("resume", result.json()["sweep_id"], "--json", cwd=root)
    assert resumed.returncode == 0, resumed
    assert resumed.json()["counts"]["completed"] == 1
    assert not host_processes(h1, "task.py")
    assert "stopped its old attempt 1 on h1" in resumed.stderr
