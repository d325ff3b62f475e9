"""The launcher's config, ``hydra/launcher=hsm``, registered in Hydra's config store."""
# No "from __future__ import annotations": Hydra loads this module outside sys.modules,
# and the dataclass and OmegaConf need the real annotations.

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore


@dataclass
class HsmLauncherConf:
    _target_: str = "hydra_plugins.hsm_launcher.launcher.HsmLauncher"
    sources: list[str] = field(default_factory=list)
    """Sources to run on (``hsm run --source``); none: this machine."""
    distributed: bool = False
    """Every enabled source (``hsm run --distributed``)."""
    parallel: int | None = None
    """``hsm run --parallel``."""
    config: str | None = None
    """The project config; none: ``hsm_config.yaml`` in the current folder or above."""
    name: str | None = None
    """The sweep ID (``hsm run --name``); none: a new one."""
    python: str | None = None
    """The interpreter of tasks on this machine; none: the one running Hydra now."""


ConfigStore.instance().store(
    group="hydra/launcher", name="hsm", node=HsmLauncherConf, provider="hsm"
)
