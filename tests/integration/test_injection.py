"""Hostile parameter values and names through every kind of source: this machine, an SSH
test-bed host and the test-bed Slurm cluster.

Each value must reach the script byte for byte (as ``hsm.spec.render`` writes it, and read back
exactly by a real Hydra app), nothing may ever be evaluated by a shell (no canary file appears,
here or on the hosts), and every task folder stays inside its sweep folder. Keys that Hydra's
override grammar cannot carry are refused before anything starts, with a clear message.
"""

from __future__ import annotations

import json
import shutil
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hsm.spec.render import hydra_override
from tests.hsmcli import hsm, snapshot
from tests.integration.cluster_support import QUIET, cancel_leftovers
from tests.testbed import Host, SlurmCluster, TestBed

pytest.importorskip("hydra")
pytestmark = pytest.mark.timeout(180)

APPS = Path(__file__).resolve().parents[1] / "apps"
CANARY_ABS = "/srv/hsm/CANARY"

VALUES: list[Any] = [
    "$(touch CANARY)",
    f"$(touch {CANARY_ABS})",
    "`touch CANARY`",
    "a; touch CANARY",
    "a && touch CANARY",
    "a || touch CANARY",
    "a | touch CANARY",
    "> CANARY",
    "first line\nsecond line; touch CANARY",
    "carriage\rreturn",
    "tab\there",
    "it's",
    'say "hi"',
    "both ' and \" and `",
    "'; touch CANARY; '",
    '"; touch CANARY; "',
    "\\",
    "back\\slash\\",
    "--option",
    "--help",
    "-x",
    "../../etc/passwd",
    "../../../../../../tmp/escape",
    "x" * 10240,
    "\u0440\u0430\u0443\u0440\u0430l",  # Cyrillic look-alike of "paypal"
    "\u202eevil\u202c.txt",  # right-to-left override
    "\u200fmark\u200e",
    "🎉🔥 emoji",
    "héllo wörld 日本語",
    "%s %n %x %%",
    "{}",
    "{0}",
    "${oc.env:HOME}",
    "${HOME}",
    "$HOME",
    "\\${oc.env:HOME}",
    "",
    " ",
    "*",
    "~",
    "a=b",
    "x,y",
    "[1, 2]",
    "null",
    "1",
    "true",
    3,
    1e-4,
    False,
    None,
    ["a b", "$(touch CANARY)", "`touch CANARY`"],
]

# Keys with unusual characters that Hydra's grammar accepts: they reach the app.
OK_NAMES = ["$x", "a$b", "x-y", "_", "__init__", "$$", "deep.0.key", "a.b-c.$d"]

# Keys it cannot carry: hsm refuses them before anything runs.
REFUSED_NAMES = [
    "$(touch CANARY)",
    "`touch CANARY`",
    "a;touch CANARY",
    "a&&b",
    "a|b",
    "a\nb",
    "a b",
    "../../etc",
    "--option",
    "\u0430bc",
    "ключ",
    "emoji🎉",
    "%s",
    "{}",
    "${oc.env:HOME}",
    "a'b",
    'a"b',
    "\u202eabc",
    "a=b",
]

# Runs the argv dumper, then the Hydra app, with the interpreter given as $0.
SCRIPT = (
    '"$0" apps/argv_dump.py "$@" && '
    'HYDRA_DUMP_OUT="$HSM_TASK_DIR/hydra.json" exec "$0" apps/hydra_dump.py "$@"'
)


def params() -> dict[str, Any]:
    out: dict[str, Any] = {f"v{i}": v for i, v in enumerate(VALUES)}
    out.update({name: VALUES[0] for name in OK_NAMES})
    return out


