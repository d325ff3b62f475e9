"""A Slurm cluster with ``host: local``: the scheduler commands run on this machine.

Against the test bed's real single-node Slurm (no accounting database, so final states come
from the controller's records and the wrappers' status files).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hsm.sources.queue import QueueSource
from hsm.sources.registry import build_sources
from hsm.spec.config import load_config
from hsm.states import AttemptState
from tests.hsmcli import attempts, hsm, hsm_background, open_store, outputs, wait_for
from tests.integration.cluster_support import (
    cancel_leftovers,
    cluster_project,
    max_overlap,
    run_intervals,
    starts,
    submitted_arrays,
    sweep_file,
    tasks_by_number,
)
from tests.testbed import SlurmCluster, TestBed

pytestmark = [pytest.mark.root, pytest.mark.slurm]


@pytest.fixture
def slurm(testbed: TestBed, slurm_local: SlurmCluster, tmp_path: Path) -> Iterator[SlurmCluster]:
    """The local cluster; no job of a test outlives it. (The test bed comes up first: its
    bring-up removes every leftover of its prefix, a running local cluster included.)"""
    yield slurm_local
    cancel_leftovers(slurm_local, tmp_path)


def local_cluster(**extra: Any) -> dict[str, Any]:
    return {"cluster": {"type": "slurm", "host": "local", **extra}}


def run_dir(root: Path, sweep_id: str) -> Path:
    return root / "runs" / sweep_id


def test_throttled_chunked_arrays_with_a_failing_element(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    # A project folder whose name needs quoting everywhere.
    root = cluster_project(
        tmp_path / 'it\'s a "project"', local_cluster(max_parallel_jobs=1, max_array_size=2)
    )
    sweep_file(
        root,
        sleep=[0.3] * 5,
        fail=[0, 0, 3, 0, 0],
        resources={"walltime": "00:05:00", "mem": "100M", "cpus": 1},
    )
    result = hsm(
        "run", "sweep.yaml", "--source", "cluster", "--json", cwd=root, env=slurm.env(), timeout=120
    )
    assert result.returncode == 1, result
    data = json.loads(result.stdout)
    tasks = tasks_by_number(result)
    assert {n: (t["status"], t["cause"], t["exit_code"]) for n, t in tasks.items()} == {
        1: ("completed", "completed", 0),
        2: ("completed", "completed", 0),
        3: ("failed", "task_failed", 3),
        4: ("completed", "completed", 0),
        5: ("completed", "completed", 0),
    }
    sweep_id = data["sweep_id"]
    # 5 tasks in chunks of 2: three array jobs, each submitted once, run one after the other.
    arrays = submitted_arrays(root, sweep_id)
    assert len(arrays) == 3
    jobs = sorted(run_dir(root, sweep_id).joinpath(".hsm", "jobs").iterdir())
    assert ["#SBATCH --array=1-2%1" in j.read_text() for j in jobs].count(True) == 2
    # Per element, the controller's own final states.
    states = {array: slurm.job_states(array) for array in arrays}
    assert sorted(s for v in states.values() for s in v) == ["COMPLETED"] * 4 + ["FAILED"]
    # Never more than one element ran at a time (the throttle holds across the chunks).
    intervals = run_intervals(root, sweep_id, range(1, 6))
    assert len(intervals) == 5
    assert max_overlap(intervals) == 1
    # Everything the wrapper writes is there, as on every source.
    task = run_dir(root, sweep_id) / "tasks" / "task_0004"
    assert "Status: COMPLETED" in (task / "task_info.txt").read_text()
    assert "ran with sleep=0.3 fail=0" in (task / "stdout.log").read_text()
    assert "element" in (task / ".hsm" / "job.log").read_text()


def test_hsm_cancel_stops_the_array(slurm: SlurmCluster, tmp_path: Path) -> None:
    root = cluster_project(tmp_path / "p", local_cluster(max_parallel_jobs=1))
    sweep_file(root, sleep=[120, 120, 120])
    with hsm_background(
        "run", "sweep.yaml", "--source", "cluster", "--name", "tocancel", cwd=root, env=slurm.env()
    ) as proc:
        status = run_dir(root, "tocancel") / "tasks" / "task_0001" / "status.json"
        wait_for(
            lambda: status.exists() and '"running"' in status.read_text(),
            timeout=60,
            what="the first element running",
        )
        arrays = submitted_arrays(root, "tocancel")
        queued = slurm.run(["squeue", "-h", "-r", "-j", arrays[0], "-o", "%T"]).stdout
        assert sorted(queued.split()) == ["PENDING", "PENDING", "RUNNING"]  # throttle 1
        cancelled = hsm("cancel", "tocancel", cwd=root, env=slurm.env(), timeout=60)
        assert cancelled.returncode == 0, cancelled
        assert proc.wait(timeout=60) == 130, outputs(root)
    final = hsm("status", "tocancel", "--json", cwd=root, env=slurm.env())
    assert [t["status"] for t in json.loads(final.stdout)["tasks"]] == ["cancelled"] * 3
    # Nothing of the sweep is left in the queue.
    left = slurm.run(["squeue", "-h", "-r", "-j", arrays[0], "-o", "%i %T"]).stdout
    assert not [line for line in left.splitlines() if "PENDING" in line or "RUNNING" in line]
    assert "Status: CANCELLED" in (status.parent / "task_info.txt").read_text()


def test_killed_controller_resumes_without_running_anything_twice(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    root = cluster_project(tmp_path / "p", local_cluster(max_parallel_jobs=2))
    sweep_file(root, sleep=[3, 3, 1, 1, 1])
    with hsm_background(
        "run", "sweep.yaml", "--source", "cluster", "--name", "killed", cwd=root, env=slurm.env()
    ) as proc:
        first = run_dir(root, "killed") / "tasks" / "task_0001" / "status.json"
        wait_for(lambda: first.exists(), timeout=60, what="the first element started")
        proc.send_signal(signal.SIGKILL)  # no clean-up: handles stay in the database
        proc.wait()
    # Forget one job id, as if the controller had died between sbatch and recording it: the
    # resumed controller must find the element again instead of submitting it twice.
    with open_store(root) as store:
        [second] = store.task_attempts("killed", 2)
        store.attempt_launched(second.id, {}, confirmed=False)
    resumed = hsm("resume", "killed", "--json", cwd=root, env=slurm.env(), timeout=120)
    assert resumed.returncode == 0, resumed
    tasks = tasks_by_number(resumed)
    assert all(t["status"] == "completed" and t["attempts"] == 1 for t in tasks.values())
    assert [starts(root, "killed", n) for n in range(1, 6)] == [1] * 5
    assert [a.state for a in attempts(root, "killed")] == [AttemptState.COMPLETED] * 5
    assert (
        "task 2 (attempt 1) found again as job" in (run_dir(root, "killed") / "hsm.log").read_text()
    )


def test_a_rejected_job_script_stops_the_run_before_anything_is_written(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    root = cluster_project(tmp_path / "p", local_cluster(partition="nosuchpartition"))
    sweep_file(root, sleep=[0])
    before = slurm.run(["squeue", "-h", "-t", "all", "-o", "%i"]).stdout
    result = hsm("run", "sweep.yaml", "--source", "cluster", cwd=root, env=slurm.env())
    assert result.returncode == 2, result
    assert "invalid partition specified: nosuchpartition" in result.stderr
    assert "distributed.remotes.cluster" in result.stderr
    assert not (root / "runs").exists() and not (root / ".hsm").exists()
    assert slurm.run(["squeue", "-h", "-t", "all", "-o", "%i"]).stdout == before
    # Resources the node cannot give are the scheduler's to refuse, with its own message.
    cluster_project(root, local_cluster())
    sweep_file(root, sleep=[0], resources={"cpus": 4096})
    result = hsm("run", "sweep.yaml", "--source", "cluster", cwd=root, env=slurm.env())
    assert result.returncode == 2, result
    assert "Requested node configuration is not available" in result.stderr


def test_missing_scheduler_commands(slurm: SlurmCluster, tmp_path: Path) -> None:
    root = cluster_project(tmp_path / "p", local_cluster())
    sweep_file(root, sleep=[0])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "df", "tail"):
        (bin_dir / tool).symlink_to(f"/usr/bin/{tool}")
    result = hsm(
        "run",
        "sweep.yaml",
        "--source",
        "cluster",
        cwd=root,
        env={**slurm.env(), "PATH": str(bin_dir)},
    )
    assert result.returncode == 2, result
    assert "sbatch, squeue, scontrol, scancel not found" in result.stderr
    assert not (root / "runs").exists()


def test_walltime_in_a_wrong_format(tmp_path: Path) -> None:
    root = cluster_project(tmp_path / "p", local_cluster())
    sweep_file(root, sleep=[0], resources={"walltime": "2h"})
    result = hsm("run", "sweep.yaml", "--source", "cluster", cwd=root)
    assert result.returncode == 2, result
    assert "resources.walltime" in result.stderr and "HH:MM:SS" in result.stderr


def _probe(root: Path, env: dict[str, str]) -> Any:
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        source = build_sources(load_config(None, root), ["cluster"], parallel=None)["cluster"]
        assert isinstance(source, QueueSource)
        return asyncio.run(source.probe())
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_health_probe_and_a_dead_controller(slurm: SlurmCluster, tmp_path: Path) -> None:
    root = cluster_project(tmp_path / "p", local_cluster())
    sample = _probe(root, slurm.env())
    assert sample.reachable, sample
    assert sample.extra["controller"] == "up"
    assert sample.extra["partitions"]["debug"]["available"] == "up"
    assert sample.extra["usable_nodes"] == 1
    assert set(sample.extra["queue"]) == {"pending", "running"}
    assert sample.free_bytes and sample.total_bytes
    slurm.stop_controller()
    try:
        began = time.monotonic()
        sample = _probe(root, slurm.env())
        assert time.monotonic() - began < 5  # `scontrol ping` fails fast
        assert not sample.reachable
        assert sample.extra["controller"] == "down"
        assert "does not answer" in (sample.error or "")
        assert sample.free_bytes  # the work folder's disk is still reported
    finally:
        slurm.start_controller()
        slurm.wait_node_ready()


@pytest.mark.timeout(420)
def test_timeouts_rerun_with_a_longer_walltime_keep_their_numbers(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    # Task 1 needs two minutes; with a one-minute walltime Slurm stops it (TIMEOUT).
    root = cluster_project(tmp_path / "p", local_cluster(max_parallel_jobs=2))
    sweep_file(root, sleep=[120, 0], resources={"walltime": 1, "mem": "100M"})
    first = hsm(
        "run",
        "sweep.yaml",
        "--source",
        "cluster",
        "--name",
        "short",
        "--json",
        cwd=root,
        env=slurm.env(),
        timeout=240,
    )
    assert first.returncode == 1, first
    tasks = tasks_by_number(first)
    assert {n: (t["status"], t["cause"]) for n, t in tasks.items()} == {
        1: ("failed", "timeout"),
        2: ("completed", "completed"),
    }
    assert "1 of them hit the walltime" in first.stderr
    assert "hsm resume short --retry-failed --cause timeout --walltime" in first.stderr
    [array] = submitted_arrays(root, "short")
    assert sorted(slurm.job_states(array)) == ["COMPLETED", "TIMEOUT"]
    table = hsm("status", "short", cwd=root, env=slurm.env()).stdout
    head, row = [line for line in table.splitlines() if "completed" in line or "│" in line][:2]
    cells = dict(
        zip(
            [c.strip() for c in head.strip("┃ ").split("┃")],
            [c.strip() for c in row.strip("│ ").split("│")],
            strict=True,
        )
    )
    assert (cells["failed"], cells["timed out"], cells["completed"]) == ("0", "1", "1"), table

    rerun = hsm(
        "resume",
        "short",
        "--retry-failed",
        "--cause",
        "timeout",
        "--walltime",
        "00:05:00",
        "--json",
        cwd=root,
        env=slurm.env(),
        timeout=300,
    )
    assert rerun.returncode == 0, rerun
    tasks = tasks_by_number(rerun)
    assert {n: (t["status"], t["attempts"]) for n, t in tasks.items()} == {
        1: ("completed", 2),
        2: ("completed", 1),
    }
    assert tasks[1]["task_dir"].endswith("task_0001")
    rows = sorted(attempts(root, "short"), key=lambda a: (a.number, a.attempt))
    assert [(a.number, a.state, a.cause) for a in rows] == [
        (1, AttemptState.FAILED, "timeout"),
        (1, AttemptState.COMPLETED, "completed"),
        (2, AttemptState.COMPLETED, "completed"),
    ]
    _, again = submitted_arrays(root, "short")
    assert slurm.job_states(again) == ["COMPLETED"]
    scripts = sorted(
        run_dir(root, "short").joinpath(".hsm", "jobs").iterdir(), key=lambda p: p.stat().st_mtime
    )
    assert "#SBATCH --time=00:01:00" in scripts[0].read_text()
    assert "#SBATCH --time=00:05:00" in scripts[-1].read_text()
    # The change is in the state, and status shows it.
    status = hsm("status", "short", cwd=root, env=slurm.env())
    assert status.returncode == 0, status
    assert "rerun " in status.stdout and "failed tasks (timeout)" in status.stdout
    assert "walltime=00:05:00" in status.stdout


CHECKPOINT_TASK = """\
import os, signal, sys, time
folder = os.environ["HSM_TASK_DIR"]
ckpt = os.path.join(folder, "checkpoint")
if os.path.exists(ckpt):
    print("resumed from", open(ckpt).read())
    sys.exit(0)
