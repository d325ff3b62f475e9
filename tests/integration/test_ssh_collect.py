"""Collecting a finished task's results is bounded: an archive hsm refuses to unpack (a link
out of the task folder) ends the attempt with ``collect_failed``, naming the remote folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hsmcli import hsm
from tests.integration.ssh_support import REMOTE_ROOT, make_project
from tests.testbed import Host

pytestmark = [pytest.mark.root, pytest.mark.testbed]

SWEEP = """
command: ["bash", "-c", "ln -s /etc \\"$TMPDIR/../evil\\"", "task"]
sweep:
  grid:
    i: [1]
output_dir_arg: null
wandb_group_arg: null
"""


def test_a_refused_archive_ends_the_attempt_collect_failed(
    tmp_path: Path, testbed_hosts: list[Host]
) -> None:
    host = testbed_hosts[0]
    root = make_project(
        tmp_path / "proj", [host], sweep=SWEEP, config={"distributed": {"max_retries": 0}}
    )
    result = hsm("run", "sweep.yaml", "--source", "h1", "--json", cwd=root)
    assert result.returncode == 1, result
    data = result.json()
    assert [t["cause"] for t in data["tasks"]] == ["collect_failed"]
    assert "collect_failed" in result.stderr and "links to the absolute path" in result.stderr
    assert f"{REMOTE_ROOT}/proj/sweeps/{data['sweep_id']}/h1/task_0001" in result.stderr
    assert not (Path(data["tasks"][0]["task_dir"]) / "evil").is_symlink()
