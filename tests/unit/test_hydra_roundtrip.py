"""End to end: sweep file -> expansion -> argv -> a real Hydra app -> the exact values.

The app (tests/apps/hydra_dump.py) writes its resolved config as JSON. Values are
batched into a few runs, one key per value, to keep the test fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from hsm.spec.expand import iter_tasks
from hsm.spec.render import task_argv
from hsm.spec.sweep import SweepSpec, load_sweep

pytest.importorskip("hydra")

APP = Path(__file__).resolve().parents[1] / "apps" / "hydra_dump.py"

STRINGS = [
    "a b",
    "  padded  ",
    "it's",
    'say "hi"',
    "both ' and \"",
    "a,b",
    "[1, 2]",
    "{a: 1}",
    "x=y",
    "$HOME",
    "$(rm -rf /)",
    "`whoami`",
    "a; b",
    "a:b",
    "${oc.env:HOME}",
    "\\${x}",
    "back\\slash\\",
    "tab\there",
    "new\nline",
    "héllo wörld 日本語 🎉",
    "",
    "1",
    "-1",
    "1.5",
    "1e-4",
    "true",
    "False",
    "null",
    "nan",
    "inf",
    "#not a comment",
    "~",
    "--flag",
    "data/train.csv",
    "plain",
]

OTHER_VALUES: list[Any] = [
    0,
    -7,
    10**20,
    1e-4,
    1.0,
    2.5,
    True,
    False,
    None,
    [],
    [1, "a b", None, 1e-4, True, "1"],
    [[1, 2], ["x,y", ["it's"]]],
    {"a": 1, "b c": "x y", "d": [1, 2]},
]


def same(a: Any, b: Any) -> bool:
    """Equal values of the same types, all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return set(a) == set(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def lookup(cfg: dict[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.lstrip("+").split("."):
        node = node[part]
    return node


def run_app(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    out = tmp_path / "dump.json"
    env = dict(os.environ, HYDRA_DUMP_OUT=str(out), HYDRA_FULL_ERROR="0")
    return subprocess.run(
        argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def dumped(tmp_path: Path, proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads((tmp_path / "dump.json").read_text(encoding="utf-8"))
    return data


def only_task(spec: SweepSpec) -> dict[str, Any]:
    tasks = list(iter_tasks(spec))
    assert len(tasks) == 1
    return tasks[0]


def test_every_value_reaches_the_app_exactly(tmp_path: Path) -> None:
    grid: dict[str, Any] = {
        "seed": [3],
        "optimizer": {"lr": [1e-4]},
        "model.name": ['it\'s a "model"'],
    }
    for index, text in enumerate(STRINGS):
        grid[f"+s.v{index:02d}"] = [text]
    for index, value in enumerate(OTHER_VALUES):
        grid[f"+o.v{index:02d}"] = [value]
    sweep = {
        "script": str(APP),
        "sweep": {"grid": grid, "paired": [{"+p.a": ["x y"], "+p.b": [[1, 2]]}]},
        "defaults": {"model": {"width": 64}, "+d.empty": "", "+d.one": "1"},
        "output_dir_arg": "output.dir",
        "wandb_group_arg": "wandb.group",
    }
    # JSON is YAML: this goes through the real loader, and keeps every string quoted.
    path = tmp_path / "sweep.yaml"
    path.write_text(json.dumps(sweep, ensure_ascii=False), encoding="utf-8")
    spec = load_sweep(path, tmp_path)
    assert spec.hydra  # recognised by its @hydra.main
    params = only_task(spec)
    for index, value in enumerate(OTHER_VALUES):
        assert same(params[f"+o.v{index:02d}"], value)
    task_dir = str(tmp_path / "runs" / "it's a sweep" / "task 001")
    sweep_id = "sweep 'x' $1"
    argv = task_argv(spec, params, python=sys.executable, task_dir=task_dir, sweep_id=sweep_id)

    cfg = dumped(tmp_path, run_app(argv, tmp_path))

    for key, value in params.items():
        assert same(lookup(cfg, key), value), (key, value, lookup(cfg, key))
    assert cfg["seed"] == 3
    assert isinstance(cfg["optimizer"]["lr"], float) and cfg["optimizer"]["lr"] == 0.0001
    assert cfg["optimizer"]["name"] == "sgd"  # untouched
    assert cfg["model"] == {"name": 'it\'s a "model"', "width": 64}
    assert [cfg["s"][f"v{i:02d}"] for i in range(len(STRINGS))] == STRINGS
    assert cfg["p"] == {"a": "x y", "b": [1, 2]}
    assert cfg["d"] == {"empty": "", "one": "1"}
    assert cfg["output"]["dir"] == task_dir
    assert cfg["wandb"]["group"] == sweep_id
    assert Path(task_dir).is_dir()  # hydra.run.dir=<task dir> made it Hydra's run folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump.json", "runs", "sweep.yaml"]


def test_hydra_append_adds_keys_the_app_does_not_have(tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(
        textwrap.dedent(
            """
            script: APP
            hydra: false
            hydra_append: true
            output_dir_arg: paths.task
            wandb_group_arg: wandb.group
            sweep:
              grid:
                optimizer: {lr: [1e-4]}
                brand: {new: {key: ["a b"]}}
                seed: [5]
            defaults:
              layers: [[64, 64]]
              tag: "1"
            """
        ).replace("APP", str(APP)),
        encoding="utf-8",
    )
    spec = load_sweep(path, tmp_path)
    params = only_task(spec)
    argv = task_argv(spec, params, python=sys.executable, task_dir="/t d", sweep_id="g")
    assert all(a.startswith("++") for a in argv[2:])

    cfg = dumped(tmp_path, run_app(argv, tmp_path))

    assert cfg["optimizer"] == {"lr": 0.0001, "name": "sgd"}
    assert cfg["brand"] == {"new": {"key": "a b"}}
    assert cfg["seed"] == 5
    assert cfg["layers"] == [[64, 64]]
    assert cfg["tag"] == "1"
    assert cfg["paths"] == {"task": "/t d"}
    assert cfg["wandb"]["group"] == "g"


def test_without_a_prefix_hydra_refuses_unknown_keys(tmp_path: Path) -> None:
    """The default is plain key=value: a misspelled key fails loudly instead of
    silently adding a key nobody reads; Hydra's message says to use +key."""
    spec = SweepSpec(script=str(APP), grid={"sede": [1]}, wandb_group_arg=None)
    argv = task_argv(spec, {"sede": 1}, python=sys.executable, task_dir=None, sweep_id="s")
    proc = run_app(argv, tmp_path)
    assert proc.returncode != 0
    assert "+sede=1" in proc.stderr
    assert not (tmp_path / "dump.json").exists()
