"""Sweeps on this machine through the real ``hsm`` command: slots, GPU pinning, and
``hsm status`` while a sweep runs."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hsm.engine.service import open_project, plan_run, start_run
from hsm.state import Store
from hsm.states import AttemptState, Cause, SweepState, TaskStatus
from tests.hsmcli import (
    HSM,
    TEST_CONFIG,
    attempts,
    hsm,
    hsm_background,
    hsm_env,
    make_project,
    open_store,
    wait_for,
    write,
)

pytestmark = pytest.mark.timeout(90)


def intervals(tasks: Path) -> dict[int, tuple[float, float]]:
    """(start, end) of every task, from the marker lines task.sh writes."""
    out = {}
    for marker in sorted(tasks.glob("task_*/marker")):
        stamps = dict(line.split() for line in marker.read_text().splitlines())
        out[int(marker.parent.name.split("_")[1])] = (float(stamps["start"]), float(stamps["done"]))
    return out


def max_overlap(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    best = current = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best


def overlapping(spans: dict[int, tuple[float, float]]) -> list[tuple[int, int]]:
    return [
        (a, b)
        for a, b in itertools.combinations(spans, 2)
        if spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]
    ]


def test_parallel_slots_are_honoured(tmp_path: Path) -> None:
    project = make_project(
        tmp_path / "p",
        sweep="""\
        command: [bash, task.sh]
        sweep:
          grid:
            a: [1, 3, 4, 5, 6, 7]
        defaults: {sleep: 0.3}
        """,
    )
    result = hsm("run", "sweeps/sweep.yaml", "--parallel", "2", "--name", "par", cwd=project)
    assert result.returncode == 0, result
    spans = intervals(project / "runs" / "par" / "tasks")
    assert len(spans) == 6
    # Never more than 2 at once, and the 2 slots are used (6 x 0.3 s take about 0.9 s).
    assert max_overlap(list(spans.values())) == 2


def test_slots_follow_the_cpus_this_process_may_use(tmp_path: Path) -> None:
    # No max_parallel_jobs: the slot count is the CPUs of hsm's affinity (taskset, a Slurm
    # allocation), not the machine's, so under `taskset -c 0` tasks run one at a time.
    project = make_project(
        tmp_path / "p",
        config=TEST_CONFIG.replace("local:\n  max_parallel_jobs: 2\n", ""),
        sweep="""\
        command: [bash, task.sh]
        sweep:
          grid:
            a: [1, 3, 4, 5]
        defaults: {sleep: 0.3}
        """,
    )
    assert "max_parallel_jobs" not in (project / "hsm_config.yaml").read_text()
    result = subprocess.run(
        ["taskset", "-c", "0", *HSM, "run", "sweeps/sweep.yaml", "--name", "one"],
        cwd=project,
        env=hsm_env(),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    spans = intervals(project / "runs" / "one" / "tasks")
    assert len(spans) == 4 and max_overlap(list(spans.values())) == 1, spans


def test_gpu_allowlist_is_split_into_disjoint_groups(tmp_path: Path) -> None:
    """No GPU is needed: this checks which CUDA_VISIBLE_DEVICES each task is given."""
    config = TEST_CONFIG.replace(
        "max_parallel_jobs: 2", "max_parallel_jobs: 4\n  gpus: [0, 1, 2, 3]"
    )
    project = make_project(
        tmp_path / "p",
        config=config,
        sweep="""\
        command: [bash, task.sh]
        sweep:
          grid:
            a: [1, 3, 4, 5, 6]
        defaults: {sleep: 0.3}
        resources: {gpus: 2}
        """,
    )
    result = hsm("run", "sweeps/sweep.yaml", "--name", "g", cwd=project)
    assert result.returncode == 0, result
    tasks = project / "runs" / "g" / "tasks"
    spans = intervals(tasks)
    devices = {n: visible_devices(tasks / f"task_{n:04d}") for n in spans}
    assert set(devices.values()) == {"0,1", "2,3"}
    assert max_overlap(list(spans.values())) == 2  # 4 GPUs / 2 per task: 2 slots, not 4
    for a, b in overlapping(spans):
        assert devices[a] != devices[b], (a, b, devices)
    info = (tasks / "task_0001" / "task_info.txt").read_text()
    assert f"CUDA_VISIBLE_DEVICES={devices[1]}" in info


def test_gpus_all_asks_nvidia_smi(tmp_path: Path) -> None:
    fake = write(
        tmp_path / "bin" / "nvidia-smi",
        """\
        #!/bin/sh
        # Stands in for nvidia-smi --query-gpu=index --format=csv,noheader
        printf '0\\n1\\n2\\n'
        """,
    )
    fake.chmod(0o755)
    config = TEST_CONFIG.replace("max_parallel_jobs: 2", "max_parallel_jobs: 8\n  gpus: all")
    project = make_project(
        tmp_path / "p",
        config=config,
        sweep="""\
        command: [bash, task.sh]
        sweep:
          grid:
            a: [1, 3, 4, 5]
        defaults: {sleep: 0.3}
        resources: {gpus: 1}
        """,
    )
    env = {"PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    result = hsm("run", "sweeps/sweep.yaml", "--name", "g", cwd=project, env=env)
    assert result.returncode == 0, result
    tasks = project / "runs" / "g" / "tasks"
    spans = intervals(tasks)
    devices = {n: visible_devices(tasks / f"task_{n:04d}") for n in spans}
    assert set(devices.values()) <= {"0", "1", "2"}
    assert max_overlap(list(spans.values())) == 3
    for a, b in overlapping(spans):
        assert devices[a] != devices[b], (a, b, devices)


def visible_devices(task_dir: Path) -> str:
    env = dict(line.split("=", 1) for line in (task_dir / "env.txt").read_text().splitlines())
    return env["CUDA_VISIBLE_DEVICES"]


def test_status_reads_the_state_while_a_sweep_runs(tmp_path: Path) -> None:
    project = make_project(
        tmp_path / "p",
        sweep="""\
        command: [bash, task.sh]
        sweep:
          grid:
            a: [1, 3, 4, 5]
        defaults: {hold: 1}
        """,
    )
    with hsm_background("run", "sweeps/sweep.yaml", "--name", "live", cwd=project) as run:
        tasks = project / "runs" / "live" / "tasks"
        wait_for(lambda: len(list(tasks.glob("task_*/marker"))) == 2, what="2 tasks running")
        status = hsm("status", "live", "--json", cwd=project)
        assert status.returncode == 0, status
        data = status.json()
        assert data["state"] == "running"
        assert data["counts"] == {
            "completed": 0,
            "failed": 0,
            "pending": 2,
            "running": 2,
            "cancelled": 0,
        }
        assert [t["status"] for t in data["tasks"]] == ["running", "running", "pending", "pending"]
        text = hsm("status", cwd=project)
        assert text.returncode == 0 and "running" in text.stdout, text
        assert "no hsm process drives" not in text.stdout
        listed = hsm("list", "--json", cwd=project).json()["sweeps"]
        assert [(s["sweep_id"], s["state"]) for s in listed] == [("live", "running")]
        (project / "release").touch()
        assert run.wait(timeout=30) == 0
    final = hsm("status", "live", "--json", cwd=project).json()
    assert final["state"] == "completed" and final["counts"]["completed"] == 4


def test_an_internal_error_stops_the_sweep_without_calling_it_completed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the run loop ends the run with exit 3 and the state saved; resume finishes."""
    project = make_project(
        tmp_path / "p",
        sweep="""\
        command: [bash, task.sh]
        sweep:
          grid:
            a: [1, 3, 4, 5]
        """,
    )
    loaded = open_project(project / "hsm_config.yaml", cwd=project)
    plan = plan_run(loaded, project / "sweeps" / "sweep.yaml")
    real = Store.finish_attempt

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("injected fault")

    monkeypatch.setattr(Store, "finish_attempt", broken)
    outcome = start_run(loaded, plan, name="bug", command_line="test")
    assert (outcome.state, outcome.exit_code) == (SweepState.ABORTED, 3)
    assert outcome.message and "injected fault" in outcome.message
    assert "hsm resume bug" in outcome.message

    monkeypatch.setattr(Store, "finish_attempt", real)
    data = hsm("resume", "bug", "--json", cwd=project)
    assert data.returncode == 0, data
    assert data.json()["counts"]["completed"] == 4
    assert [t["attempts"] for t in data.json()["tasks"]] == [1, 1, 1, 1]