def save(sig, frame):
    open(ckpt, "w").write(signal.Signals(sig).name)
signal.signal(signal.SIGUSR1, save)
time.sleep(300)  # until the walltime
"""


@pytest.mark.timeout(420)
def test_a_checkpointed_task_resumes_in_its_folder_after_its_walltime(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    # Slurm sends USR1 before the walltime (resources.signal); the wrapper passes it on, the
    # task checkpoints into its folder, and Slurm ends it at the walltime (TIMEOUT). The retry
    # goes back to the same cluster and the same folder, and resumes from the checkpoint.
    root = cluster_project(tmp_path / "p", local_cluster(), max_retries=1)
    (root / "ckpt.py").write_text(CHECKPOINT_TASK)
    (root / "sweep.yaml").write_text(
        json.dumps(
            {
                "command": ["python3", "ckpt.py"],
                "sweep": {"grid": {"x": [1]}},
                "output_dir_arg": None,
                "wandb_group_arg": None,
                "resources": {"walltime": 1, "mem": "100M", "signal": "USR1@50"},
            }
        )
    )
    result = hsm(
        "run", "sweep.yaml", "--source", "cluster", "--name", "ckpt", "--json",
        cwd=root, env=slurm.env(), timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, outputs(root)
    [task] = tasks_by_number(result).values()
    assert (task["status"], task["attempts"]) == ("completed", 2)
    assert [(a.state, a.cause) for a in attempts(root, "ckpt")] == [
        ("failed", "timeout"),
        ("completed", "completed"),
    ]
    folder = Path(task["task_dir"])
    assert (folder / "checkpoint").read_text() == "SIGUSR1"
    assert (folder / "stdout.log").read_text().strip().endswith("resumed from SIGUSR1")
    info = (folder / "task_info.txt").read_text()
    assert "Signal USR1 passed to the task at " in info and "Attempt: 2" in info
    [script, *_] = run_dir(root, "ckpt").joinpath(".hsm", "jobs").iterdir()
    assert "#SBATCH --signal=B:USR1@50" in script.read_text()
