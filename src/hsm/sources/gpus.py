"""GPU discovery: ``gpus: all`` asks nvidia-smi which GPUs exist."""

from __future__ import annotations

import shutil
import subprocess

NVIDIA_SMI_QUERY = ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"]


def parse_gpu_indices(text: str) -> list[int]:
    return [int(line.strip()) for line in text.splitlines() if line.strip().isdigit()]


def detect_local_gpus() -> list[int]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            NVIDIA_SMI_QUERY, capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_gpu_indices(out)
