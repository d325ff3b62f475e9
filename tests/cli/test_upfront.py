"""What can be known up front is said up front, and what fails says why: the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hsmcli import hsm, write

pytestmark = pytest.mark.timeout(90)


def test_a_failed_task_line_shows_the_end_of_its_stderr(project: Path) -> None:
    write(project / "sweeps" / "sweep.yaml", """\
        command: [bash, -c, 'echo "first words" >&2; echo "boom $0" >&2; exit 3']
        sweep:
          grid: {a: [1]}
        output_dir_arg: null
        wandb_group_arg: null
        """)
    result = hsm("run", "sweeps/sweep.yaml", "--name", "f", cwd=project)
    assert result.returncode == 1, result
    log = project.resolve() / "runs" / "f" / "tasks" / "task_0001" / "stderr.log"
    lines = result.stderr.splitlines()
    at = next(i for i, line in enumerate(lines) if "task 1 failed on local" in line)
    assert " ERROR task 1 failed on local: task_failed (exit code 3); the end of " in lines[at]
    assert str(log) in lines[at]
    assert lines[at + 1:at + 3] == ["    first words", "    boom a=1"]
    assert "exit code None" not in result.stderr