def project(root: Path, config: dict[str, Any], python: str) -> Path:
    """A project with the test apps, ``config`` and a one-task sweep of every parameter."""
    root.mkdir(parents=True)
    shutil.copytree(APPS, root / "apps", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "hsm_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    spec = {
        "command": ["bash", "-c", SCRIPT, python],
        "hydra_append": True,
        "output_dir_arg": "output.dir",
        "wandb_group_arg": "wandb.group",
        "defaults": params(),
        "sweep": {"grid": {"task": [1]}},
    }
    (root / "sweep.yaml").write_text(
        yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    return root


def dig(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = node[part]
    return node


def canaries(places: list[Path]) -> list[Path]:
    found = []
    for place in places:
        if place.is_dir():
            found += list(place.rglob("CANARY"))
        elif place.exists():
            found.append(place)
    return found


def check_run(root: Path, result: Any, *, remote_tasks: str | None = None) -> None:
    assert result.returncode == 0, result
    data = result.json()
    (task,) = data["tasks"]
    assert task["status"] == "completed", task
    sweep_dir = (root / "runs" / data["sweep_id"]).resolve()
    task_dir = Path(task["task_dir"]).resolve()
    assert task_dir.is_relative_to(sweep_dir / "tasks"), (task_dir, sweep_dir)
    expected_params = {"task": 1, **params()}
    assert task["params"] == expected_params

    # Byte for byte as hsm.spec.render writes it.
    received = json.loads((task_dir / "argv.json").read_text())
    expected = [hydra_override(f"++{k}", v) for k, v in expected_params.items()]
    assert received[: len(expected)] == expected
    output_arg, group_arg = received[len(expected) :]
    assert group_arg == f"++wandb.group={data['sweep_id']}"
    assert output_arg.startswith("++output.dir=")
    output_dir = output_arg.removeprefix("++output.dir=")
    if remote_tasks is None:
        assert Path(output_dir).resolve() == task_dir
    else:
        assert output_dir.startswith(remote_tasks) and "/../" not in output_dir, output_dir

    # And a real Hydra app reads back exactly the values of the sweep file.
    config = json.loads((task_dir / "hydra.json").read_text(encoding="utf-8"))
    for key, value in expected_params.items():
        assert dig(config, key) == value, (key, value)

    # Everything the run wrote is inside .hsm/ or the sweep folder.
    outside = {p for p in snapshot(root) if not p.startswith((".hsm", "runs", ".out"))}
    assert outside == {
        p for p in snapshot(root) if p.split("/")[0] in {"apps", "hsm_config.yaml", "sweep.yaml"}
    }
    assert {p.name for p in (root / "runs").iterdir()} == {data["sweep_id"]}


def test_hostile_values_and_names_on_this_machine(tmp_path: Path) -> None:
    root = project(tmp_path / "p", {**QUIET, "local": {"max_parallel_jobs": 1}}, sys.executable)
    result = hsm("run", "sweep.yaml", "--json", cwd=root, timeout=120)
    check_run(root, result)
    assert not canaries([tmp_path, Path.cwd() / "CANARY", Path(CANARY_ABS)])


def test_hostile_values_and_names_over_ssh(tmp_path: Path, testbed_hosts: list[Host]) -> None:
    host = testbed_hosts[0]
    site = sysconfig.get_paths()["purelib"]  # the hosts' python 3 imports Hydra from here
    remote = {
        "host": host.name,
        "remote_root": "/srv/hsm/root",
        "max_parallel_jobs": 1,
        "setup": [f"export PYTHONPATH={site}"],
    }
    config = {
        **QUIET,
        "distributed": {
            "include_local": False,
            "ssh_config": str(host.ssh_config_path),
            "remotes": {"h1": remote},
        },
    }
    root = project(tmp_path / "p", config, "/usr/bin/python3")
    result = hsm("run", "sweep.yaml", "--source", "h1", "--json", cwd=root, timeout=150)
    check_run(root, result, remote_tasks="/srv/hsm/root/")
    assert not canaries([tmp_path, host.disk_dir, host.path(CANARY_ABS)])


@pytest.fixture
def slurm(testbed: TestBed, slurm_local: SlurmCluster, tmp_path: Path) -> Iterator[SlurmCluster]:
    """The local cluster (the test bed first: its bring-up removes a running local cluster of
    the same prefix); no job of the test outlives it."""
    yield slurm_local
    cancel_leftovers(slurm_local, tmp_path)


def test_hostile_values_and_names_on_slurm(tmp_path: Path, slurm: SlurmCluster) -> None:
    config = {
        **QUIET,
        "distributed": {
            "include_local": False,
            "max_retries": 0,
            "remotes": {"cluster": {"type": "slurm", "host": "local"}},
        },
    }
    root = project(tmp_path / "p", config, sys.executable)
    result = hsm(
        "run", "sweep.yaml", "--source", "cluster", "--json", cwd=root, env=slurm.env(), timeout=150
    )
    check_run(root, result)
    assert not canaries([tmp_path, Path(CANARY_ABS)])


@pytest.mark.parametrize("name", REFUSED_NAMES, ids=[repr(n) for n in REFUSED_NAMES])
def test_names_hydra_cannot_carry_are_refused(name: str, tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "hsm_config.yaml").write_text(yaml.safe_dump(QUIET))
    spec = {"command": ["bash", "-c", "touch CANARY"], "sweep": {"grid": {name: [1]}}}
    (root / "sweep.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    before = snapshot(root)
    result = hsm("run", "sweep.yaml", cwd=root)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("hsm: error: sweep.yaml: "), result
    assert repr(name) in result.stderr and "not a valid Hydra override key" in result.stderr
    assert snapshot(root) == before
    assert not canaries([tmp_path])


@pytest.mark.parametrize("where", ["value", "name", "default"])
def test_nul_is_refused(where: str, tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "hsm_config.yaml").write_text(yaml.safe_dump(QUIET))
    grid: dict[str, Any] = {"a\0b": [1]} if where == "name" else {"a": ["x\0y"]}
    spec: dict[str, Any] = {"command": ["true"], "sweep": {"grid": grid}}
    if where == "default":
        spec["sweep"] = {"grid": {"a": [1]}}
        spec["defaults"] = {"b": "nul\0here"}
    (root / "sweep.yaml").write_text(yaml.safe_dump(spec))
    before = snapshot(root)
    result = hsm("run", "sweep.yaml", cwd=root)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert result.stderr.count("hsm: error: ") == 1, result
    assert "sweep.yaml" in result.stderr, result
    if where == "name":
        assert "'a\\x00b' is not a valid Hydra override key" in result.stderr, result
    else:
        assert "cannot contain a NUL character" in result.stderr, result
    # The message shows the NUL escaped; it never writes a raw NUL to the terminal.
    assert "\0" not in result.stderr, result
    assert snapshot(root) == before


def test_a_sweep_name_cannot_become_a_path_outside(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "hsm_config.yaml").write_text(yaml.safe_dump(QUIET))
    (root / "sweep.yaml").write_text(
        yaml.safe_dump({"command": ["true"], "sweep": {"grid": {"a": [1]}}})
    )
    before = snapshot(tmp_path)
    for name in ("../../etc", "..", ".", "a/../../b", "/etc"):
        result = hsm("run", "sweep.yaml", "--name", name, cwd=root)
        assert result.returncode == 2, (name, result)
        assert "--name" in result.stderr and "Traceback" not in result.stderr, result
    assert snapshot(tmp_path) == before
    # Names that are one harmless folder name are taken as they are, and never evaluated.
    for name in ("$(touch CANARY)", "-rf", "`touch CANARY`"):
        result = hsm("run", "sweep.yaml", "--name", name, "--json", cwd=root)
        if result.returncode == 2:
            assert "--name" in result.stderr and "Traceback" not in result.stderr, result
            continue
        assert result.returncode == 0, result
        assert result.json()["sweep_id"] == name
        assert Path(result.json()["sweep_dir"]).resolve() == (root / "runs" / name).resolve()
    assert not canaries([tmp_path])


@pytest.mark.parametrize(
    "name", ["x\ny", "x\ry", "x\ty", "x\x1b[31my"], ids=["newline", "cr", "tab", "escape"]
)
def test_a_sweep_name_with_control_characters_is_refused(name: str, tmp_path: Path) -> None:
    """The sweep ID goes into log lines, job names and job scripts: a control character in it
    would forge log lines (and break line-based files), so it is refused."""
    root = tmp_path / "p"
    root.mkdir()
    (root / "hsm_config.yaml").write_text(yaml.safe_dump(QUIET))
    (root / "sweep.yaml").write_text(
        yaml.safe_dump({"command": ["true"], "sweep": {"grid": {"a": [1]}}})
    )
    before = snapshot(tmp_path)
    result = hsm("run", "sweep.yaml", "--name", name, cwd=root)
    assert result.returncode == 2, result
    assert "--name" in result.stderr and "Traceback" not in result.stderr, result
    assert snapshot(tmp_path) == before