def test_a_task_left_running_with_no_attempt_that_runs_is_run_again(tmp_path: Path) -> None:
    # A state the engine must never leave, made by hand: a task recorded running whose only
    # attempt is over (lost). Nothing could end it, so a resume queues it again, and the
    # sweep ends only when every task has.
    project = make_project(
        tmp_path / "p",
        sweep="command: [bash, task.sh]\nsweep:\n  grid:\n    a: [1, 2, 3]\n",
    )
    first = hsm("run", "sweeps/sweep.yaml", "--name", "stuck", cwd=project)
    assert first.returncode == 0, first
    with open_store(project) as store:
        attempt = store.begin_attempt("stuck", 2, source="local", slot=0)
        store.finish_attempt(
            attempt,
            state=AttemptState.LOST,
            cause=Cause.LOST,
            exit_code=None,
            task_status=TaskStatus.RUNNING,
        )
        store.set_sweep_state("stuck", SweepState.RUNNING)
    resumed = hsm("resume", "stuck", "--json", cwd=project)
    assert resumed.returncode == 0, resumed
    assert "task 2 was recorded running with no attempt that runs: queued again" in resumed.stderr
    counts = json.loads(resumed.stdout)["counts"]
    assert counts == {"completed": 3, "failed": 0, "pending": 0, "running": 0, "cancelled": 0}
    [*_, last] = [a for a in attempts(project, "stuck") if a.number == 2]
    assert (last.attempt, last.state) == (3, AttemptState.COMPLETED)
