"""A local sweep records the code version it started with; status and the report show it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.hsmcli import hsm, make_project


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_a_local_sweep_in_a_git_project_records_its_commit(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", sweep="command: [bash, task.sh]\nsweep: {grid: {a: [1]}}\n")
    git(root, "init", "-q")
    git(
        root,
        "-c",
        "user.email=t@example.org",
        "-c",
        "user.name=t",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "empty",
    )
    (root / ".gitignore").write_text("")  # untracked, not ignored: the project is dirty
    head = git(root, "rev-parse", "HEAD")
    result = hsm("run", "sweeps/sweep.yaml", "--json", "--name", "s", cwd=root)
    assert result.returncode == 0, result
    assert result.json()["code_version"] == {"git": head, "dirty": True}
    text = hsm("status", "s", cwd=root)
    assert f"code: git {head[:12]} (dirty)" in text.stdout, text
    report = hsm("report", "s", "-o", "-", cwd=root)
    assert f"git {head[:12]} (dirty)" in report.stdout


def test_resume_says_when_the_code_changed_since_the_start(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", sweep="command: [bash, fail.sh]\nsweep: {grid: {a: [1]}}\n")
    (root / "fail.sh").write_text("exit 1\n")
    result = hsm("run", "sweeps/sweep.yaml", "--json", "--name", "s", cwd=root)
    assert result.returncode == 1, result
    recorded = result.json()["code_version"]
    assert set(recorded) == {"hash"}
    same = hsm("resume", "s", "--retry-failed", cwd=root)
    assert "the code changed" not in same.stderr, same
    (root / "fail.sh").write_text("exit 0\n")
    changed = hsm("resume", "s", "--retry-failed", cwd=root)
    assert changed.returncode == 0, changed
    assert (
        f"the code changed since sweep s started (content {recorded['hash'][:12]}, now "
        "content " in changed.stderr
    ), changed
