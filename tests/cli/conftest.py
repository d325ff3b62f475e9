"""Fixtures of the CLI tests: fresh project folders, and one with a finished sweep."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hsmcli import hsm, make_project

SIMPLE_SWEEP = """\
command: [bash, task.sh]
sweep:
  grid:
    a: [1, 2, 3]
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with the test config and task.sh, and no sweep file yet."""
    return make_project(tmp_path / "project")


@pytest.fixture(scope="module")
def history_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project in which the sweep ``done`` (3 tasks) has completed."""
    root = make_project(tmp_path_factory.mktemp("history") / "project", sweep=SIMPLE_SWEEP)
    result = hsm("run", "sweeps/sweep.yaml", "--name", "done", cwd=root)
    assert result.returncode == 0, result
    return root


@pytest.fixture(scope="module")
def failed_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project in which the sweep ``f1`` (3 tasks) has finished with task 2 failed."""
    root = make_project(tmp_path_factory.mktemp("failed") / "project", sweep=SIMPLE_SWEEP)
    (root / "broken").touch()
    result = hsm("run", "sweeps/sweep.yaml", "--name", "f1", cwd=root)
    assert result.returncode == 1, result
    return root
