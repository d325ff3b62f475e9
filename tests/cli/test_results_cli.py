"""``hsm results`` and the library API (``hsm.run``, ``hsm.results``) on real sweeps."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

import hsm as hsm_lib
from tests.hsmcli import hsm, hsm_background, hsm_env, outputs, wait_for, write

pytestmark = pytest.mark.timeout(90)

TASK = """\
#!/bin/bash
a=${1#a=}
echo "progress, not JSON"
echo "{\\"loss\\": $((10 - a)), \\"acc\\": 0.$a}"
echo "a log line after the metrics"
[ "$a" = 3 ] && { echo "bad a" >&2; exit 4; }
[ "$a" = 4 ] && { while [ ! -e "$HSM_TASK_DIR/../../go" ]; do sleep 0.05; done; }
exit 0
"""

SWEEP = """\
command: [bash, metrics.sh]
sweep:
  grid: {a: [1, 2, 3]}
output_dir_arg: null
wandb_group_arg: null
"""


@pytest.fixture
def finished(project: Path) -> Path:
    write(project / "metrics.sh", TASK)
    write(project / "sweeps" / "sweep.yaml", SWEEP)
    result = hsm("run", "sweeps/sweep.yaml", "--name", "m", cwd=project)
    assert result.returncode == 1, result
    # Task 2 also writes metrics.json, which wins over its stdout line.
    task2 = project / "runs" / "m" / "tasks" / "task_0002"
    (task2 / "metrics.json").write_text(json.dumps({"loss": 0.25, "eval": {"f1": 0.9}}))
    return project


def test_csv_json_and_table_of_the_latest_sweep(finished: Path) -> None:
    out = hsm("results", "--format", "csv", cwd=finished)
    assert out.returncode == 0, out
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert list(rows[0]) == [
        "number",
        "status",
        "cause",
        "source",
        "duration",
        "a",
        "loss",
        "acc",
        "eval.f1",
    ]
    assert [(r["number"], r["status"], r["cause"], r["loss"]) for r in rows] == [
        ("1", "completed", "completed", "9"),
        ("2", "completed", "completed", "0.25"),
        ("3", "failed", "task_failed", "7"),
    ]
    assert rows[1]["eval.f1"] == "0.9" and rows[1]["acc"] == ""
    assert all(float(r["duration"]) >= 0 for r in rows)

    js = hsm("results", "m", "--format", "json", "--sort", "-loss", "--where", "a>=2", cwd=finished)
    assert js.returncode == 0, js
    data = json.loads(js.stdout)
    assert data["hsm_json"] == 1 and data["sweep_id"] == "m"
    assert [r["number"] for r in data["rows"]] == [3, 2]
    assert data["rows"][0]["a"] == 3 and data["rows"][0]["loss"] == 7

    table = hsm("results", "--where", "status=completed", "--sort", "loss", cwd=finished)
    assert table.returncode == 0, table
    assert "results of m (2 tasks)" in table.stdout and "eval.f1" in table.stdout
    # Piped, the table is never squeezed into 80 columns: every value is whole.
    wide = hsm("results", "--where", "status=completed", cwd=finished, env={"COLUMNS": "40"})
    assert all(word in wide.stdout for word in ("completed", "local", "eval.f1", "0.25"))
    assert "…" not in wide.stdout

    target = finished / "out.csv"
    wrote = hsm("results", "--format", "csv", "-o", target, cwd=finished)
    assert wrote.returncode == 0 and wrote.stdout == "", wrote
    assert target.read_text() == out.stdout


def test_parquet_output_is_a_table_of_the_rows(finished: Path) -> None:
    import pandas

    target = finished / "r.parquet"
    result = hsm("results", "--format", "parquet", "-o", target, cwd=finished)
    assert result.returncode == 0, result
    assert target.read_bytes()[:4] == b"PAR1"
    frame = pandas.read_parquet(target)
    assert list(frame["number"]) == [1, 2, 3]
    assert list(frame["status"]) == ["completed", "completed", "failed"]


def test_parquet_without_pyarrow_exits_2_and_writes_nothing(finished: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "no-pyarrow" / "pyarrow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('pyarrow is not installed')\n")
    target = finished / "r.parquet"
    result = hsm(
        "results",
        "--format",
        "parquet",
        "-o",
        target,
        cwd=finished,
        env={"PYTHONPATH": str(blocker.parent)},
    )
    assert result.returncode == 2, result
    assert "needs pyarrow" in result.stderr and "hsm[parquet]" in result.stderr
    assert "Traceback" not in result.stderr
    assert not target.exists()


def test_the_library_returns_rows_and_runs_sweeps(finished: Path) -> None:
    rows = hsm_lib.results("m", cwd=finished, as_frame=False)
    assert [(r.number, r.status, r.metrics.get("loss")) for r in rows] == [
        (1, "completed", 9),
        (2, "completed", 0.25),
        (3, "failed", 7),
    ]
    assert rows[0].params == {"a": 1} and rows[0].source == "local"
    frame = hsm_lib.results(cwd=finished)  # pandas is installed: a DataFrame
    assert list(frame["number"]) == [1, 2, 3]
    assert list(frame["loss"]) == [9, 0.25, 7]

    write(finished / "sweeps" / "ok.yaml", SWEEP.replace("[1, 2, 3]", "[1, 2]"))
    outcome = hsm_lib.run("sweeps/ok.yaml", name="lib", cwd=finished)
    assert isinstance(outcome, hsm_lib.RunResult)
    assert (outcome.sweep_id, outcome.state, outcome.exit_code) == ("lib", "completed", 0)
    assert outcome.counts["completed"] == 2
    latest = hsm_lib.results(cwd=finished, as_frame=False, where=["loss<9"])
    assert [r.number for r in latest] == [2]


def test_results_while_the_sweep_runs(project: Path) -> None:
    write(project / "metrics.sh", TASK)
    write(project / "sweeps" / "sweep.yaml", SWEEP.replace("[1, 2, 3]", "[1, 4]"))
    with hsm_background("run", "sweeps/sweep.yaml", "--name", "live", cwd=project) as proc:

        def first_done() -> list[dict[str, object]] | None:
            out = hsm("results", "live", "--format", "json", cwd=project)
            if out.returncode != 0:  # the sweep is not recorded yet
                return None
            rows: list[dict[str, object]] = json.loads(out.stdout)["rows"]
            return rows if rows[0]["status"] == "completed" else None

        rows = wait_for(first_done, what="task 1 to complete")
        assert rows[0]["loss"] == 9
        assert rows[1]["status"] == "running" and "loss" not in rows[1]
        (project / "runs" / "live" / "go").touch()
        assert proc.wait(timeout=60) == 0, outputs(project)


def test_the_library_prints_nothing(finished: Path) -> None:
    script = (
        "import hsm\n"
        "r = hsm.run('sweeps/sweep.yaml', name='quiet', cwd='.')\n"
        "assert r.exit_code == 1 and r.counts['failed'] == 1, r\n"
        "rows = hsm.results('quiet', as_frame=False)\n"
        "assert [x.status for x in rows] == ['completed', 'completed', 'failed']\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=finished,
        capture_output=True,
        text=True,
        timeout=60,
        env=hsm_env(),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""
