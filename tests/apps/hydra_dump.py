"""A minimal Hydra app for tests: writes its resolved config as JSON.

The output file is named by the environment variable ``HYDRA_DUMP_OUT``. The app
runs in its working directory and writes nothing else (see conf/config.yaml).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    data = OmegaConf.to_container(cfg, resolve=True)
    Path(os.environ["HYDRA_DUMP_OUT"]).write_text(
        json.dumps(data, ensure_ascii=False), encoding="utf-8"
    )


if __name__ == "__main__":
    main()
