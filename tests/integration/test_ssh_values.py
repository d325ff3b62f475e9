"""Parameter values full of shell metacharacters reach the remote script intact, in a project
whose folder name is hostile too; nothing is ever evaluated by a shell on the way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from hsm.spec.render import task_argv
from hsm.spec.sweep import load_sweep
from tests.hsmcli import hsm
from tests.integration.ssh_support import make_project, remote
from tests.testbed import Host

pytestmark = [pytest.mark.root, pytest.mark.testbed]

HOSTILE = [
    "a b",
    "it's",
    'say "hi"',
    "$HOME",
    "$(touch /srv/hsm/canary1)",
    "`touch /srv/hsm/canary2`",
    "a; touch /srv/hsm/canary3",
    "x && touch canary4 || y",
    "| tee /srv/hsm/canary5",
    "> /srv/hsm/canary6",
    "back\\slash\\",
    "tab\there",
    "new\nline",
    "héllo wörld 日本語 🎉",
    "*",
    "~",
    "--flag",
    "%s %n %b",
    "\\x41\\0\\c",
    "'; touch /srv/hsm/canary7; '",
    '"; touch /srv/hsm/canary8; "',
]


def test_hostile_values_arrive_intact(tmp_path: Path, testbed_hosts: list[Host]) -> None:
    pytest.importorskip("hydra")
    from hydra.core.override_parser.overrides_parser import OverridesParser

    host = testbed_hosts[0]
    values = {f"k{i}": v for i, v in enumerate(HOSTILE)}
    sweep: dict[str, Any] = {
        "script": "task.py",
        "sweep": {"grid": {"i": [1, 2]}},
        "defaults": values,
    }
    project = tmp_path / "it's a $(project); touch canary9 &"
    root = make_project(
        project,
        [host],
        remotes={"h1": remote(host)},
        sweep=yaml.safe_dump(sweep, allow_unicode=True),
    )
    result = hsm("run", "sweep.yaml", "--source", "h1", "--json", cwd=root)
    assert result.returncode == 0, result
    data = result.json()
    spec = load_sweep(root / "sweep.yaml", root)
    parser = OverridesParser.create()
    for task in data["tasks"]:
        record = json.loads((Path(task["task_dir"]) / "result.json").read_text())
        task_dir = record["env"]["HSM_TASK_DIR"]
        assert task_dir.startswith(f"/srv/hsm/root/{project.name}/sweeps/")
        expected = task_argv(
            spec, task["params"], python="python3", task_dir=task_dir, sweep_id=data["sweep_id"]
        )
        assert record["argv"] == expected[1:]  # byte for byte, after the interpreter
        received = {
            o.key_or_group: o.value()
            for o in parser.parse_overrides([a for a in record["argv"] if a.startswith("k")])
        }
        assert received == values
    for path in [
        *host.disk_dir.rglob("canary*"),
        *tmp_path.rglob("canary*"),
        *Path("/srv/hsm").glob("canary*"),
    ]:
        raise AssertionError(f"a shell evaluated a value: {path} exists")
