"""What can be known up front is said up front, and what fails says why: the real CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.hsmcli import HSM, hsm, hsm_env, make_project, snapshot, write

pytestmark = pytest.mark.timeout(90)


def test_a_failed_task_line_shows_the_end_of_its_stderr(project: Path) -> None:
    write(
        project / "sweeps" / "sweep.yaml",
        """\
        command: [bash, -c, 'echo "first words" >&2; echo "boom $0" >&2; exit 3']
        sweep:
          grid: {a: [1]}
        output_dir_arg: null
        wandb_group_arg: null
        """,
    )
    result = hsm("run", "sweeps/sweep.yaml", "--name", "f", cwd=project)
    assert result.returncode == 1, result
    log = project.resolve() / "runs" / "f" / "tasks" / "task_0001" / "stderr.log"
    lines = result.stderr.splitlines()
    at = next(i for i, line in enumerate(lines) if "task 1 failed on local" in line)
    assert " ERROR task 1 failed on local: task_failed (exit code 3); the end of " in lines[at]
    assert str(log) in lines[at]
    assert lines[at + 1 : at + 3] == ["    first words", "    boom a=1"]
    assert "exit code None" not in result.stderr


def test_json_is_strict_for_nan_and_infinity(project: Path) -> None:
    write(
        project / "sweeps" / "sweep.yaml",
        """\
        command: [bash, task.sh]
        sweep:
          grid: {a: [.nan, .inf, -.inf, 1.5]}
        """,
    )
    dry = hsm("run", "sweeps/sweep.yaml", "--dry-run", "--json", cwd=project)
    assert dry.returncode == 0, dry
    run = hsm("run", "sweeps/sweep.yaml", "--json", "--name", "n", cwd=project)
    assert run.returncode == 0, run
    status = hsm("status", "n", "--json", cwd=project)
    for text in (run.stdout, status.stdout):
        data = json.loads(text, parse_constant=_refuse)
        assert [t["params"]["a"] for t in data["tasks"]] == ["NaN", "Infinity", "-Infinity", 1.5]


def _refuse(name: str) -> None:
    raise AssertionError(f"bare {name} in JSON output")


def test_a_reader_that_closes_the_pipe_early_is_no_failure(project: Path) -> None:
    write(
        project / "sweeps" / "sweep.yaml",
        """\
        command: [bash, task.sh]
        sweep:
          grid: {a: [{n}]}
        """.replace("{n}", ", ".join(str(i) for i in range(20000))),
    )
    before = snapshot(project)
    for extra in ([], ["--json"]):
        cmd = [*HSM, "run", "sweeps/sweep.yaml", "--dry-run", *extra]
        proc = subprocess.Popen(
            cmd,
            cwd=project,
            env=hsm_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()
        proc.stdout.close()  # what `| head -1` does
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 0, err
        assert b"Traceback" not in err and b"Broken pipe" not in err and not err, err
    assert snapshot(project) == before


@pytest.mark.parametrize(
    ("kind", "directive"),
    [("slurm", "#SBATCH --time=01:00:00"), ("pbs", "#PBS -l walltime=01:00:00")],
)
def test_a_cluster_dry_run_prints_the_job_script_and_keeps_a_copy(
    tmp_path: Path, kind: str, directive: str
) -> None:
    # Nothing is asked of the cluster: the script is rendered offline (no scheduler needed).
    project = make_project(
        tmp_path / "p",
        config=f"""\
        distributed:
          remotes:
            c: {{type: {kind}, host: local}}
        """,
        sweep="""\
        command: [bash, task.sh]
        sweep:
          grid: {a: [1, 2, 3]}
        resources: {cpus: 2, walltime: "01:00:00"}
        """,
    )
    result = hsm(
        "run", "sweeps/sweep.yaml", "--dry-run", "--source", "c", "--name", "x", cwd=project
    )
    assert result.returncode == 0, result
    copy = project.resolve() / "runs" / ".dry-run" / "x" / "c.sh"
    script = copy.read_text()
    assert f"# the job script of source c (a copy is in {copy}):\n{script}" in result.stdout
    assert script.startswith("#!/bin/bash\n") and directive in script
    assert "tasks/task_0001 tasks/task_0002 tasks/task_0003" in script
    assert not (project / ".hsm").exists() and not (project / "runs" / "x").exists()
    as_json = hsm("run", "sweeps/sweep.yaml", "--dry-run", "--source", "c", "--json", cwd=project)
    assert as_json.returncode == 0, as_json
    scripts = json.loads(as_json.stdout)["job_scripts"]
    assert directive in scripts["c"]["script"] and scripts["c"]["path"].endswith("/c.sh")
