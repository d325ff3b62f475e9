"""Distributed dispatch benchmarks on the SSH test bed (needs root).

- makespan efficiency with sources of unequal speed (default settings): the ideal for the
  given slots (N / sum(slots_i / duration_i)) over the measured span from first start to
  last end. The tasks are shell one-liners (``sleep`` for the source's duration), so the
  figure measures hsm (dispatch, job wrapper, result pulls), not an interpreter's start;
- failover time: from a host's link being cut to its tasks running again elsewhere, with
  default settings and with ``health_check_interval: 5``;
- failover with a long queue: a host frozen whole (SIGSTOP of every process on it) while
  hundreds of short tasks wait: from the freeze to its tasks running elsewhere. Lost tasks
  go to the front of the queue, so the queue's length must not matter.

Run: .venv/bin/python bench/failsafe.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hsm.errors import StateError  # noqa: E402
from hsm.spec.config import DistributedConfig  # noqa: E402
from hsm.state import AttemptRow  # noqa: E402
from hsm.states import ACTIVE_ATTEMPT, AttemptState  # noqa: E402
from tests.hsmcli import HSM, attempts, hsm_env, latest_sweep, write  # noqa: E402
from tests.integration.ssh_support import bed_project  # noqa: E402
from tests.testbed import TestBed, pick_free_subnet  # noqa: E402

DURATIONS = {"h1": 0.3, "h2": 0.3, "h3": 0.9}  # h3 is three times slower
SLOTS = 2
# The default settings (the test-bed projects of the tests check health every second).
DEFAULT_INTERVAL = DistributedConfig.model_fields["health_check_interval"].default


def all_attempts(root: Path) -> list[AttemptRow]:
    """Every attempt so far; none while hsm is still creating the database."""
    try:
        sweep_id = latest_sweep(root)
        return attempts(root, sweep_id) if sweep_id else []
    except StateError:  # the schema is not there yet
        return []


def makespan(bed: TestBed, work: Path, n: int) -> tuple[float, float]:
    root = bed_project(
        work / "makespan",
        bed.hosts,
        slots=SLOTS,
        distributed={"health_check_interval": DEFAULT_INTERVAL},
    )
    # A shell task (not a Python script): the figure is about dispatch, so a task should take
    # its nominal time, not that plus an interpreter start on a busy machine.
    cases = " ".join(f"{host}) sleep {d} ;;" for host, d in DURATIONS.items())
    write(
        root / "sweep.yaml",
        f"""
        command: [sh, -c, 'case $HSM_SOURCE in {cases} esac']
        sweep:
          grid:
            i: [{", ".join(map(str, range(n)))}]
    """,
    )
    subprocess.run(
        [*HSM, "run", "sweep.yaml", "--distributed"],
        cwd=root,
        check=True,
        env=hsm_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows = [r for r in all_attempts(root) if r.state is AttemptState.COMPLETED]
    span = max(r.finished or r.started for r in rows) - min(r.started for r in rows)
    ideal = n / sum(SLOTS / d for d in DURATIONS.values())
    return ideal, span


def failover(bed: TestBed, work: Path, interval: float | None) -> float:
    for host in bed.hosts:
        host.reset()
    extra = {"health_check_interval": DEFAULT_INTERVAL if interval is None else interval}
    name = f"failover-{interval or 'default'}"
    root = bed_project(work / name, bed.hosts, slots=SLOTS, distributed=extra)
    write(root / "task.py", "import time\ntime.sleep(4)\n")
    write(
        root / "sweep.yaml",
        """
        script: task.py
        sweep:
          grid:
            i: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    """,
    )
    proc = subprocess.Popen(
        [*HSM, "run", "sweep.yaml", "--distributed"],
        cwd=root,
        env=hsm_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        victim = bed.hosts[0]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (root / ".hsm" / "hsm.db").exists():
                running = [
                    r
                    for r in all_attempts(root)
                    if r.source == "h1" and r.state is AttemptState.RUNNING
                ]
                if len(running) == SLOTS:
                    break
            time.sleep(0.05)
        numbers = {
            r.number
            for r in all_attempts(root)
            if r.source == "h1" and r.state is AttemptState.RUNNING
        }
        victim.cut_link()
        cut_at = time.time()
        while time.monotonic() < deadline + 60:
            moved = {
                r.number
                for r in all_attempts(root)
                if r.number in numbers and r.source != "h1" and r.started >= cut_at
            }
            if moved == numbers:
                return (
                    max(
                        r.started
                        for r in all_attempts(root)
                        if r.number in numbers and r.source != "h1"
                    )
                    - cut_at
                )
            time.sleep(0.05)
        raise RuntimeError("the tasks of the cut host were not restarted elsewhere")
    finally:
        proc.kill()
        proc.wait()
        bed.hosts[0].restore_link()


def failover_frozen(bed: TestBed, work: Path, queue: int) -> float:
    for host in bed.hosts:
        host.reset()
    root = bed_project(
        work / f"frozen-{queue}",
        bed.hosts,
        slots=SLOTS,
        distributed={"health_check_interval": DEFAULT_INTERVAL},
    )
    write(
        root / "sweep.yaml",
        f"""
        command: [sh, -c, 'sleep 0.5']
        sweep:
          grid:
            i: [{", ".join(map(str, range(queue)))}]
    """,
    )
    proc = subprocess.Popen(
        [*HSM, "run", "sweep.yaml", "--distributed"],
        cwd=root,
        env=hsm_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    victim = bed.hosts[0]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = sum(r.state is AttemptState.COMPLETED for r in all_attempts(root))
            running = [
                r
                for r in all_attempts(root)
                if r.source == "h1" and r.state is AttemptState.RUNNING
            ]
            if done >= 20 and len(running) == SLOTS:
                break
            time.sleep(0.02)
        victim.freeze()
        frozen_at = time.time()
        numbers = {
            r.number for r in all_attempts(root) if r.source == "h1" and r.state in ACTIVE_ATTEMPT
        }
        while time.monotonic() < deadline + 60:
            moved = [
                r
                for r in all_attempts(root)
                if r.number in numbers and r.source != "h1" and r.started >= frozen_at
            ]
            if {r.number for r in moved} == numbers:
                return max(r.started for r in moved) - frozen_at
            time.sleep(0.02)
        raise RuntimeError("the tasks of the frozen host were not restarted elsewhere")
    finally:
        victim.thaw_sshd()
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=120)
    parser.add_argument(
        "--queue", type=int, default=600, help="tasks of the long-queue failover (default 600)"
    )
    parser.add_argument(
        "--json", type=Path, metavar="FILE", help="also write the figures as JSON to FILE"
    )
    args = parser.parse_args()
    bed = TestBed(prefix="hsmbf", subnet=pick_free_subnet())
    bed.up(3)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            ideal, span = makespan(bed, work, args.tasks)
            fo_default = failover(bed, work, None)
            fo_5 = failover(bed, work, 5)
            fo_frozen = failover_frozen(bed, work, args.queue)
    finally:
        bed.down()
    print(f"{'benchmark':<48} {'figure':>10} {'target':>10}")
    print(f"{'makespan, unequal sources: ideal (s)':<48} {ideal:>10.2f}")
    print(f"{'makespan, unequal sources: measured (s)':<48} {span:>10.2f}")
    print(f"{'makespan efficiency (ideal / measured)':<48} {ideal / span:>10.2f} {'>= 0.90':>10}")
    print(f"{'failover, default settings (s)':<48} {fo_default:>10.2f} {'<= 10':>10}")
    print(f"{'failover, health_check_interval: 5 (s)':<48} {fo_5:>10.2f} {'<= 10':>10}")
    label = f"failover, host frozen, {args.queue} queued (s)"
    print(f"{label:<48} {fo_frozen:>10.2f} {'<= 5':>10}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "tasks": args.tasks,
                    "ideal_s": ideal,
                    "measured_s": span,
                    "efficiency": ideal / span,
                    "failover_default_s": fo_default,
                    "failover_interval5_s": fo_5,
                    "queue": args.queue,
                    "failover_frozen_s": fo_frozen,
                }
            )
        )


if __name__ == "__main__":
    main()
