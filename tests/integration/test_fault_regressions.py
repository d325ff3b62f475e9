"""Focused cases found by the chaos scenario (tests/integration/test_chaos.py):

- a task lost with its host, that finishes there while the host is away and is reattached when
  the host comes back: the state database records the attempt that really ran;
- a Slurm cluster in a distributed sweep holds no more tasks than it may run at once, so the
  other sources keep getting work.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hsm.states import AttemptState
from tests.hsmcli import Background, attempts, hsm, latest_sweep, wait_for
from tests.integration.cluster_support import cancel_leftovers, cluster_project, sweep_file
from tests.integration.ssh_support import make_project, marks, remote, started_on
from tests.testbed import Host, SlurmCluster, TestBed

pytestmark = [pytest.mark.root, pytest.mark.testbed, pytest.mark.timeout(180)]


def test_reattached_attempt_is_recorded_as_the_one_that_ran(
    tmp_path: Path, testbed_hosts: list[Host]
) -> None:
    h1 = testbed_hosts[0]
    root = make_project(
        tmp_path / "proj",
        [h1],
        n=1,
        sleep=6,
        remotes={"h1": remote(h1, max_parallel_jobs=1)},
        config={
            "distributed": {
                "max_retries": 2,
                "health_check_interval": 1,
                "health_check_failure_threshold": 30,
            }
        },
    )
    with Background("run", "sweep.yaml", "--source", "h1", "--json", cwd=root) as run:
        wait_for(lambda: started_on([h1], 1, h1), timeout=30, what="task 1 on h1")
        sweep_id = latest_sweep(root)
        assert sweep_id
        h1.cut_link()
        wait_for(
            lambda: any(a.state == AttemptState.LOST for a in attempts(root, sweep_id)),
            timeout=30,
            what="attempt 1 recorded as lost",
        )
        # The task finishes on h1 while it is cut off.
        wait_for(
            lambda: [m for m in marks([h1]).get(1, []) if m[0] == "done"],
            timeout=30,
            what="task 1 to finish on h1",
        )
        h1.restore_link()
        result = run.wait(timeout=90)
    assert result.returncode == 0, result
    # Only attempt 1 ever ran.
    assert [(what, attempt) for what, attempt, _ in marks([h1])[1]] == [
        ("start", "1"),
        ("done", "1"),
    ]
    (task,) = result.json()["tasks"]
    status = json.loads((Path(task["task_dir"]) / "status.json").read_text())
    assert status["attempt"] == 1 and status["status"] == "completed"
    completed = [a for a in attempts(root, sweep_id) if a.state == AttemptState.COMPLETED]
    assert [a.attempt for a in completed] == [1], attempts(root, sweep_id)


@pytest.fixture
def slurm(testbed: TestBed, slurm_local: SlurmCluster, tmp_path: Path) -> Iterator[SlurmCluster]:
    yield slurm_local
    cancel_leftovers(slurm_local, tmp_path)


@pytest.mark.slurm
def test_a_cluster_does_not_take_the_whole_sweep(tmp_path: Path, slurm: SlurmCluster) -> None:
    # This machine (2 slots) and a cluster that runs one element at a time: 20 tasks of
    # 0.5 s. This machine alone would finish in 5 s; the cluster alone takes 10-20 s.
    root = cluster_project(
        tmp_path / "p",
        {"cluster": {"type": "slurm", "host": "local", "max_parallel_jobs": 1}},
        extra={"local": {"max_parallel_jobs": 2}, "distributed": {"include_local": True}},
    )
    sweep_file(root, sleep=[0.5] * 20)
    result = hsm(
        "run", "sweep.yaml", "--distributed", "--json", cwd=root, env=slurm.env(), timeout=150
    )
    assert result.returncode == 0, result
    sources = result.json()["sources"]
    # The cluster never holds more than its max_parallel_jobs plus a small queue: this
    # machine, three times as fast here, runs most of the tasks.
    assert sources["local"]["completed"] >= 10, sources
