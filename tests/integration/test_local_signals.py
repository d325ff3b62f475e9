"""hsm interrupted (Ctrl-C) or killed outright (SIGKILL) mid-sweep, then ``hsm resume``:
every task tree is stopped on Ctrl-C, and after a crash every task completes exactly once."""

from __future__ import annotations

import json
import random
import signal
import time
from functools import partial
from pathlib import Path

import pytest

from tests.hsmcli import hsm, hsm_background, make_project, outputs, pid_alive, wait_for, write

pytestmark = pytest.mark.timeout(120)


def test_ctrl_c_stops_every_task_tree_exits_130_and_resume_finishes(tmp_path: Path) -> None:
    project = make_project(
        tmp_path / "p",
        sweep="""\
        command: [bash, task.sh]
        sweep:
          grid:
            a: [1, 3, 4]
        defaults: {hold: 1}
        """,
    )
    tasks = project / "runs" / "i1" / "tasks"
    with hsm_background(
        "run", "sweeps/sweep.yaml", "--name", "i1", cwd=project, env={"GRANDCHILD": "1"}
    ) as run:
        wait_for(lambda: len(list(tasks.glob("task_*/marker"))) == 2, what="2 tasks started")
        pgids = []
        for status_file in sorted(tasks.glob("task_*/status.json")):
            pgid = wait_for(partial(_pgid, status_file), what="the task's process group")
            pgids.append(pgid)
        assert len(pgids) == 2
        assert all(_group_alive(g) for g in pgids)
        assert len({_group_of(run.pid), *pgids}) == 3  # each task in a group of its own
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=30) == 130
    _, stderr = outputs(project)
    assert "hsm resume i1" in stderr and "Traceback" not in stderr
    for pgid in pgids:
        wait_for(partial(_group_gone, pgid), timeout=5, what=f"group {pgid} gone")
    data = hsm("status", "i1", "--json", cwd=project).json()
    assert data["state"] == "cancelled"
    assert data["counts"] == {
        "completed": 0,
        "failed": 0,
        "pending": 3,
        "running": 0,
        "cancelled": 0,
    }

    (project / "release").touch()
    resumed = hsm("resume", "i1", "--json", cwd=project)
    assert resumed.returncode == 0, resumed
    after = resumed.json()
    assert after["state"] == "completed" and after["counts"]["completed"] == 3
    assert [t["attempts"] for t in after["tasks"]] == [2, 2, 1]


def _pgid(status_file: Path) -> int | None:
    try:
        pgid = json.loads(status_file.read_text()).get("pgid")
    except (OSError, ValueError):
        return None
    return pgid if isinstance(pgid, int) else None


def _group_gone(pgid: int) -> bool:
    return not _group_alive(pgid)


def _group_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[2])


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and pid_alive(int(entry.name)):
            try:
                if _group_of(int(entry.name)) == pgid:
                    return True
            except (OSError, ValueError):
                continue
    return False


MARK_SH = r"""
echo "attempt=$HSM_ATTEMPT pid=$$" >> "$HSM_TASK_DIR/marker"
for arg in "$@"; do
    case "$arg" in i=*) i="${arg#i=}" ;; esac
done
if [ "$i" = 1 ]; then sleep 2.5; else sleep "0.$(( (i * 37) % 5 + 1 ))"; fi
"""
TASKS = 10


def wrapper_status(task_dir: Path) -> str | None:
    try:
        value = json.loads((task_dir / "status.json").read_text()).get("status")
    except (OSError, ValueError):
        return None
    return value if isinstance(value, str) else None


def completed(task_dir: Path) -> bool:
    return wrapper_status(task_dir) == "completed"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_then_resume_runs_every_task_exactly_once(tmp_path: Path, seed: int) -> None:
    """Task 1 runs 2.5 s: it still runs when hsm resumes (reattached, waited for). Tasks
    that were running when hsm was killed finish before it resumes (not run again)."""
    rng = random.Random(seed)
    project = make_project(
        tmp_path / "p",
        sweep=f"""\
        command: [bash, mark.sh]
        sweep:
          grid:
            i: {list(range(1, TASKS + 1))}
        """,
    )
    write(project / "mark.sh", MARK_SH)
    tasks = project / "runs" / "k" / "tasks"
    # Kill when a random number of tasks has started, after a random extra moment.
    started_before_kill = rng.randint(1, 6)
    with hsm_background(
        "run", "sweeps/sweep.yaml", "--parallel", "3", "--name", "k", cwd=project
    ) as run:
        wait_for(
            lambda: len(list(tasks.glob("task_*/marker"))) >= started_before_kill,
            what=f"{started_before_kill} tasks started",
        )
        time.sleep(rng.uniform(0, 0.3))
        run.send_signal(signal.SIGKILL)
        assert run.wait(timeout=10) == -signal.SIGKILL
    status = hsm("status", "k", "--json", cwd=project)
    assert status.returncode == 0, status
    killed = status.json()
    assert killed["state"] == "running"  # nobody recorded the end: hsm was killed
    running = [t["number"] for t in killed["tasks"] if t["status"] == "running"]
    assert 1 in running
    text = hsm("status", "k", cwd=project)
    assert "no hsm process drives this sweep" in text.stdout and "hsm resume k" in text.stdout
    # The other tasks that were running finish while no hsm process watches them.
    for number in running[1:]:
        task_dir = tasks / f"task_{number:04d}"
        if wrapper_status(task_dir) is not None:  # its wrapper had started
            wait_for(partial(completed, task_dir), what=f"task {number} finished")
    assert wrapper_status(tasks / "task_0001") == "running"

    resumed = hsm("resume", "k", "--json", cwd=project)
    assert resumed.returncode == 0, resumed
    assert "reattached task 1 (attempt 1)" in resumed.stderr
    data = resumed.json()
    assert data["state"] == "completed" and data["counts"]["completed"] == TASKS
    assert [t["attempts"] for t in data["tasks"]] == [1] * TASKS
    markers = sorted(tasks.glob("task_*/marker"))
    assert len(markers) == TASKS
    for marker in markers:
        lines = marker.read_text().splitlines()
        assert len(lines) == 1 and lines[0].startswith("attempt=1 "), (marker, lines)
