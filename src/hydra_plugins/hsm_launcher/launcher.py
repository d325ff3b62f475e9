"""The launcher: a Hydra multirun batch becomes one ordinary hsm sweep.

Each job's overrides become the parameters of one task (a ``paired`` group, so task N is
job N), the task runs the same Hydra app in single-run mode with its Hydra outputs in the
task folder, and a callback in the task keeps its return value there. ``hsm run`` runs the
sweep (disk guard, failsafe, state, report) while the launcher waits; it then returns one
``JobReturn`` per job, in order.
"""

from __future__ import annotations

import json
import logging
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType, ValueType
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hsm.sources.process import run_local_sync
from hsm.spec.config import find_config
from hydra_plugins.hsm_launcher.callback import RETURN_FILE

log = logging.getLogger(__name__)

CALLBACK_KEY = "++hydra.callbacks.hsm_return._target_"
CALLBACK = "hydra_plugins.hsm_launcher.callback.SaveReturnValue"
SWEEP_FILE = "hsm_sweep.yaml"


class HsmLaunchError(RuntimeError):
    pass


def job_params(job_overrides: Sequence[Sequence[str]]) -> dict[str, list[Any]]:
    """The jobs' overrides as equally long value lists per key, in job order."""
    parser = OverridesParser.create()
    columns: dict[str, list[Any]] = {}
    for index, overrides in enumerate(job_overrides):
        keys = []
        for override in parser.parse_overrides(list(overrides)):
            if override.type is OverrideType.DEL or override.value_type is not ValueType.ELEMENT:
                raise HsmLaunchError(f"the hsm launcher cannot pass {override.input_line!r}")
            key = override.get_key_element()
            keys.append(key)
            columns.setdefault(key, []).append(override.value())
        if index and keys != list(columns):
            raise HsmLaunchError(
                "the hsm launcher needs the same keys in every job; job "
                f"{index} has {keys}, the first one {list(columns)}"
            )
    return columns


class HsmLauncher(Launcher):
    def __init__(self, **params: Any) -> None:
        self.params = params
        self.config: DictConfig | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config

    # -- the sweep -------------------------------------------------------------------------
    def _project_root(self) -> Path:
        explicit = self.params.get("config")
        path = Path(explicit).expanduser().resolve() if explicit else find_config(Path.cwd())
        return path.parent if path is not None else Path.cwd().resolve()

    def sweep_spec(self, job_overrides: Sequence[Sequence[str]]) -> dict[str, Any]:
        params = job_params(job_overrides)
        if not params:
            raise HsmLaunchError("the hsm launcher needs at least one override per job")
        script = Path(sys.argv[0]).resolve()
        root = self._project_root()
        remote = bool(self.params.get("sources")) or bool(self.params.get("distributed"))
        spec: dict[str, Any] = {
            "hydra": True,
            "sweep": {"paired": [params]},
            "defaults": {CALLBACK_KEY: CALLBACK},
        }
        if remote:
            if not script.is_relative_to(root):
                raise HsmLaunchError(
                    f"{script} is not in the hsm project {root}: it would "
                    "not be pushed to the remote sources"
                )
            spec["script"] = script.relative_to(root).as_posix()
        else:
            spec["command"] = [self.params.get("python") or sys.executable, str(script)]
        return spec

    def hsm_argv(self, sweep_file: Path) -> list[str]:
        argv = [sys.executable, "-m", "hsm", "run", str(sweep_file), "--json"]
        if self.params.get("distributed"):
            argv.append("--distributed")
        for source in self.params.get("sources") or ():
            argv += ["--source", str(source)]
        for option in ("parallel", "name", "config"):
            value = self.params.get(option)
            if value is not None:
                argv += [f"--{option}", str(value)]
        return argv

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        sweep_file = sweep_dir / SWEEP_FILE
        sweep_file.write_text(
            yaml.safe_dump(self.sweep_spec(job_overrides), sort_keys=False, allow_unicode=True),
            encoding="utf-8",
        )
        log.info("hsm: launching %d job(s) as an hsm sweep (%s)", len(job_overrides), sweep_file)
        # hsm's progress and log lines go to the terminal; its JSON result comes back here.
        proc = run_local_sync(self.hsm_argv(sweep_file), stderr=False)
        try:
            data = json.loads(proc.stdout)
        except ValueError:
            data = None
        if proc.returncode not in (0, 1) or not isinstance(data, dict) or "tasks" not in data:
            raise HsmLaunchError(
                f"hsm run failed (exit {proc.returncode}); its message is "
                "above. The sweep file is " + str(sweep_file)
            )
        tasks = sorted(data["tasks"], key=lambda t: t["number"])
        return [
            self._job_return(task, list(overrides), str(data["sweep_id"]))
            for task, overrides in zip(tasks, job_overrides, strict=True)
        ]

    def _job_return(self, task: dict[str, Any], overrides: list[str], sweep_id: str) -> JobReturn:
        assert self.config is not None
        task_dir = Path(task["task_dir"])
        hydra_dir = task_dir / ".hydra"
        ret = JobReturn(
            overrides=overrides,
            working_dir=str(task_dir),
            task_name=str(self.config.hydra.job.name),
        )
        if (hydra_dir / "config.yaml").is_file():
            ret.cfg = OmegaConf.load(hydra_dir / "config.yaml")  # type: ignore[assignment]
        if (hydra_dir / "hydra.yaml").is_file():
            ret.hydra_cfg = OmegaConf.load(hydra_dir / "hydra.yaml")  # type: ignore[assignment]
        if task["status"] == "completed":
            ret.status = JobStatus.COMPLETED
            path = task_dir / RETURN_FILE
            ret.return_value = pickle.loads(path.read_bytes()) if path.is_file() else None
        else:
            ret.status = JobStatus.FAILED
            ret.return_value = HsmLaunchError(
                f"task {task['number']} of hsm sweep {sweep_id} {task['status']}"
                f" ({task['cause']}); see {task_dir}; rerun it with: hsm resume {sweep_id}"
                " --retry-failed"
            )
        return ret
