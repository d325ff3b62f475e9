"""Sweeps on the SSH test bed: one host, three hosts, results pulled back, setup lines,
the code push (.gitignore, exclude, --delete, incremental), keep_remote."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from tests.hsmcli import hsm, open_store
from tests.integration.ssh_support import REMOTE_ROOT, make_project, marks, remote, remote_path
from tests.testbed import Host

pytestmark = [pytest.mark.root, pytest.mark.testbed]


def test_sweep_on_one_host_pulls_every_result(tmp_path: Path, testbed_hosts: list[Host]) -> None:
    host = testbed_hosts[0]
    root = make_project(tmp_path / "proj", [host], n=4)
    result = hsm("run", "sweep.yaml", "--source", "h1", "--json", cwd=root)
    assert result.returncode == 0, result
    data = result.json()
    assert data["state"] == "completed" and data["counts"]["completed"] == 4
    sweep_dir = Path(data["sweep_dir"])
    for task in data["tasks"]:
        folder = sweep_dir / "tasks" / f"task_{task['number']:04d}"
        assert Path(task["task_dir"]) == folder
        info = (folder / "task_info.txt").read_text()
        assert f"Task: {task['number']}" in info and "Source: h1" in info
        assert f"Host: {host.name}" in info and "Status: COMPLETED" in info
        assert "Disk space check PASSED" in info
        record = json.loads((folder / "result.json").read_text())
        assert record["host"] == host.name
        # Tasks run from the sweep's own snapshot of the code.
        assert record["cwd"] == f"{REMOTE_ROOT}/proj/sweeps/{data['sweep_id']}/h1/code"
        assert record["env"]["HSM_SOURCE"] == "h1"
        assert record["env"]["TMPDIR"] == f"{record['env']['HSM_TASK_DIR']}/tmp"
        assert (folder / "stdout.log").read_text() == f"task {task['number']} on {host.name}\n"
        assert json.loads((folder / "status.json").read_text())["status"] == "completed"
        assert not (folder / "tmp").exists()  # the private scratch folder stays remote
    # Everything completed: the remote sweep folder is gone, its code snapshot with it.
    sweeps = remote_path(host, f"{REMOTE_ROOT}/proj/sweeps")
    assert list(sweeps.iterdir()) == []


def test_sweep_on_three_hosts_runs_setup_lines_first(
    tmp_path: Path, testbed_hosts: list[Host]
) -> None:
    setup = [
        "export SETUP_GREETING='hello from setup'",
        f"touch {REMOTE_ROOT}/setup-ran-$HSM_TASK_NUMBER",
    ]
    remotes = {f"h{i + 1}": remote(h, setup=setup) for i, h in enumerate(testbed_hosts)}
    root = make_project(tmp_path / "proj", testbed_hosts, n=12, sleep=0.3, remotes=remotes)
    result = hsm(
        "run",
        "sweep.yaml",
        "--source",
        "h1",
        "--source",
        "h2",
        "--source",
        "h3",
        "--json",
        cwd=root,
    )
    assert result.returncode == 0, result
    data = result.json()
    assert data["counts"]["completed"] == 12
    assert {t["source"] for t in data["tasks"]} == {"h1", "h2", "h3"}
    assert all(data["sources"][h]["completed"] >= 2 for h in ("h1", "h2", "h3"))
    runs = marks(testbed_hosts)
    assert sorted(runs) == list(range(1, 13))
    for number, lines in runs.items():
        assert [w for w, _, _ in lines] == ["start", "done"], (number, lines)
    for task in data["tasks"]:
        record = json.loads((Path(task["task_dir"]) / "result.json").read_text())
        assert record["env"]["SETUP_GREETING"] == "hello from setup"
        host = testbed_hosts[int(task["source"][1]) - 1]
        assert record["host"] == host.name
        assert remote_path(host, f"{REMOTE_ROOT}/setup-ran-{task['number']}").exists()


def test_keep_remote_keeps_the_task_folders(tmp_path: Path, testbed_hosts: list[Host]) -> None:
    host = testbed_hosts[1]
    root = make_project(
        tmp_path / "proj", [host], n=2, remotes={"h2": remote(host, keep_remote=True)}
    )
    result = hsm("run", "sweep.yaml", "--source", "h2", "--json", cwd=root)
    assert result.returncode == 0, result
    sweep_id = result.json()["sweep_id"]
    kept = remote_path(host, f"{REMOTE_ROOT}/proj/sweeps/{sweep_id}/h2")
    assert sorted(p.name for p in kept.iterdir()) == ["code", "code.done", "task_0001", "task_0002"]
    assert (kept / "code" / "task.py").is_file()
    assert "Status: COMPLETED" in (kept / "task_0001" / "task_info.txt").read_text()


def test_failed_sweep_keeps_the_remote_folder(tmp_path: Path, testbed_hosts: list[Host]) -> None:
    host = testbed_hosts[2]
    root = make_project(tmp_path / "proj", [host], n=2, defaults={"exit": 3})
    result = hsm("run", "sweep.yaml", "--source", "h1", "--json", cwd=root)
    assert result.returncode == 1, result
    data = result.json()
    assert [t["cause"] for t in data["tasks"]] == ["task_failed", "task_failed"]
    assert [t["exit_code"] for t in data["tasks"]] == [3, 3]
    info = (Path(data["tasks"][0]["task_dir"]) / "task_info.txt").read_text()
    assert "Exit code: 3" in info and "Status: FAILED" in info
    folder = remote_path(host, f"{REMOTE_ROOT}/proj/sweeps/{data['sweep_id']}/h1")
    assert (folder / "task_0001" / "status.json").is_file()


def test_code_push_honours_gitignore_and_exclude(tmp_path: Path, testbed_hosts: list[Host]) -> None:
    host = testbed_hosts[0]
    remotes = {"h1": remote(host, exclude=["secrets.txt", "/big/"], keep_remote=True)}
    root = make_project(tmp_path / "proj", [host], n=1, remotes=remotes)
    (root / ".gitignore").write_text("data/\n*.ckpt\n")
    for rel in (
        "data/train.csv",
        "model.ckpt",
        "secrets.txt",
        "big/blob",
        "lib/util.py",
        "lib/data/keep.txt",
        "lib/sub/w.ckpt",
        "unchanged.txt",
        "changed.txt",
        ".git/HEAD",
    ):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{rel}\n")

    def snapshot(sweep_id: str) -> Path:
        return remote_path(host, f"{REMOTE_ROOT}/proj/sweeps/{sweep_id}/h1/code")

    assert hsm("run", "sweep.yaml", "--source", "h1", "--name", "a", cwd=root).returncode == 0
    code = snapshot("a")
    present = {str(p.relative_to(code)) for p in code.rglob("*") if p.is_file()}
    assert {
        "task.py",
        "sweep.yaml",
        "hsm_config.yaml",
        "lib/util.py",
        "unchanged.txt",
        "changed.txt",
        ".gitignore",
    } <= present
    for absent in (
        "model.ckpt",
        "secrets.txt",
        "big/blob",
        "lib/sub/w.ckpt",
        ".git/HEAD",
        "lib/data/keep.txt",
        "data/train.csv",
    ):
        assert absent not in present, absent
    assert not any(p.startswith((".hsm/", "runs/")) for p in present)

    # The next sweep's snapshot hard-links what did not change to the previous one.
    (root / "changed.txt").write_text("new content\n")
    assert hsm("run", "sweep.yaml", "--source", "h1", "--name", "b", cwd=root).returncode == 0
    assert os.stat(snapshot("b") / "unchanged.txt").st_ino == os.stat(code / "unchanged.txt").st_ino
    assert (snapshot("b") / "changed.txt").read_text() == "new content\n"
    assert (code / "changed.txt").read_text() == "changed.txt\n"  # a's own code is untouched


def test_a_slot_takes_its_next_task_while_the_last_results_are_pulled(
    tmp_path: Path, testbed_hosts: list[Host]
) -> None:
    # One slot, two tasks with big results: the second task starts as soon as the first one
    # ends, not after its 20 MB have come back and been recorded.
    host = testbed_hosts[0]
    big = 'head -c 20000000 /dev/zero >"$HSM_TASK_DIR/big.bin"'
    sweep = yaml.safe_dump(
        {"command": ["bash", "-c", big, "task"], "sweep": {"grid": {"i": [1, 2]}}}
    )
    root = make_project(
        tmp_path / "proj", [host], sweep=sweep, remotes={"h1": remote(host, max_parallel_jobs=1)}
    )
    result = hsm("run", "sweep.yaml", "--source", "h1", "--json", cwd=root)
    assert result.returncode == 0, result
    data = result.json()
    assert data["counts"]["completed"] == 2
    folders = {t["number"]: Path(t["task_dir"]) for t in data["tasks"]}
    assert (folders[1] / "big.bin").stat().st_size == 20_000_000
    second_started = json.loads((folders[2] / "status.json").read_text())["started"]
    with open_store(root) as store:
        [first] = store.task_attempts(data["sweep_id"], 1)
    assert first.finished is not None and second_started < first.finished
