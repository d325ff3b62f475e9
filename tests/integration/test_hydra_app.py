"""A standard Hydra app run as it is (tests/apps/hydra_strict: strict config, a defaults list,
a config group, no output or W&B keys), through ``hsm run`` on this machine and over SSH.

hsm recognises it by ``@hydra.main`` and adds only ``hydra.run.dir=<task folder>``: the
config-group choice works, the values round-trip, and Hydra's own outputs (``.hydra/``, the
job's log) land in each task's own folder.
"""

from __future__ import annotations

import json
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.hsmcli import hsm
from tests.integration.cluster_support import QUIET
from tests.testbed import Host

pytest.importorskip("hydra")
pytestmark = pytest.mark.timeout(180)

APP = Path(__file__).resolve().parents[1] / "apps" / "hydra_strict"
GRID = {"optim": ["adam", "sgd"], "lr": [0.001, 0.5], "name": ["a b, c"]}


def project(root: Path, config: dict[str, Any]) -> Path:
    shutil.copytree(APP, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "hsm_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    spec = {"script": "train.py", "sweep": {"grid": GRID}}
    (root / "sweep.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return root


def check(result: Any, *, remote_tasks: str | None = None) -> None:
    assert result.returncode == 0, result
    data = result.json()
    assert data["counts"]["completed"] == 4, data
    seen = set()
    for task in data["tasks"]:
        task_dir = Path(task["task_dir"])
        params = task["params"]
        values = json.loads((task_dir / "values.json").read_text(encoding="utf-8"))
        config = values["config"]
        assert config["optim"]["name"] == params["optim"]
        assert ("momentum" in config["optim"]) == (params["optim"] == "sgd")
        assert config["lr"] == params["lr"] and config["name"] == "a b, c"
        assert "output" not in config and "wandb" not in config
        # Hydra's run folder is the task folder, here or on the host.
        where = remote_tasks or str(task_dir.parent)
        assert values["output_dir"] == f"{where}/{task_dir.name}", values
        overrides = yaml.safe_load((task_dir / ".hydra" / "overrides.yaml").read_text())
        # Hydra keeps the task's own overrides there (hydra.* ones go to hydra.yaml).
        assert overrides == [f"optim={params['optim']}", f"lr={params['lr']}", "name='a b, c'"], (
            overrides
        )
        assert (task_dir / ".hydra" / "config.yaml").is_file()
        assert "training with" in (task_dir / "train.log").read_text()
        seen.add((params["optim"], params["lr"]))
    assert len(seen) == 4


def test_a_strict_hydra_app_runs_unmodified_here(tmp_path: Path) -> None:
    root = project(tmp_path / "p", {**QUIET, "local": {"max_parallel_jobs": 2}})
    # The tasks run the interpreter on PATH: the one that has Hydra.
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    result = hsm("run", "sweep.yaml", "--json", cwd=root, env=env, timeout=150)
    check(result)
    assert not (root / "outputs").exists()


def test_a_strict_hydra_app_runs_unmodified_over_ssh(
    tmp_path: Path, testbed_hosts: list[Host]
) -> None:
    host = testbed_hosts[0]
    site = sysconfig.get_paths()["purelib"]  # the hosts' python 3 imports Hydra from here
    remote = {
        "host": host.name,
        "remote_root": "/srv/hsm/root",
        "max_parallel_jobs": 2,
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
    root = project(tmp_path / "p", config)
    result = hsm("run", "sweep.yaml", "--source", "h1", "--json", cwd=root, timeout=150)
    data = result.json() if result.returncode == 0 else None
    assert data is not None, result
    tasks = f"/srv/hsm/root/p/sweeps/{data['sweep_id']}/h1"
    check(result, remote_tasks=tasks)
