"""The progress bar's ETA: none before a task finished, then close to the truth."""

from __future__ import annotations

from hsm.cli.render import EtaEstimator
from hsm.states import TaskStatus


def simulate(tasks: int, slots: int, duration: float) -> list[tuple[float, float, float | None]]:
    """(time, true time left, estimate) at each change of a sweep of equal tasks."""
    eta = EtaEstimator()
    out = []
    finished = 0
    now = 0.0
    end = -(-tasks // slots) * duration
    while finished < tasks:
        running = min(slots, tasks - finished)
        counts = {
            TaskStatus.COMPLETED: finished,
            TaskStatus.RUNNING: running,
            TaskStatus.PENDING: tasks - finished - running,
        }
        out.append((now, end - now, eta.observe(now, counts)))
        now += duration
        finished += running
    out.append((now, 0.0, eta.observe(now, {TaskStatus.COMPLETED: tasks})))
    return out


def test_no_estimate_until_a_task_has_finished() -> None:
    [(_, _, first), *_] = simulate(40, 4, 10.0)
    assert first is None


def test_the_estimate_is_sane_from_the_first_finished_task_on() -> None:
    steps = simulate(40, 4, 10.0)
    for now, truth, estimate in steps[1:-1]:
        assert estimate is not None
        assert truth / 2 <= estimate <= truth * 2, (now, truth, estimate)
    assert steps[-1][2] == 0.0


def test_a_cancelled_sweep_is_not_drawn_as_done() -> None:
    from rich.progress import Progress

    from hsm.cli.render import ProgressView

    view = ProgressView(live=False)
    view._progress = Progress()
    view._task = view._progress.add_task("sweep", total=None, detail="", finish_at=None)
    view.update({TaskStatus.COMPLETED: 1, TaskStatus.FAILED: 1, TaskStatus.CANCELLED: 8})
    task = view._progress.tasks[0]
    assert (task.completed, task.total) == (2, 10)
