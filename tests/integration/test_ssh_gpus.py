"""GPUs on SSH hosts: ``gpus: all`` asks nvidia-smi, an allowlist is taken as is; slots are
split by ``resources.gpus`` and each task gets its own CUDA_VISIBLE_DEVICES.

There is no GPU on the test machine: one host gets an ``nvidia-smi`` stand-in (a script on a
tmpfs mounted over /usr/local/sbin in that host's mount namespace only) that reports four
GPUs. What is tested is hsm's side: discovery, slot split, the environment of each task."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hsmcli import hsm
from tests.integration.ssh_support import make_project, remote
from tests.testbed import Host

pytestmark = [pytest.mark.root, pytest.mark.testbed]

NVIDIA_SMI = """#!/bin/sh
# nvidia-smi stand-in for the tests: four GPUs, no hardware.
case "$*" in
  *--query-gpu=index*) printf '0\\n1\\n2\\n3\\n' ;;
  *) echo "NVIDIA-SMI stand-in (no GPU)" ;;
esac
"""


@pytest.fixture
def gpu_host(testbed_hosts: list[Host]) -> Iterator[Host]:
    host = testbed_hosts[2]
    host.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=755", "fake-gpu", "/usr/local/sbin"],
        check=True,
    )
    try:
        host.run(
            [
                "sh",
                "-c",
                "cat > /usr/local/sbin/nvidia-smi && chmod 755 /usr/local/sbin/nvidia-smi",
            ],
            input=NVIDIA_SMI,
            check=True,
        )
        yield host
    finally:
        host.run(["umount", "/usr/local/sbin"], check=True)


def test_gpu_slots_and_visible_devices(
    tmp_path: Path, testbed_hosts: list[Host], gpu_host: Host
) -> None:
    other = testbed_hosts[1]
    remotes = {
        "gpu": remote(gpu_host, gpus="all", max_parallel_jobs=8),
        "pair": remote(other, gpus=[5, 7], max_parallel_jobs=8),
    }
    sweep = (
        "script: task.py\nsweep:\n  grid:\n    i: [1, 2, 3, 4, 5, 6, 7, 8]\n"
        "defaults: {sleep: 0.6}\nresources: {gpus: 2}\n"
    )
    root = make_project(tmp_path / "proj", [gpu_host, other], remotes=remotes, sweep=sweep)
    result = hsm("run", "sweep.yaml", "--source", "gpu", "--source", "pair", "--json", cwd=root)
    assert result.returncode == 0, result
    data = result.json()
    allowed = {"gpu": {"0,1", "2,3"}, "pair": {"5,7"}}
    spans: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for task in data["tasks"]:
        folder = Path(task["task_dir"])
        devices = json.loads((folder / "result.json").read_text())["env"]["CUDA_VISIBLE_DEVICES"]
        assert devices in allowed[task["source"]], (task, devices)
        assert f"CUDA_VISIBLE_DEVICES={devices}" in (folder / "task_info.txt").read_text()
        status = json.loads((folder / "status.json").read_text())
        spans.setdefault((task["source"], devices), []).append(
            (status["started"], status["finished"])
        )
    assert {s for s, _ in spans} == {"gpu", "pair"}
    assert len({d for s, d in spans if s == "gpu"}) == 2  # both pairs of the 4 GPUs used
    for key, runs in spans.items():  # one task at a time on each group of GPUs
        runs.sort()
        for (_, end), (start, _) in zip(runs, runs[1:], strict=False):
            assert start >= end, (key, runs)


def test_gpus_all_without_nvidia_smi_is_an_error(tmp_path: Path, testbed_hosts: list[Host]) -> None:
    host = testbed_hosts[0]
    root = make_project(tmp_path / "proj", [host], n=1, remotes={"h1": remote(host, gpus="all")})
    result = hsm("run", "sweep.yaml", "--source", "h1", cwd=root)
    assert result.returncode == 2, result
    assert "gpus: all, but nvidia-smi fails" in result.stderr
