"""The bad-input corpus: every folder under tests/corpus/bad_input is one case, run with the
real CLI.

A case folder holds its input files (copied over a fresh project with the test config and
task.sh), ``args`` (the hsm arguments, one per line) and ``expected``: optional header lines
``exit: N`` (default 2) and ``needs: history|testbed|fulldisk``, then message fragments, one
per line. Placeholders ``{{PROJECT}}``, ``{{HOST}}``, ``{{HOST_IP}}``, ``{{SSH_CONFIG}}``,
``{{KNOWN_HOSTS}}``, ``{{SSH_KEY}}`` and ``{{UNUSED_IP}}`` (an address of the test bed's subnet
with no host) are substituted in every input file, in ``args`` and in ``expected``.

Every case must: exit with the expected code, print one ``hsm: error:`` message holding every
fragment and no traceback, print nothing on stdout, create no sweep folder and leave the state
database unchanged.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.hsmcli import hsm, make_project, snapshot, tmpfs

pytestmark = pytest.mark.timeout(90)

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "bad_input"
HEADER_KEYS = ("exit:", "needs:")


@dataclass(frozen=True)
class Case:
    name: str
    folder: Path
    args: tuple[str, ...]
    fragments: tuple[str, ...]
    exit_code: int
    needs: frozenset[str]


def load(folder: Path) -> Case:
    args = tuple(line for line in (folder / "args").read_text().splitlines() if line)
    exit_code, needs, fragments = 2, set[str](), list[str]()
    for line in (folder / "expected").read_text().splitlines():
        if not line:
            continue
        if line.startswith("exit:") and not fragments:
            exit_code = int(line.split(":", 1)[1])
        elif line.startswith("needs:") and not fragments:
            needs.update(line.split(":", 1)[1].split())
        else:
            fragments.append(line)
    return Case(folder.name, folder, args, tuple(fragments), exit_code, frozenset(needs))


CASES = [load(p) for p in sorted(CORPUS.iterdir()) if p.is_dir()]


def substitute(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def logical(snap: dict[str, bytes | None], root: Path) -> dict[str, object]:
    """The snapshot with valid SQLite databases replaced by their dump (a checkpoint may
    move bytes around without changing any data)."""
    out: dict[str, object] = {}
    for rel, data in snap.items():
        if rel.endswith(".db") and data is not None and data.startswith(b"SQLite format 3"):
            conn = sqlite3.connect(root / rel)
            try:
                out[rel] = list(conn.iterdump())
            finally:
                conn.close()
        else:
            out[rel] = data
    return out


def fill(folder: Path) -> None:
    """Write into ``folder`` until its file system is full."""
    with (folder / ".filler").open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
            out.flush()


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 40
    for case in CASES:
        assert case.args and case.fragments, case.name


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus(
    case: Case, tmp_path: Path, history_project: Path, request: pytest.FixtureRequest
) -> None:
    root = tmp_path / "project"
    values = {"PROJECT": str(root)}
    if "testbed" in case.needs:
        bed = request.getfixturevalue("testbed")
        host = request.getfixturevalue("testbed_hosts")[0]
        values |= {
            "HOST": host.name,
            "HOST_IP": host.ip,
            "SSH_CONFIG": str(bed.ssh_config_path),
            "KNOWN_HOSTS": str(bed.known_hosts),
            "SSH_KEY": str(bed.key_path),
            "UNUSED_IP": f"{bed.subnet}.250",
        }
    with contextlib.ExitStack() as stack:
        if "fulldisk" in case.needs:
            stack.enter_context(tmpfs(root, "4m"))
        if "history" in case.needs:
            shutil.copytree(history_project, root, dirs_exist_ok=True)
        else:
            make_project(root)
        for src in case.folder.rglob("*"):
            rel = src.relative_to(case.folder)
            if src.is_dir() or rel.name in ("args", "expected"):
                continue
            dest = root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            data = src.read_bytes()
            try:
                dest.write_text(substitute(data.decode(), values))
            except UnicodeDecodeError:
                dest.write_bytes(data)
        if "fulldisk" in case.needs:
            fill(root)
        had_state = (root / ".hsm").exists()
        runs_before = snapshot(root / "runs") if (root / "runs").exists() else None
        before = logical(snapshot(root), root)

        result = hsm(*(substitute(a, values) for a in case.args), cwd=root)

        assert result.returncode == case.exit_code, result
        assert "Traceback" not in result.stderr, result
        assert result.stdout == "", result
        assert result.stderr.count("hsm: error: ") == 1, result
        message = result.stderr[result.stderr.index("hsm: error: ") :]
        for fragment in case.fragments:
            assert substitute(fragment, values) in message, (fragment, result)
        assert logical(snapshot(root), root) == before
        if not had_state:
            assert not (root / ".hsm").exists()
        if runs_before is None:
            assert not (root / "runs").exists()
        else:
            assert snapshot(root / "runs") == runs_before
