"""Sweep designs through the real CLI: --count-only and --dry-run show the designed tasks,
and a run numbers them 1..N in that order."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hsmcli import hsm, snapshot, write

pytestmark = pytest.mark.timeout(90)

DESIGN = """\
command: [bash, task.sh]
sweep:
  grid: {a: [1, 2, 3], b: [x, y]}
  exclude: [{a: 2}, {a: 3, b: y}]
  include: [{a: 9, b: z}]
"""


def test_count_only_and_dry_run_show_the_design(project: Path) -> None:
    write(project / "sweeps" / "sweep.yaml", DESIGN)
    before = snapshot(project)
    count = hsm("run", "sweeps/sweep.yaml", "--count-only", cwd=project)
    assert (count.returncode, count.stdout) == (0, "4\n"), count
    dry = hsm("run", "sweeps/sweep.yaml", "--dry-run", "--json", "--name", "d", cwd=project)
    assert dry.returncode == 0, dry
    params = [argv[2:4] for argv in dry.json()["argv"]]
    assert params == [["a=1", "b=x"], ["a=1", "b=y"], ["a=3", "b=x"], ["a=9", "b=z"]]
    assert snapshot(project) == before


def test_a_random_design_runs_the_same_tasks_on_every_expansion(project: Path) -> None:
    write(
        project / "sweeps" / "sweep.yaml",
        """\
        command: [bash, task.sh]
        sweep:
          grid: {a: [1, 2]}
          random: {n: 2, seed: 4, params: {lr: {loguniform: [1.0e-4, 1.0e-1]}}}
        """,
    )
    first = hsm("run", "sweeps/sweep.yaml", "--dry-run", "--json", "--name", "r", cwd=project)
    again = hsm("run", "sweeps/sweep.yaml", "--dry-run", "--json", "--name", "r", cwd=project)
    assert first.returncode == 0, first
    assert first.json()["argv"] == again.json()["argv"]
    run = hsm("run", "sweeps/sweep.yaml", "--json", "--name", "r", cwd=project)
    assert run.returncode == 0, run
    tasks = run.json()["tasks"]
    assert [t["number"] for t in tasks] == [1, 2, 3, 4]
    dry_params = [argv[2:4] for argv in first.json()["argv"]]
    assert [[f"{k}={v}" for k, v in t["params"].items()] for t in tasks] == dry_params
