"""The code version recorded with a sweep: git commit and dirty flag, else a content hash."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from hsm.engine.codeversion import code_version, content_hash, describe


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.fail("git is needed for these tests")
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    git(root, "config", "user.email", "t@example.org")
    git(root, "config", "user.name", "t")
    (root / "train.py").write_text("print(1)\n")
    git(root, "add", "train.py")
    git(root, "commit", "-q", "-m", "one")
    return root


def test_a_git_project_is_its_commit_and_dirty_flag(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    # hsm's own folders (state, runs) do not make it dirty.
    (repo / ".hsm").mkdir()
    (repo / ".hsm" / "hsm.db").write_text("x")
    (repo / "runs" / "s1").mkdir(parents=True)
    (repo / "runs" / "s1" / "out").write_text("x")
    assert code_version(repo, [repo / ".hsm", repo / "runs"]) == {"git": head, "dirty": False}
    (repo / "train.py").write_text("print(2)\n")
    assert code_version(repo, [repo / ".hsm", repo / "runs"]) == {"git": head, "dirty": True}
    assert describe({"git": head, "dirty": True}) == f"git {head[:12]} (dirty)"


def test_an_untracked_file_is_dirty_and_a_project_folder_inside_a_repo_works(repo: Path) -> None:
    sub = repo / "proj"
    sub.mkdir()
    (sub / "a.py").write_text("a\n")
    git(repo, "add", "proj/a.py")
    git(repo, "commit", "-q", "-m", "two")
    assert code_version(sub)["dirty"] is False
    (repo / "elsewhere.txt").write_text("outside the project folder\n")
    assert code_version(sub)["dirty"] is False
    (sub / "new.py").write_text("new\n")
    assert code_version(sub)["dirty"] is True


def test_any_other_project_is_a_hash_of_its_files(tmp_path: Path) -> None:
    root = tmp_path / "p"
    (root / "lib").mkdir(parents=True)
    (root / "train.py").write_text("print(1)\n")
    (root / "lib" / "u.py").write_text("u\n")
    first = code_version(root, [root / "runs"])
    assert set(first) == {"hash"} and describe(first) == f"content {first['hash'][:12]}"
    # Outputs, state, caches do not count.
    (root / "runs").mkdir()
    (root / "runs" / "x").write_text("x")
    (root / "lib" / "__pycache__").mkdir()
    (root / "lib" / "__pycache__" / "u.pyc").write_bytes(b"\0")
    (root / ".hsm").mkdir()
    (root / ".hsm" / "hsm.db").write_text("x")
    assert code_version(root, [root / "runs"]) == first
    (root / "lib" / "u.py").write_text("changed\n")
    assert code_version(root, [root / "runs"]) != first
    (root / "lib" / "u.py").write_text("u\n")
    assert content_hash(root, [root / "runs"]) == first["hash"]
    (root / "lib" / "u.py").rename(root / "lib" / "v.py")
    assert content_hash(root, [root / "runs"]) != first["hash"]


def test_not_recorded() -> None:
    assert describe(None) == "not recorded"
