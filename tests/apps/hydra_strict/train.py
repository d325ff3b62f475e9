"""A standard Hydra app for tests: a strict config with a defaults list and a config group.

It knows nothing of hsm: no output or W&B keys. It writes ``values.json`` (its resolved
config, its run folder and its working folder) into Hydra's output folder and logs one line
through Hydra's logging, so the test can see where Hydra put its outputs.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    output_dir = HydraConfig.get().runtime.output_dir
    log.info("training with %s", cfg.optim.name)
    values = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "output_dir": output_dir,
        "cwd": os.getcwd(),
    }
    Path(output_dir, "values.json").write_text(json.dumps(values), encoding="utf-8")
    return float(cfg.lr) * 2


if __name__ == "__main__":
    main()
