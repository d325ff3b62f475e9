"""The remote programs as they are sent: one self-contained text each, valid bash, clean
under shellcheck (CI also checks the files themselves, in scripts/test)."""

from __future__ import annotations

import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from hsm.sources.remote import script

PROGRAMS = sorted(
    p.name for p in resources.files("hsm.sources.remote").iterdir() if p.name.endswith(".sh")
)


def test_every_program_is_shipped() -> None:
    assert {"monitor.sh", "cancel.sh", "preflight.sh", "setup_host.sh", "check.sh"} <= set(PROGRAMS)


@pytest.mark.parametrize("name", PROGRAMS)
def test_a_program_is_sent_whole_and_is_valid_bash(name: str, tmp_path: Path) -> None:
    text = script(name)
    assert "\n. lib/" not in text  # every shared part inlined
    path = tmp_path / name
    path.write_text(text)
    syntax = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is missing (scripts/install-testbed-packages installs it)")
    check = subprocess.run(
        ["shellcheck", "-S", "warning", "-s", "bash", str(path)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout


def test_a_shared_part_is_inlined_where_it_is_used() -> None:
    preflight = script("preflight.sh")
    assert script("lib/expand_root.sh") in preflight and script("lib/writable.sh") in preflight
