"""The hsm launcher plugin with hydra-core from PyPI: ``-m hydra/launcher=hsm`` runs the
multirun as an ordinary hsm sweep, blocks, and gives each job's return value back to Hydra."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from tests.hsmcli import hsm
from tests.integration.cluster_support import QUIET
from tests.testbed import Host

pytest.importorskip("hydra")
pytestmark = pytest.mark.timeout(180)

APP = Path(__file__).resolve().parents[1] / "apps" / "hydra_strict"
SRC = Path(__file__).resolve().parents[2] / "src"


def project(root: Path) -> Path:
    shutil.copytree(APP, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "hsm_config.yaml").write_text(
        yaml.safe_dump({**QUIET, "local": {"max_parallel_jobs": 2}})
    )
    return root


def test_multirun_with_the_hsm_launcher_is_an_ordinary_sweep(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            "-m",
            "hydra/launcher=hsm",
            "lr=0.1,0.25",
            "optim=adam,sgd",
            "hydra.launcher.name=hl",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=150,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert "sweep hl: 4 task(s) on local" in proc.stderr

    status = hsm("status", "hl", "--json", cwd=root)
    assert status.returncode == 0, status
    data = status.json()
    assert data["state"] == "completed" and data["counts"]["completed"] == 4
    jobs = [(t["params"]["lr"], t["params"]["optim"]) for t in data["tasks"]]
    assert jobs == [(0.1, "adam"), (0.1, "sgd"), (0.25, "adam"), (0.25, "sgd")]
    for task in data["tasks"]:
        task_dir = Path(task["task_dir"])
        lr, optim = task["params"]["lr"], task["params"]["optim"]
        overrides = yaml.safe_load((task_dir / ".hydra" / "overrides.yaml").read_text())
        assert overrides[:2] == [f"lr={lr}", f"optim={optim}"], overrides
        assert pickle.loads((task_dir / "hsm_return.pkl").read_bytes()) == lr * 2
        assert (task_dir / "train.log").is_file()
    # hsm resume knows it too: nothing is left to run.
    resumed = hsm("resume", "hl", "--json", cwd=root)
    assert resumed.returncode == 0, resumed
    assert resumed.json()["counts"]["completed"] == 4


def test_the_launcher_returns_each_jobs_value_and_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.utils import JobStatus

    from hydra_plugins.hsm_launcher.launcher import HsmLauncher

    root = project(tmp_path / "p")
    monkeypatch.chdir(root)
    monkeypatch.setattr(sys, "argv", [str(root / "train.py")])
    with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config", overrides=["hydra/launcher=hsm"], return_hydra_config=True
        )
    launcher = HsmLauncher(name="direct")
    launcher.setup(hydra_context=None, task_function=None, config=cfg)  # type: ignore[arg-type]
    returns = launcher.launch(
        [["lr=0.5", "optim=sgd"], ["lr=boom", "optim=adam"], ["lr=2", "optim=adam"]],
        initial_job_idx=0,
    )

    assert [r.status for r in returns] == [
        JobStatus.COMPLETED,
        JobStatus.FAILED,
        JobStatus.COMPLETED,
    ]
    assert returns[0].return_value == 1.0 and returns[2].return_value == 4.0
    assert returns[0].overrides == ["lr=0.5", "optim=sgd"]
    assert returns[0].cfg is not None and returns[0].cfg.optim.name == "sgd"
    assert returns[0].working_dir == str(root / "runs" / "direct" / "tasks" / "task_0001")
    with pytest.raises(RuntimeError, match="task 2 of hsm sweep direct failed"):
        _ = returns[1].return_value
    assert "hsm resume direct --retry-failed" in str(returns[1]._return_value)


def test_the_launcher_runs_the_jobs_on_an_ssh_host(
    tmp_path: Path, testbed_hosts: list[Host]
) -> None:
    host = testbed_hosts[0]
    # The host's python imports Hydra and the launcher's callback from this checkout.
    path = ":".join([sysconfig.get_paths()["purelib"], str(SRC)])
    remote = {
        "host": host.name,
        "remote_root": "/srv/hsm/root",
        "max_parallel_jobs": 2,
        "setup": [f"export PYTHONPATH={path}"],
    }
    root = project(tmp_path / "p")
    (root / "hsm_config.yaml").write_text(
        yaml.safe_dump(
            {
                **QUIET,
                "distributed": {
                    "include_local": False,
                    "ssh_config": str(host.ssh_config_path),
                    "remotes": {"h1": remote},
                },
            }
        )
    )
    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            "-m",
            "hydra/launcher=hsm",
            "lr=0.5,1.5",
            "hydra.launcher.sources=[h1]",
            "hydra.launcher.name=remote",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=150,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    data = hsm("status", "remote", "--json", cwd=root).json()
    assert [t["source"] for t in data["tasks"]] == ["h1", "h1"]
    for task in data["tasks"]:
        task_dir = Path(task["task_dir"])
        assert pickle.loads((task_dir / "hsm_return.pkl").read_bytes()) == task["params"]["lr"] * 2
        values = json.loads((task_dir / "values.json").read_text())
        assert values["output_dir"].startswith("/srv/hsm/root/p/sweeps/remote/h1/"), values
