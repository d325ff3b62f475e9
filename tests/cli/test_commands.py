"""The hsm commands end to end, as a user runs them: exit codes, output and JSON."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from hsm.spec.expand import iter_tasks
from hsm.spec.sweep import load_sweep
from tests.hsmcli import (
    hsm,
    hsm_background,
    make_project,
    outputs,
    pid_alive,
    snapshot,
    wait_for,
    write,
)

pytestmark = pytest.mark.timeout(90)

REPO = Path(__file__).resolve().parents[2]

RESULT_KEYS = {
    "hsm_json",
    "sweep_id",
    "sweep_dir",
    "state",
    "code_version",
    "total",
    "counts",
    "sources",
    "tasks",
}
COUNT_KEYS = {"completed", "failed", "pending", "running", "cancelled"}
SOURCE_KEYS = {"enabled", "disabled_reason", "submitted", "completed", "failed", "failure_rate"}
TASK_KEYS = {"number", "params", "status", "cause", "source", "attempts", "task_dir", "exit_code"}
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def sweep_file(project: Path, text: str, name: str = "sweep.yaml") -> Path:
    return write(project / "sweeps" / name, text)


def check_result_json(data: dict[str, Any]) -> None:
    """The JSON object of run, status ID and resume: exactly the keys of the contract."""
    assert set(data) == RESULT_KEYS and data["hsm_json"] == 1
    assert set(data["counts"]) == COUNT_KEYS
    assert data["state"] in {"running", "completed", "failed", "aborted", "cancelled"}
    assert data["total"] == sum(data["counts"].values()) == len(data["tasks"])
    for source in data["sources"].values():
        assert set(source) == SOURCE_KEYS
    for task in data["tasks"]:
        assert set(task) == TASK_KEYS


# -- init --------------------------------------------------------------------------------
def test_init_writes_a_project_that_runs_and_refuses_to_overwrite(tmp_path: Path) -> None:
    result = hsm("init", "proj", cwd=tmp_path)
    assert result.returncode == 0, result
    proj = tmp_path / "proj"
    for rel in ("hsm_config.yaml", "sweeps/sweep.yaml", "train.py"):
        assert (proj / rel).is_file(), rel
        assert f"wrote {Path('proj') / rel}" in result.stdout
    assert "hsm run sweeps/sweep.yaml" in result.stdout

    (proj / "hsm_config.yaml").write_text("# mine\n")
    before = snapshot(proj)
    again = hsm("init", "proj", cwd=tmp_path)
    assert again.returncode == 2, again
    assert "hsm_config.yaml" in again.stderr and "--force" in again.stderr
    assert snapshot(proj) == before

    forced = hsm("init", "proj", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced
    assert (proj / "hsm_config.yaml").read_text() != "# mine\n"

    # The scaffold is valid: every key of the config template is accepted, and the
    # sweep expands (3 seeds x 2 learning rates).
    count = hsm("run", "sweeps/sweep.yaml", "--count-only", cwd=proj)
    assert (count.returncode, count.stdout.strip()) == (0, "6"), count


# -- dry run and count -------------------------------------------------------------------
def test_dry_run_prints_the_exact_argv_of_every_task(project: Path) -> None:
    sweep_file(
        project,
        """\
        script: task.sh
        sweep:
          grid:
            seed: [1, 2]
            optimizer: {lr: [0.001]}
          paired:
            - {model.name: [small, "big one"], model.width: [128, 1024]}
        defaults: {steps: 5}
        """,
    )
    result = hsm("run", "sweeps/sweep.yaml", "--dry-run", "--json", "--name", "demo", cwd=project)
    assert result.returncode == 0, result
    data = result.json()
    assert data["hsm_json"] == 1
    assert data["total"] == 4 and data["sources"] == ["local"]
    assert data["argv"] == [
        [
            "python3",
            "task.sh",
            "seed=1",
            "optimizer.lr=0.001",
            "model.name=small",
            "model.width=128",
            "steps=5",
        ],
        [
            "python3",
            "task.sh",
            "seed=1",
            "optimizer.lr=0.001",
            "model.name='big one'",
            "model.width=1024",
            "steps=5",
        ],
        [
            "python3",
            "task.sh",
            "seed=2",
            "optimizer.lr=0.001",
            "model.name=small",
            "model.width=128",
            "steps=5",
        ],
        [
            "python3",
            "task.sh",
            "seed=2",
            "optimizer.lr=0.001",
            "model.name='big one'",
            "model.width=1024",
            "steps=5",
        ],
    ]
    text = hsm("run", "sweeps/sweep.yaml", "--dry-run", "--name", "demo", cwd=project)
    assert text.returncode == 0, text
    lines = text.stdout.splitlines()
    assert len(lines) == 4
    for number, line in enumerate(lines, start=1):
        prefix, command = line.split(" ", 1)
        assert prefix == f"[{number}]"
        assert shlex.split(command) == data["argv"][number - 1]
    assert not (project / "runs").exists() and not (project / ".hsm").exists()


def test_dry_run_of_the_example_sweep_matches_the_docs() -> None:
    """examples/sweeps/sweep.yaml: 12 tasks; the argv shown in docs/user-guide.md."""
    examples = REPO / "examples"
    before = snapshot(examples)
    result = hsm("run", "sweeps/sweep.yaml", "--dry-run", "--name", "demo", cwd=examples)
    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    assert len(lines) == 12
    assert lines[0] == (
        "[1] python3 train.py seed=1 optimizer.lr=0.001 model.name=small"
        " model.width=128 steps=5 step_time=0.05"
    )
    spec = load_sweep(examples / "sweeps" / "sweep.yaml", examples)
    params = list(iter_tasks(spec))
    assert params[-1] == {
        "seed": 3,
        "optimizer.lr": 0.01,
        "model.name": "large",
        "model.width": 1024,
        "steps": 5,
        "step_time": 0.05,
    }
    guide = (REPO / "docs" / "user-guide.md").read_text()
    assert lines[0].split(" ", 1)[1].replace(str(examples), "/home/me/project") in guide
    assert snapshot(examples) == before


def test_count_only(project: Path) -> None:
    sweep_file(
        project,
        """\
        command: [bash, task.sh]
        sweep:
          grid: {a: [1, 2, 3], b: [x, y]}
          paired:
            - {c: [1, 2], d: [3, 4]}
        max_runs: 10
        """,
    )
    result = hsm("run", "sweeps/sweep.yaml", "--count-only", cwd=project)
    assert (result.returncode, result.stdout) == (0, "10\n"), result
    as_json = hsm("run", "sweeps/sweep.yaml", "--count-only", "--json", cwd=project)
    assert as_json.json() == {"hsm_json": 1, "total": 10}
    assert not (project / "runs").exists() and not (project / ".hsm").exists()


# -- run, status, list -------------------------------------------------------------------
def test_run_json_status_and_list(project: Path) -> None:
    sweep_file(
        project,
        """\
        command: [bash, task.sh]
        sweep:
          grid:
            a: [1, 3]
            b: ["x y", "it's"]
        """,
    )
    result = hsm("run", "sweeps/sweep.yaml", "--json", "--name", "s1", cwd=project)
    assert result.returncode == 0, result
    data = result.json()
    check_result_json(data)
    sweep_dir = project.resolve() / "runs" / "s1"
    assert data["sweep_id"] == "s1" and data["sweep_dir"] == str(sweep_dir)
    assert data["state"] == "completed"
    assert data["counts"] == {
        "completed": 4,
        "failed": 0,
        "pending": 0,
        "running": 0,
        "cancelled": 0,
    }
    assert data["sources"] == {
        "local": {
            "enabled": True,
            "disabled_reason": None,
            "submitted": 4,
            "completed": 4,
            "failed": 0,
            "failure_rate": 0.0,
        }
    }
    assert [t["params"] for t in data["tasks"]] == [
        {"a": 1, "b": "x y"},
        {"a": 1, "b": "it's"},
        {"a": 3, "b": "x y"},
        {"a": 3, "b": "it's"},
    ]
    first = data["tasks"][0]
    assert first == {
        "number": 1,
        "params": {"a": 1, "b": "x y"},
        "status": "completed",
        "cause": "completed",
        "source": "local",
        "attempts": 1,
        "task_dir": str(sweep_dir / "tasks" / "task_0001"),
        "exit_code": 0,
    }
    # What the script got: one argv element per parameter, and the environment.
    task_dir = Path(first["task_dir"])
    assert (task_dir / "args.txt").read_text().splitlines() == ["a=1", "b='x y'"]
    env = dict(line.split("=", 1) for line in (task_dir / "env.txt").read_text().splitlines())
    assert env["HSM_SWEEP_ID"] == "s1" and env["HSM_TASK_NUMBER"] == "1"
    assert env["HSM_TASK_DIR"] == str(task_dir) and env["HSM_SOURCE"] == "local"
    assert env["HSM_ATTEMPT"] == "1"
    assert env["TMPDIR"] == env["TMP"] == env["TEMP"] == str(task_dir / "tmp")
    assert env["CUDA_CACHE_PATH"] == str(task_dir / "cuda_cache")
    assert env["WANDB_RUN_GROUP"] == "s1" and env["WANDB_DIR"] == str(task_dir)
    assert "CUDA_VISIBLE_DEVICES" not in env
    status_file = json.loads((task_dir / "status.json").read_text())
    assert status_file["status"] == "completed" and status_file["cause"] == "completed"
    info = (task_dir / "task_info.txt").read_text()
    assert "Disk space check PASSED" in info and info.rstrip().endswith("Status: COMPLETED")
    assert (sweep_dir / "hsm.log").is_file() and (sweep_dir / "sweep.yaml").is_file()
    # Every line hsm logs has the contract's shape.
    for line in result.stderr.splitlines():
        if line.strip() and not line.startswith(("┏", "┃", "┡", "│", "└", " ")):
            assert LOG_LINE.match(line), line

    status = hsm("status", "s1", "--json", cwd=project)
    assert status.returncode == 0, status
    check_result_json(status.json())
    assert status.json() == data
    latest = hsm("status", "--json", cwd=project)
    assert latest.json()["sweep_id"] == "s1"
    text = hsm("status", cwd=project)
    assert text.returncode == 0 and "s1" in text.stdout and "completed" in text.stdout

    listed = hsm("list", "--json", cwd=project)
    assert listed.returncode == 0, listed
    assert listed.json()["hsm_json"] == 1
    (row,) = listed.json()["sweeps"]
    assert row["sweep_id"] == "s1" and row["state"] == "completed" and row["total"] == 4
    assert row["counts"]["completed"] == 4
    assert "s1" in hsm("list", cwd=project).stdout


def test_list_and_status_with_no_sweeps(project: Path) -> None:
    listed = hsm("list", "--json", cwd=project)
    assert (listed.returncode, listed.json()) == (0, {"hsm_json": 1, "sweeps": []}), listed
    assert hsm("list", cwd=project).stdout.strip() == "no sweeps yet"
    status = hsm("status", cwd=project)
    assert status.returncode == 2 and "no sweep has run" in status.stderr
    assert not (project / ".hsm").exists()


def test_no_config_anywhere_runs_with_the_defaults(tmp_path: Path) -> None:
    project = make_project(tmp_path / "bare", config=None)
    sweep_file(project, "command: [bash, task.sh]\nsweep:\n  grid:\n    a: [1, 2]\n")
    result = hsm("run", "sweeps/sweep.yaml", cwd=project)
    assert result.returncode == 0, result
    assert "no hsm_config.yaml found" in result.stderr and "using the defaults" in result.stderr
    assert len(list((project / "runs").iterdir())) == 1
    assert (project / ".hsm" / "hsm.db").is_file()


# -- failures, resume, retry -------------------------------------------------------------
def test_a_failed_task_exits_1_and_retry_failed_reruns_it_with_the_same_number(
    project: Path,
) -> None:
    sweep_file(project, "command: [bash, task.sh]\nsweep:\n  grid:\n    a: [1, 2, 3]\n")
    (project / "broken").touch()
    result = hsm("run", "sweeps/sweep.yaml", "--json", "--name", "f1", cwd=project)
    assert result.returncode == 1, result
    data = result.json()
    check_result_json(data)
    assert data["state"] == "failed"
    assert data["counts"]["failed"] == 1 and data["counts"]["completed"] == 2
    failed = data["tasks"][1]
    assert (failed["number"], failed["status"], failed["cause"], failed["exit_code"]) == (
        2,
        "failed",
        "task_failed",
        3,
    )
    assert "hsm resume f1 --retry-failed" in result.stderr
    assert "task a=2 is broken" in (Path(failed["task_dir"]) / "stderr.log").read_text()
    assert "Status: FAILED" in (Path(failed["task_dir"]) / "task_info.txt").read_text()

    plain = hsm("resume", "f1", "--json", cwd=project)  # failed tasks stay failed
    assert plain.returncode == 1, plain
    assert plain.json()["counts"]["failed"] == 1

    (project / "broken").unlink()
    retried = hsm("resume", "f1", "--retry-failed", "--json", cwd=project)
    assert retried.returncode == 0, retried
    after = retried.json()
    check_result_json(after)
    assert after["state"] == "completed" and after["counts"]["completed"] == 3
    by_number = {t["number"]: t for t in after["tasks"]}
    assert by_number[2]["params"] == {"a": 2} and by_number[2]["attempts"] == 2
    assert by_number[1]["attempts"] == by_number[3]["attempts"] == 1
    task_dir = Path(by_number[2]["task_dir"])
    assert task_dir.name == "task_0002"
    assert (task_dir / "args.txt").read_text().splitlines()[0] == "a=2"
    info = (task_dir / "task_info.txt").read_text()
    assert "Attempt: 2" in info and info.rstrip().endswith("Status: COMPLETED")


def test_resume_or_cancel_of_a_finished_sweep_changes_nothing(history_project: Path) -> None:
    cancel = hsm("cancel", "done", cwd=history_project)
    assert (cancel.returncode, cancel.stdout) == (0, "sweep done: completed\n"), cancel
    result = hsm("resume", "done", "--json", cwd=history_project)
    assert result.returncode == 0, result
    data = result.json()
    check_result_json(data)
    assert data["counts"]["completed"] == 3
    assert all(t["attempts"] == 1 for t in data["tasks"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--cause", "timeout"],
            "--cause: chooses which failures to rerun, so it needs --retry-failed",
        ),
        (
            ["--retry-failed", "--cause", "timout"],
            "--cause: 'timout' is not a failure cause (did you mean 'timeout'?)",
        ),
        (
            ["--retry-failed", "--cause", "timeout,completed"],
            "--cause: 'completed' is not a failure cause",
        ),
        (["--retry-failed", "--walltime", "4h"], "--walltime: '4h' is not valid"),
        (["--retry-failed", "--walltime", "00:00:00"], "--walltime: '00:00:00' is not valid"),
        (["--retry-failed", "--mem", "lots"], "--mem: 'lots' is not valid"),
        (["--retry-failed", "--cpus", "0"], "'--cpus': 0 is not in the range"),
        (["--retry-failed", "--gpus", "-1"], "'--gpus': -1 is not in the range"),
        (["--retry-failed", "--source", "nowhere"], "unknown source 'nowhere'"),
    ],
)
def test_resume_with_a_bad_value_exits_2_and_writes_nothing(
    failed_project: Path, args: list[str], message: str
) -> None:
    before = snapshot(failed_project)
    result = hsm("resume", "f1", *args, cwd=failed_project)
    assert result.returncode == 2, result
    assert message in result.stderr, result
    assert result.stderr.count("hsm: error:") == 1 and "Traceback" not in result.stderr
    assert snapshot(failed_project) == before


def test_retry_failed_of_one_cause_only_and_the_change_is_shown(project: Path) -> None:
    sweep_file(
        project,
        "command: [bash, task.sh]\nsweep:\n  grid:\n    a: [1, 2, 3]\n"
        "resources: {walltime: '00:10:00'}\n",
    )
    (project / "broken").touch()
    assert hsm("run", "sweeps/sweep.yaml", "--name", "c1", cwd=project).returncode == 1
    (project / "broken").unlink()
    # No failure has the cause asked for: the sweep stays as it was, with its exit code.
    none = hsm("resume", "c1", "--retry-failed", "--cause", "timeout,disk_kill", cwd=project)
    assert none.returncode == 1, none
    assert "has finished (failed): nothing to resume" in none.stderr
    assert "no failed task has the cause timeout, disk_kill" in none.stderr
    assert "sweep c1: 3 task(s)" not in none.stderr  # not announced as if it started
    again = hsm(
        "resume",
        "c1",
        "--retry-failed",
        "--cause",
        "task_failed",
        "--walltime",
        "01:30:00",
        "--mem",
        "2G",
        "--json",
        cwd=project,
    )
    assert again.returncode == 0, again
    data = again.json()
    check_result_json(data)
    assert [(t["number"], t["attempts"]) for t in data["tasks"]] == [(1, 1), (2, 2), (3, 1)]
    status = hsm("status", "c1", cwd=project)
    assert "rerun " in status.stdout, status
    assert (
        "1 task(s) back in the queue; failed tasks (task_failed); resources"
        " walltime=01:30:00, mem=2G" in status.stdout
    )
    finished = hsm("resume", "c1", cwd=project)
    assert finished.returncode == 0, finished
    assert "sweep c1 has finished (completed): nothing to resume" in finished.stderr


# -- cancel ------------------------------------------------------------------------------
def test_cancel_from_another_process_kills_every_task_tree(project: Path) -> None:
    sweep_file(
        project,
        """\
        command: [bash, task.sh]
        sweep:
          grid:
            a: [1, 3, 4, 5]
        defaults: {sleep: 60}
        """,
    )
    with hsm_background(
        "run", "sweeps/sweep.yaml", "--name", "c1", cwd=project, env={"GRANDCHILD": "1"}
    ) as run:
        tasks = project / "runs" / "c1" / "tasks"

        def grandchildren() -> list[int] | None:
            files = sorted(tasks.glob("task_*/grandchild.pid"))
            texts = [f.read_text().strip() for f in files]
            if len(files) < 2 or not all(texts):
                return None
            return [int(t) for t in texts]

        pids = wait_for(grandchildren, what="two running tasks with a grandchild each")
        assert all(pid_alive(p) for p in pids)
        status = hsm("status", "c1", "--json", cwd=project)
        assert status.json()["state"] == "running"
        assert status.json()["counts"]["running"] == 2

        cancel = hsm("cancel", "c1", cwd=project)
        assert cancel.returncode == 0, cancel
        assert "cancelled" in cancel.stdout
        assert run.wait(timeout=30) == 130
    _, stderr = outputs(project)
    assert "Traceback" not in stderr
    for pid in pids:
        wait_for(partial(_gone, pid), timeout=5, what=f"grandchild {pid} gone")
    data = hsm("status", "c1", "--json", cwd=project).json()
    assert data["state"] == "cancelled"
    assert data["counts"]["cancelled"] == 4 and data["counts"]["running"] == 0
    # No task process of the sweep is left anywhere.
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _runs_in(int(p), tasks)]


def _gone(pid: int) -> bool:
    return not pid_alive(pid)


def _runs_in(pid: int, folder: Path) -> bool:
    try:
        return str(folder) in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


# -- distributed list / enable / disable ---------------------------------------------------
def test_distributed_list_enable_disable(project: Path) -> None:
    write(
        project / "hsm_config.yaml",
        (project / "hsm_config.yaml").read_text()
        + """\
  remotes:
    blossom:
      host: blossom.example
    spare:
      host: spare.example
      enabled: false
