"""Hostile parameter values through the real local path (hsm run -> wrapper -> script):
the script receives them exactly, and no shell ever evaluates them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from hsm.spec.render import hydra_override
from tests.hsmcli import hsm, make_project, write

pytest.importorskip("hydra")
pytestmark = pytest.mark.timeout(90)

APPS = Path(__file__).resolve().parents[1] / "apps"

HOSTILE: list[Any] = [
    "$(touch CANARY)",
    "`touch CANARY`",
    "a; touch CANARY",
    "a && touch CANARY",
    "a | touch CANARY",
    "$(touch CANARY)'; touch CANARY; echo '",
    "first line\nsecond line",
    "it's",
    'say "hi"',
    "both ' and \"",
    "--option",
    "--help",
    "-x",
    "héllo wörld 日本語 🎉",
    "with  spaces ",
    "",
    "$HOME",
    "${oc.env:HOME}",
    "a=b",
    "[1, 2]",
    "x,y",
    "back\\slash\\",
    "tab\there",
    "*",
    "~",
    "1",
    "true",
    "null",
    3,
    1e-4,
    False,
    None,
    ["a b", "$(touch CANARY)"],
]


def test_hostile_values_arrive_exactly_and_nothing_is_evaluated(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    # One task, one key per value. `++` adds the keys to the Hydra app's config.
    grid = "".join(
        f"    p{i}: [{json.dumps(v, ensure_ascii=False)}]\n" for i, v in enumerate(HOSTILE)
    )
    script = (
        '"$0" "$HSM_APPS/argv_dump.py" "$@" && '
        'HYDRA_DUMP_OUT="$HSM_TASK_DIR/hydra.json" exec "$0" "$HSM_APPS/hydra_dump.py" "$@"'
    )
    write(
        project / "sweeps" / "sweep.yaml",
        f"command: [bash, -c, {json.dumps(script)}, {json.dumps(sys.executable)}]\n"
        "hydra_append: true\noutput_dir_arg: output.dir\nwandb_group_arg: wandb.group\n"
        f"sweep:\n  grid:\n{grid}",
    )
    result = hsm(
        "run",
        "sweeps/sweep.yaml",
        "--json",
        "--name",
        "h",
        cwd=project,
        env={"HSM_APPS": str(APPS)},
    )
    assert result.returncode == 0, result
    (task,) = result.json()["tasks"]
    assert task["params"] == {f"p{i}": v for i, v in enumerate(HOSTILE)}
    task_dir = Path(task["task_dir"])

    # The argv, byte for byte as hsm.spec.render writes it.
    expected = [hydra_override(f"++p{i}", v) for i, v in enumerate(HOSTILE)]
    expected += [f"++output.dir={task_dir}", "++wandb.group=h"]
    received = json.loads((task_dir / "argv.json").read_text())
    assert received == expected

    # And a Hydra app reads back exactly the values of the sweep file.
    config = json.loads((task_dir / "hydra.json").read_text(encoding="utf-8"))
    for i, value in enumerate(HOSTILE):
        assert config[f"p{i}"] == value, (i, value, config[f"p{i}"])
    assert config["output"]["dir"] == str(task_dir) and config["wandb"]["group"] == "h"

    # No shell evaluated anything, anywhere.
    assert not list(tmp_path.rglob("CANARY"))
    assert not (Path.cwd() / "CANARY").exists()
