"""hsm on Slurm against a hand-written array job (needs root: it starts the test-bed Slurm).

Both run N no-op elements on the same single-node Slurm, one after the other:

- by hand: ``sbatch --array=1-N`` of a script that runs ``true``, then ``squeue -j ID`` every
  second until the job is gone;
- hsm: ``hsm run sweep.yaml --source cluster`` (``host: local``), from the start of the
  command to its exit, with every element's status read back.

Run: .venv/bin/python bench/slurm_array.py [--tasks 100] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.hsmcli import HSM, hsm_env, write  # noqa: E402
from tests.testbed import SlurmCluster  # noqa: E402

POLL = 1.0  # seconds between squeue calls of the hand-written loop (hsm polls every second)


def by_hand(cluster: SlurmCluster, work: Path, n: int) -> float:
    script = write(work / "noop.sh", "#!/bin/bash\ntrue\n")
    env = {**os.environ, **cluster.env()}
    began = time.monotonic()
    job = subprocess.run(
        ["sbatch", "--parsable", "--output=/dev/null", f"--array=1-{n}", str(script)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    while subprocess.run(
        ["squeue", "-h", "-j", job, "-o", "%i"], env=env, capture_output=True, text=True
    ).stdout.strip():
        time.sleep(POLL)
    return time.monotonic() - began


def with_hsm(cluster: SlurmCluster, work: Path, n: int, index: int) -> float:
    root = work / f"project{index}"
    write(
        root / "hsm_config.yaml",
        f"""
        disk: {{project_min_free: 1MB, task_min_free: 1MB, warn_below: 1MB, kill_below: 1MB}}
        distributed:
          include_local: false
          remotes:
            cluster: {{type: slurm, host: local, max_parallel_jobs: {n}}}
    """,
    )
    write(
        root / "sweep.yaml",
        f"""
        command: ["true"]
        sweep:
          grid:
            i: [{", ".join(str(i) for i in range(1, n + 1))}]
        output_dir_arg: null
        wandb_group_arg: null
    """,
    )
    began = time.monotonic()
    subprocess.run(
        [*HSM, "run", "sweep.yaml", "--source", "cluster"],
        cwd=root,
        check=True,
        env=hsm_env(cluster.env()),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.monotonic() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--json", type=Path, metavar="FILE", help="also write the figures as JSON to FILE"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root: it starts a Slurm cluster", file=sys.stderr)
        return 2
    cluster = SlurmCluster(prefix=f"hsmbn{os.getpid()}", name="bench").start()
    try:
        with tempfile.TemporaryDirectory(prefix="hsm-bench-slurm-") as tmp:
            hand, tool = [], []
            for index in range(args.rounds):
                hand.append(by_hand(cluster, Path(tmp), args.tasks))
                tool.append(with_hsm(cluster, Path(tmp), args.tasks, index))
    finally:
        cluster.stop()
    best_hand, best_tool = min(hand), min(tool)
    print(f"| {args.tasks} no-op elements on the test-bed Slurm | seconds |")
    print("|---|---|")
    print(
        f"| sbatch --array=1-{args.tasks}, then squeue every {POLL:g} s until empty "
        f"| {best_hand:.1f} |"
    )
    print(f"| hsm run --source cluster (host: local) | {best_tool:.1f} |")
    print(f"| ratio hsm / by hand | {best_tool / best_hand:.2f} |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "tasks": args.tasks,
                    "hsm_s": best_tool,
                    "hand_s": best_hand,
                    "hsm_runs": tool,
                    "hand_runs": hand,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
