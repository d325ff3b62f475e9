"""Scheduler queries of hsm at steady state: slurmctld's RPC counts (``sdiag``) while a sweep
waits on long-running elements (needs root: it starts the test-bed Slurm).

A sweep of 2 elements that sleep is started with ``hsm run --source cluster`` (``host:
local``). After ``--warmup`` seconds (the poll interval has grown to its cap by then) the
controller's statistics are reset (``sdiag --reset``); ``--window`` seconds later ``sdiag``
is read, and the RPCs by message type are extrapolated to an hour (count x 3600 / window).
RPCs the node daemon sends (registrations, ...) and ``sdiag``'s own are left out. Then the
same window is measured with no sweep (the baseline), and the sweep is interrupted.

Run: .venv/bin/python bench/slurm_rpcs.py [--warmup 70] [--window 120]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.hsmcli import HSM, hsm_env, write  # noqa: E402
from tests.testbed import SlurmCluster  # noqa: E402

NOT_CLIENT = (
    "MESSAGE_NODE_REGISTRATION_STATUS",
    "REQUEST_STATS_INFO",
    "MESSAGE_EPILOG_COMPLETE",
    "REQUEST_COMPLETE_PROLOG",
    "REQUEST_STEP_COMPLETE",
    "REQUEST_COMPLETE_BATCH_SCRIPT",
    "REQUEST_PING",
    "RESPONSE_PING_SLURMD",
)
LINE = re.compile(r"^\s+(\w+)\s+\(\s*\d+\)\s+count:(\d+)")


def rpcs(cluster: SlurmCluster) -> dict[str, int]:
    """RPC counts by message type since the last reset."""
    text = subprocess.run(
        ["sdiag"], env={**os.environ, **cluster.env()}, check=True, capture_output=True, text=True
    ).stdout
    section = text.split("by message type", 1)[1].split("by user", 1)[0]
    counts = {
        m.group(1): int(m.group(2)) for line in section.splitlines() if (m := LINE.match(line))
    }
    return {k: v for k, v in counts.items() if k not in NOT_CLIENT}


def window(cluster: SlurmCluster, seconds: float) -> dict[str, int]:
    subprocess.run(
        ["sdiag", "--reset"], env={**os.environ, **cluster.env()}, check=True, capture_output=True
    )
    time.sleep(seconds)
    return rpcs(cluster)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=float, default=70.0)
    parser.add_argument("--window", type=float, default=120.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root: it starts a Slurm cluster", file=sys.stderr)
        return 2
    cluster = SlurmCluster(prefix=f"hsmrp{os.getpid()}", name="rpcs").start()
    try:
        with tempfile.TemporaryDirectory(prefix="hsm-bench-rpcs-") as tmp:
            root = Path(tmp)
            write(
                root / "hsm_config.yaml",
                """
                disk: {project_min_free: 1MB, task_min_free: 1MB, warn_below: 1MB,
                       kill_below: 1MB}
                distributed:
                  include_local: false
                  remotes:
                    cluster: {type: slurm, host: local, max_parallel_jobs: 2}
            """,
            )
            write(
                root / "sweep.yaml",
                """
                command: ["bash", "-c", "sleep 3600", "task"]
                sweep:
                  grid:
                    i: [1, 2]
                output_dir_arg: null
                wandb_group_arg: null
            """,
            )
            hsm = subprocess.Popen(
                [*HSM, "run", "sweep.yaml", "--source", "cluster"],
                cwd=root,
                env=hsm_env(cluster.env()),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                time.sleep(args.warmup)
                with_hsm = window(cluster, args.window)
                if hsm.poll() is not None:
                    print(
                        f"hsm ended early (exit {hsm.returncode}):\n{hsm.communicate()[1]}",
                        file=sys.stderr,
                    )
                    return 1
            finally:
                hsm.send_signal(signal.SIGINT)
                hsm.wait(timeout=120)
            baseline = window(cluster, min(args.window, 30.0))
    finally:
        cluster.stop()
    per_hour = 3600.0 / args.window
    total = sum(with_hsm.values())
    print(
        f"| RPC type (over {args.window:g} s at steady state, after {args.warmup:g} s) "
        "| count | per hour |"
    )
    print("|---|---|---|")
    for kind, count in sorted(with_hsm.items()):
        print(f"| {kind} | {count} | {count * per_hour:.0f} |")
    print(f"| all client RPCs | {total} | {total * per_hour:.0f} |")
    print(
        f"| baseline without a sweep ({min(args.window, 30.0):g} s) | {sum(baseline.values())} | |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
