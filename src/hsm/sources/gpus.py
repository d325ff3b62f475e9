"""GPU discovery: ``gpus: all`` asks nvidia-smi which GPUs exist."""

from __future__ import annotations

import shutil

from hsm.sources.process import CommandError, run_local_sync

NVIDIA_SMI_QUERY = ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"]


def parse_gpu_indices(text: str) -> list[int]:
    return [int(line.strip()) for line in text.splitlines() if line.strip().isdigit()]


def detect_local_gpus() -> list[int]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = run_local_sync(NVIDIA_SMI_QUERY, timeout=10, check=True, what="nvidia-smi").stdout
    except (OSError, TimeoutError, CommandError):
        return []
    return parse_gpu_indices(out)
