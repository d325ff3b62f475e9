"""Project config and sweep spec: models, validation, expansion and argument rendering."""

from hsm.spec.config import LoadedConfig, ProjectConfig, RemoteConfig, load_config, local_slots
from hsm.spec.expand import count_tasks, iter_tasks
from hsm.spec.render import hydra_override, hydra_value, task_argv
from hsm.spec.sweep import SweepSpec, load_sweep

__all__ = [
    "LoadedConfig",
    "ProjectConfig",
    "RemoteConfig",
    "SweepSpec",
    "count_tasks",
    "hydra_override",
    "hydra_value",
    "iter_tasks",
    "load_config",
    "load_sweep",
    "local_slots",
    "task_argv",
]
