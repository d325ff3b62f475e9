"""Run inside each task: keeps the job's return value in its task folder for the launcher."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback

RETURN_FILE = "hsm_return.pkl"
"""In the task folder (Hydra's output folder): the pickled return value of the job."""

log = logging.getLogger(__name__)


class SaveReturnValue(Callback):
    def on_job_end(self, config: Any, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status is not JobStatus.COMPLETED:
            return
        path = Path(HydraConfig.get().runtime.output_dir) / RETURN_FILE
        try:
            data = pickle.dumps(job_return.return_value)
        except Exception as exc:  # noqa: BLE001 - any pickling failure is reported the same
            log.warning("hsm: the return value cannot be pickled, the launcher gets None: %s", exc)
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