""",
    )
    sweep_file(project, "command: [bash, task.sh]\nsweep:\n  grid:\n    a: [1]\n")

    def rows() -> dict[str, dict[str, Any]]:
        result = hsm("distributed", "list", "--json", cwd=project)
        assert result.returncode == 0, result
        assert result.json()["hsm_json"] == 1
        return {r["name"]: r for r in result.json()["sources"]}

    listed = rows()
    assert list(listed) == ["local", "blossom", "spare"]
    assert listed["blossom"]["type"] == "ssh" and listed["blossom"]["enabled"] is True
    assert listed["spare"]["enabled"] is False
    assert "enabled: false" in listed["spare"]["disabled_reason"]

    disabled = hsm("distributed", "disable", "blossom", "--reason", "disk swap", cwd=project)
    assert disabled.returncode == 0, disabled
    assert rows()["blossom"] | {"disabled_at": None} == {
        "name": "blossom",
        "type": "ssh",
        "enabled": False,
        "disabled_reason": "disk swap",
        "disabled_at": None,
    }
    assert "disk swap" in hsm("distributed", "list", cwd=project).stdout
    # A disabled source named on the command line is refused, naming the way back.
    refused = hsm("run", "sweeps/sweep.yaml", "--source", "blossom", cwd=project)
    assert refused.returncode == 2, refused
    assert "disk swap" in refused.stderr and "hsm distributed enable blossom" in refused.stderr

    enabled = hsm("distributed", "enable", "blossom", cwd=project)
    assert enabled.returncode == 0, enabled
    assert rows()["blossom"]["enabled"] is True and rows()["blossom"]["disabled_reason"] is None

    # This machine can be disabled too; a plain run then has no source left (exit 3).
    assert hsm("distributed", "disable", "local", cwd=project).returncode == 0
    nowhere = hsm("run", "sweeps/sweep.yaml", cwd=project)
    assert nowhere.returncode == 3, nowhere
    assert "hsm distributed enable" in nowhere.stderr and "Traceback" not in nowhere.stderr
    assert not (project / "runs").exists()
    assert hsm("distributed", "enable", "local", cwd=project).returncode == 0
    assert hsm("run", "sweeps/sweep.yaml", cwd=project).returncode == 0


def test_distributed_health_json_once_and_watched(project: Path) -> None:
    once = hsm("distributed", "health", "--json", cwd=project)
    assert once.returncode == 0, once
    data = once.json()
    assert data["hsm_json"] == 1 and [r["name"] for r in data["sources"]] == ["local"]
    assert data["sources"][0]["status"] in {"healthy", "degraded"}

    # --watch --json: one whole JSON object per line, each with its version and time.
    args = ("distributed", "health", "--watch", "--refresh", "0.2", "--json")
    with hsm_background(*args, cwd=project) as proc:

        def lines() -> list[str] | None:
            text = outputs(project)[0]
            done = text.splitlines()[:-1] if not text.endswith("\n") else text.splitlines()
            return done if len(done) >= 3 else None

        got = wait_for(lines, what="three health objects", on_timeout=lambda: str(outputs(project)))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, outputs(project)
    objects = [json.loads(line) for line in outputs(project)[0].splitlines()]
    assert len(objects) >= len(got)
    for obj in objects:
        assert obj["hsm_json"] == 1 and set(obj) == {"hsm_json", "time", "sources"}
        assert [r["name"] for r in obj["sources"]] == ["local"]
    times = [obj["time"] for obj in objects]
    assert times == sorted(times)


def test_an_internal_error_has_its_own_exit_code(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from hsm.cli import main as cli_main
    from hsm.errors import ExitCode

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("broken")

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(cli_main.cli, "main", broken)
    with pytest.raises(SystemExit) as exited:
        cli_main.main()
    assert exited.value.code == ExitCode.INTERNAL == 70
    assert "KeyError: 'broken'" in (tmp_path / "hsm" / "debug.log").read_text()
