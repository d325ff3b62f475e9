"""Dispatch speed on this machine: N no-op tasks through ``hsm run`` vs GNU parallel.

    .venv/bin/python bench/local_dispatch.py [--tasks 1000] [--slots 2] [--profile FILE]

Both run the same N ``true`` commands, ``--slots`` at a time. hsm runs them with its
disk guard on (the default thresholds), so each task goes through the job wrapper
(free-space pre-check, private temp folders, status file, task_info.txt). A third row
runs only the job wrapper on N fresh task folders, from a minimal loop: the cost of the
wrapper itself, without the hsm controller. Installs Debian's ``parallel`` when it
is missing and this runs as root.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from hsm.jobscript import WRAPPER_PATH, GuardSettings, TaskSpec, write_spec

HSM = [sys.executable, "-m", "hsm.cli"]

CONFIG = """\
local:
  max_parallel_jobs: {slots}
# The disk guard keeps its defaults (on). The load limit is raised so that the health
# check of this machine, itself busy with the benchmark, never holds tasks back.
health:
  max_load_per_core: 1000
"""


@dataclass(frozen=True)
class Measure:
    name: str
    wall: float
    cpu: float  # user + system of the process and every child it waited for


def timed(
    argv: list[str], *, cwd: Path, stdin: bytes | None = None, stdout: Path | None = None
) -> tuple[Measure, int]:
    out = stdout.open("wb") if stdout else subprocess.DEVNULL
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.DEVNULL,
        )
        if stdin:
            assert proc.stdin is not None
            proc.stdin.write(stdin)
            proc.stdin.close()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    finally:
        if stdout:
            out.close()  # type: ignore[union-attr]
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Measure(argv[0], wall, usage.ru_utime + usage.ru_stime), proc.returncode


def wrapper_alone(base: Path, n: int, slots: int, project: Path) -> Measure:
    """The job wrapper on N fresh task folders, ``slots`` at a time, from a minimal loop:
    the part of hsm's cost that is the wrapper's, with the same disk guard settings."""
    guard = GuardSettings(
        project_min_free=2 * 10**9,
        task_min_free=10**9,
        check_interval=300,
        warn_below=10**9,
        kill_below=200 * 10**6,
    )
    dirs = []
    for i in range(n):
        task_dir = base / f"task_{i + 1:04d}"
        write_spec(
            task_dir,
            TaskSpec(
                attempt=1,
                project_dir=str(project),
                guard=guard,
                env={"HSM_TASK_DIR": str(task_dir)},
                setup=[],
                argv=["true", f"i={i}"],
                info=f"Task: {i + 1}\n",
            ),
        )
        dirs.append(task_dir)
    null = os.open(os.devnull, os.O_RDWR)
    quiet = [(os.POSIX_SPAWN_DUP2, null, fd) for fd in (0, 1, 2)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    running: set[int] = set()
    for task_dir in dirs:
        if len(running) >= slots:
            pid, _ = os.wait()
            running.discard(pid)
        running.add(
            os.posix_spawnp(
                "bash", ["bash", str(WRAPPER_PATH), str(task_dir)], os.environ, file_actions=quiet
            )
        )
    while running:
        pid, _ = os.wait()
        running.discard(pid)
    wall = time.perf_counter() - start
    os.close(null)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Measure("wrapper", wall, cpu)


def need_parallel() -> str:
    found = shutil.which("parallel")
    if found:
        return found
    if os.geteuid() != 0:
        sys.exit("GNU parallel is missing: install the Debian package 'parallel'")
    print("installing GNU parallel (apt-get install parallel) ...", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "parallel"],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    return shutil.which("parallel") or sys.exit("GNU parallel is still missing")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--profile", type=Path, help="also profile hsm (cProfile) into FILE")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument(
        "--json", type=Path, metavar="FILE", help="also write the figures as JSON to FILE"
    )
    args = parser.parse_args()
    parallel = need_parallel()
    work = args.keep or Path(tempfile.mkdtemp(prefix="hsm-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        run(args, parallel, work)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, parallel: str, work: Path) -> None:
    n, slots = args.tasks, args.slots
    project = work / "project"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir()
    (project / "hsm_config.yaml").write_text(CONFIG.format(slots=slots))
    (project / "sweep.yaml").write_text(
        'command: ["true"]\nsweep:\n  grid:\n    i: [' + ", ".join(map(str, range(n))) + "]\n"
    )
    lines = "".join(f"{i}\n" for i in range(n)).encode()

    hsm, code = timed(
        [*HSM, "run", "sweep.yaml", "--name", "bench", "--json"],
        cwd=project,
        stdout=work / "hsm.json",
    )
    if code != 0:
        sys.exit(f"hsm run failed (exit {code}); see {work / 'hsm.json'}")
    gnu, code = timed([parallel, "-j", str(slots), "true"], cwd=work, stdin=lines)
    if code != 0:
        sys.exit(f"GNU parallel failed (exit {code})")
    alone = wrapper_alone(work / "alone", n, slots, project)
    rows = [
        ("hsm run (disk guard on)", hsm),
        (f"GNU parallel -j{slots} true", gnu),
        (f"job wrapper alone, {slots} at a time", alone),
    ]
    print(f"\n{n} no-op tasks, {slots} at a time, {os.cpu_count()} cores\n")
    print(f"| {'runner':<34} | {'wall s':>7} | {'ms/task':>7} | {'CPU s':>6} |")
    print(f"|{'-' * 36}|{'-' * 9}|{'-' * 9}|{'-' * 8}|")
    for name, m in rows:
        print(f"| {name:<34} | {m.wall:7.2f} | {1000 * m.wall / n:7.2f} | {m.cpu:6.2f} |")
    print(
        f"\nhsm / GNU parallel: {hsm.wall / gnu.wall:.2f}x wall (target <= 1.0x); "
        f"hsm controller CPU ~ {hsm.cpu - alone.cpu:.2f} s "
        f"({1000 * (hsm.cpu - alone.cpu) / n:.2f} ms/task)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "tasks": n,
                    "slots": slots,
                    "hsm_s": hsm.wall,
                    "parallel_s": gnu.wall,
                    "wrapper_alone_s": alone.wall,
                    "hsm_cpu_s": hsm.cpu,
                    "parallel_cpu_s": gnu.cpu,
                }
            )
        )

    if args.profile:
        shutil.rmtree(project / "runs", ignore_errors=True)
        shutil.rmtree(project / ".hsm", ignore_errors=True)
        code = subprocess.run(
            [
                sys.executable,
                "-m",
                "cProfile",
                "-o",
                str(args.profile),
                "-m",
                "hsm.cli",
                "run",
                "sweep.yaml",
                "--name",
                "bench",
                "--json",
            ],
            cwd=project,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ).returncode
        print(f"\nprofile of hsm run (exit {code}) in {args.profile}; top 15 by own time:")
        pstats.Stats(str(args.profile)).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
