"""The probes' common parts: the section format both parsers read, and the disk section both
scripts print (run here with the real bash and df)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hsm.sources.probe import DISK, disk_bytes, probe_sections


def test_sections_by_header_with_a_value_as_first_line() -> None:
    text = (
        "login banner\n--df\nfs 100 40 60 40% /\n--ping 0\nController is UP\n"
        "--queue\n------- --------\n4101.pbs01 alice\n--empty\n"
    )
    assert probe_sections(text) == {
        "df": ["fs 100 40 60 40% /"],
        "ping": ["0", "Controller is UP"],
        "queue": ["------- --------", "4101.pbs01 alice"],  # a rule of dashes is no header
        "empty": [],
    }


def test_disk_bytes_are_total_and_free() -> None:
    assert disk_bytes({"df": ["/dev/sda1 100000 40000 60000 40% /"]}) == (100000, 60000)
    broken: list[dict[str, list[str]]] = [{}, {"df": []}, {"df": ["/dev/sda1 lots"]}]
    for sections in broken:
        with pytest.raises(ValueError, match="df section"):
            disk_bytes(sections)


@pytest.mark.parametrize("configured", ["{tmp}/not/there/yet", "~/not/there/yet", "~"])
def test_disk_is_read_from_the_nearest_existing_folder(tmp_path: Path, configured: str) -> None:
    home = tmp_path / "home"
    home.mkdir()
    root = configured.format(tmp=tmp_path)
    out = subprocess.run(
        ["bash", "-c", DISK, "hsm-probe", root],
        capture_output=True,
        check=True,
        text=True,
        env={**os.environ, "HOME": str(home)},
    ).stdout
    total, free = disk_bytes(probe_sections(out))
    usage = shutil.disk_usage(tmp_path)
    assert total == usage.total and 0 < free <= total
    assert not (tmp_path / "not").exists() and not (home / "not").exists()
