"""A PBS source against the PBS commands Slurm ships (``slurm-wlm-torque``: qsub, qstat and qdel
over the test-bed Slurm). There is no PBS server in Debian: this checks the PBS submission path
end to end (the rendered #PBS script, ``qsub -J``, job ids, ``qstat -f`` text) on a real
scheduler; the PBS Pro and Torque output formats are checked against recorded outputs in
tests/unit/test_scheduler_parsers.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.hsmcli import hsm
from tests.integration.cluster_support import (
    cancel_leftovers,
    cluster_project,
    max_overlap,
    run_intervals,
    submitted_arrays,
    sweep_file,
    tasks_by_number,
)
from tests.testbed import SlurmCluster, TestBed

pytestmark = [pytest.mark.root, pytest.mark.slurm]


@pytest.fixture
def slurm(testbed: TestBed, slurm_local: SlurmCluster) -> SlurmCluster:
    """The local cluster. (The test bed comes up first: its bring-up removes every leftover
    of its prefix, a running local cluster included.)"""
    return slurm_local


def test_pbs_array_through_slurm_s_pbs_commands(slurm: SlurmCluster, tmp_path: Path) -> None:
    assert shutil.which("qsub") and shutil.which("qstat") and shutil.which("qdel")
    root = cluster_project(
        tmp_path / "p", {"pbs": {"type": "pbs", "host": "local", "max_parallel_jobs": 1}}
    )
    sweep_file(
        root,
        sleep=[0.2] * 3,
        fail=[0, 4, 0],
        resources={"walltime": "00:10:00", "mem": "200M", "cpus": 1},
    )
    try:
        result = hsm(
            "run", "sweep.yaml", "--source", "pbs", "--json", cwd=root, env=slurm.env(), timeout=120
        )
    finally:
        cancel_leftovers(slurm, root)
    assert result.returncode == 1, result
    sweep_id = json.loads(result.stdout)["sweep_id"]
    tasks = tasks_by_number(result)
    assert {n: (t["status"], t["cause"], t["exit_code"]) for n, t in tasks.items()} == {
        1: ("completed", "completed", 0),
        2: ("failed", "task_failed", 4),
        3: ("completed", "completed", 0),
    }
    # One array job: qsub printed Slurm's job id, and Slurm ran three elements of it.
    [array] = submitted_arrays(root, sweep_id)
    assert array.isdigit()
    assert sorted(slurm.job_states(array)) == ["COMPLETED", "COMPLETED", "FAILED"]
    script = next((root / "runs" / sweep_id / ".hsm" / "jobs").iterdir()).read_text()
    assert "#PBS -l walltime=00:10:00" in script
    assert "#PBS -l select=1:ncpus=1:mem=200mb" in script
    # sbatch read the #PBS directives of the script.
    shown = slurm.run(["scontrol", "show", "job", array]).stdout
    assert "TimeLimit=00:10:00" in shown and "MinMemoryNode=200M" in shown
    # `qsub -J 1-3%1`: one element at a time.
    assert max_overlap(run_intervals(root, sweep_id, [1, 2, 3])) == 1
