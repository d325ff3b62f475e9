"""Large sweeps: expand a 100,000-task grid and record it in the state, then ask for it.

    .venv/bin/python bench/scale.py [--tasks 100000]

Each step runs in a process of its own, so that its wall time includes the start of
Python and its peak memory (``ru_maxrss``) is its own:

1. expand the grid and record the sweep and all its tasks in the state database (what
   ``hsm run`` does before the first task starts);
2. ``hsm status ID``, ``hsm status ID --json`` (every task) and ``hsm list``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HSM = [sys.executable, "-m", "hsm.cli"]

CREATE = """\
import sys, time
from pathlib import Path
from hsm.engine.service import create_sweep, open_project, plan_run
start = time.perf_counter()
project = open_project(None)
plan = plan_run(project, Path("sweep.yaml"))
create_sweep(project, plan, sweep_id="scale", command_line="bench/scale.py")
print(f"{plan.total} {time.perf_counter() - start:.3f}")
"""


def measure(argv: list[str], cwd: Path) -> tuple[float, float, str]:
    """(wall seconds, peak memory in MB, stdout) of one process."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if code != 0:
            sys.exit(f"{' '.join(argv)} failed (exit {code}): {err.read().decode()}")
        return wall, usage.ru_maxrss / 1024, out.read().decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument(
        "--json", type=Path, metavar="FILE", help="also write the figures as JSON to FILE"
    )
    args = parser.parse_args()
    a = 10 ** (len(str(args.tasks)) // 2)
    b = math.ceil(args.tasks / a)
    work = Path(tempfile.mkdtemp(prefix="hsm-scale-"))
    try:
        (work / "hsm_config.yaml").write_text("local:\n  max_parallel_jobs: 2\n")
        (work / "sweep.yaml").write_text(
            'command: ["true"]\n'
            f"max_runs: {args.tasks}\n"
            "sweep:\n  grid:\n"
            f"    a: [{', '.join(map(str, range(a)))}]\n"
            f"    b: [{', '.join(f'v{i}' for i in range(b))}]\n"
        )
        rows: list[tuple[str, float, float | None, float | None]] = []
        wall, mem, out = measure([sys.executable, "-c", CREATE], work)
        total, inner = out.split()
        rows.append((f"expand + record {int(total):,} tasks", wall, mem, 5.0))
        rows.append(("  of which in hsm (after imports)", float(inner), None, None))
        for label, argv, target in [
            ("hsm status ID", [*HSM, "status", "scale"], 1.0),
            ("hsm status ID --json (every task)", [*HSM, "status", "scale", "--json"], None),
            ("hsm list", [*HSM, "list"], 1.0),
        ]:
            wall, mem, _ = measure(argv, work)
            rows.append((label, wall, mem, target))
        db = work / ".hsm" / "hsm.db"
        size = db.stat().st_size + sum(p.stat().st_size for p in db.parent.glob("hsm.db-*"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'step':<40} | {'wall s':>7} | {'peak MB':>7} | target")
    print(f"{'-' * 41}|{'-' * 9}|{'-' * 9}|{'-' * 15}")
    for label, seconds, peak, target in rows:
        shown = f"{peak:7.0f}" if peak is not None else " " * 7
        goal = f"< {target:g} s, < 300 MB" if target else ""
        print(f"{label:<40} | {seconds:7.2f} | {shown} | {goal}")
    print(f"\nstate database: {size / 1e6:.1f} MB")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "tasks": args.tasks,
                    "db_mb": size / 1e6,
                    "rows": [
                        {
                            "step": label.strip(),
                            "wall_s": seconds,
                            "peak_mb": peak,
                            "target_s": target,
                        }
                        for label, seconds, peak, target in rows
                    ],
                }
            )
        )
    failed = [r for r in rows if r[3] and (r[1] > r[3] or (r[2] or 0) > 300)]
    if failed:
        print("over target: " + ", ".join(r[0] for r in failed))
        sys.exit(1)


if __name__ == "__main__":
    main()
