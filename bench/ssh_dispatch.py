"""SSH dispatch benchmark: hsm against GNU parallel on the same test-bed hosts, and failover.

    sudo .venv/bin/python bench/ssh_dispatch.py [--tasks 300] [--sleep 0.05] [--repeat 3]
        [--rtt 0,10,40] [--failovers 3] [--json FILE]

Brings up the SSH test bed (3 hosts, each its own network namespace and sshd), then runs
TASKS tasks of ``sleep SLEEP`` with 2 slots per host:

- ``hsm run --distributed`` (the whole command: start-up, checks, code push, every task under
  the job wrapper, every result pulled back, clean-up);
- ``parallel --sshloginfile`` with ``2/HOST`` lines and OpenSSH ControlMaster connections
  opened before the clock starts (GNU parallel's best case).

With ``--rtt``, each round trip (milliseconds) is measured in turn, both tools reaching the
hosts through the same latency proxies (``tests/testbed/latency.py``: every chunk held for
half the round trip each way); 0 is the direct network. The runs alternate; the table shows
every run and the medians. Then it measures failover: three
tasks on three hosts, the link of the first host is cut, and the time until its task runs on
another host is taken (default settings: keepalive 1 s x 3). Needs root, GNU parallel and rsync.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.hsmcli import HSM  # noqa: E402
from tests.integration.ssh_support import SMALL_HEALTH  # noqa: E402
from tests.testbed import Host, TestBed, pick_free_subnet  # noqa: E402
from tests.testbed.latency import LatencyProxies  # noqa: E402


def write_project(
    root: Path, bed: TestBed, *, slots: int, disk_watch: bool, ssh_config: Path
) -> None:
    root.mkdir(parents=True, exist_ok=True)
    disk = {
        "project_min_free": "1MB",
        "task_min_free": "1MB",
        "check_interval": 300,
        "warn_below": "2MB" if disk_watch else 0,
        "kill_below": "1MB" if disk_watch else 0,
    }
    config = {
        "disk": disk,
        "health": SMALL_HEALTH,
        "distributed": {
            "include_local": False,
            "ssh_config": str(ssh_config),
            "remotes": {
                f"h{h.index}": {
                    "host": h.name,
                    "remote_root": "/srv/hsm/bench",
                    "max_parallel_jobs": slots,
                }
                for h in bed.hosts
            },
        },
    }
    (root / "hsm_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def sweep(root: Path, name: str, command: list[str], n: int) -> str:
    (root / name).write_text(
        yaml.safe_dump({"command": command, "sweep": {"grid": {"i": list(range(1, n + 1))}}})
    )
    return name


def run_hsm(root: Path, spec: str) -> float:
    start = time.monotonic()
    proc = subprocess.run(
        [*HSM, "run", spec, "--distributed", "--json"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"hsm failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    data = json.loads(proc.stdout)
    assert data["counts"]["completed"] == data["total"], data["counts"]
    return elapsed


class Parallel:
    """GNU parallel over OpenSSH with one ControlMaster per host, opened beforehand."""

    def __init__(self, bed: TestBed, work: Path, slots: int, ssh_config: Path) -> None:
        self.bed = bed
        self.control = Path(tempfile.mkdtemp(prefix="cm", dir=work))
        self.ssh = [
            "ssh",
            "-F",
            str(ssh_config),
            "-o",
            "ControlMaster=no",
            "-o",
            f"ControlPath={self.control}/%C",
        ]
        self.logins = work / "sshlogins"
        self.logins.write_text("".join(f"{slots}/{h.name}\n" for h in bed.hosts))
        for host in bed.hosts:
            subprocess.run(
                [
                    "ssh",
                    "-F",
                    str(ssh_config),
                    "-o",
                    "ControlMaster=yes",
                    "-o",
                    f"ControlPath={self.control}/%C",
                    "-o",
                    "ControlPersist=yes",
                    "-f",
                    "-N",
                    host.name,
                ],
                check=True,
                timeout=30,
            )

    def run(self, n: int, sleep: float) -> float:
        start = time.monotonic()
        proc = subprocess.run(
            [
                "parallel",
                "--will-cite",
                "--ssh",
                " ".join(self.ssh),
                "--sshloginfile",
                str(self.logins),
                f"sleep {sleep}; : {{}}",
            ],
            input="".join(f"{i}\n" for i in range(1, n + 1)),
            capture_output=True,
            text=True,
            timeout=600,
        )
        elapsed = time.monotonic() - start
        if proc.returncode != 0:
            raise SystemExit(f"parallel failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        return elapsed

    def close(self) -> None:
        for host in self.bed.hosts:
            subprocess.run([*self.ssh, "-O", "exit", host.name], capture_output=True, timeout=10)


def marks(hosts: list[Host]) -> dict[str, list[tuple[float, str]]]:
    out: dict[str, list[tuple[float, str]]] = {}
    for host in hosts:
        folder = host.disk_dir / "marks"
        for path in folder.glob("*") if folder.is_dir() else []:
            for line in path.read_text().splitlines():
                stamp, name = line.split()
                out.setdefault(path.name, []).append((float(stamp), name))
    return out


def failover(root: Path, bed: TestBed) -> float:
    """Seconds from cutting h1's link to its task starting on another host."""
    for host in bed.hosts:
        host.reset()
    mark = 'mkdir -p /srv/hsm/marks; echo "$(date +%s.%N) $HOSTNAME" >> /srv/hsm/marks/$1; sleep 4'
    spec = sweep(root, "failover.yaml", ["bash", "-c", mark, "task"], 3)
    # Task i gets "i=N" as $1: marks/i=1 is task 1, which round robin sends to h1.
    proc = subprocess.Popen(
        [*HSM, "run", spec, "--distributed", "--json"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    h1 = bed.hosts[0]
    deadline = time.monotonic() + 30
    while not any(n == h1.name for _, n in marks(bed.hosts).get("i=1", [])):
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("task 1 did not start on h1")
        time.sleep(0.01)
    h1.cut_link()
    cut = time.time()
    try:
        while not any(n != h1.name for _, n in marks(bed.hosts).get("i=1", [])):
            if time.time() - cut > 60:
                raise SystemExit("task 1 never ran elsewhere")
            time.sleep(0.01)
        moved = min(t for t, n in marks(bed.hosts)["i=1"] if n != h1.name)
    finally:
        h1.restore_link()
    out, err = proc.communicate(timeout=120)
    if proc.returncode != 0:
        raise SystemExit(f"failover sweep failed (exit {proc.returncode}):\n{err[-3000:]}")
    return moved - cut


def dispatch(
    root: Path, bed: TestBed, work: Path, args: argparse.Namespace, ssh_config: Path
) -> dict[str, list[float]]:
    """Alternating runs of hsm and GNU parallel, both over ``ssh_config``."""
    write_project(root, bed, slots=args.slots, disk_watch=args.disk_watch, ssh_config=ssh_config)
    spec = sweep(root, "sweep.yaml", ["bash", "-c", f"sleep {args.sleep}", "task"], args.tasks)
    gnu = Parallel(bed, work, args.slots, ssh_config)
    times: dict[str, list[float]] = {"hsm": [], "parallel": []}
    try:
        for _ in range(args.repeat):
            times["hsm"].append(run_hsm(root, spec))
            times["parallel"].append(gnu.run(args.tasks, args.sleep))
    finally:
        gnu.close()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--sleep", type=float, default=0.05)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--rtt",
        default="0",
        help="round trips to emulate, in milliseconds, comma-separated (default 0: direct)",
    )
    parser.add_argument("--failovers", type=int, default=3)
    parser.add_argument(
        "--no-disk-watch",
        dest="disk_watch",
        action="store_false",
        help="turn the job wrapper's disk watcher off (on by default, as in "
        "a sweep; GNU parallel has none)",
    )
    parser.add_argument(
        "--json", type=Path, metavar="FILE", help="also write the figures as JSON to FILE"
    )
    args = parser.parse_args()
    rtts = [float(r) for r in args.rtt.split(",")]
    if os.geteuid() != 0:
        raise SystemExit("needs root (the test bed uses network namespaces)")
    if shutil.which("parallel") is None:
        raise SystemExit("GNU parallel is missing: apt-get install -y parallel")
    bed = TestBed(prefix=f"hsmbn{os.getpid() % 100000}", subnet=pick_free_subnet())
    work = Path(tempfile.mkdtemp(prefix="hsm-bench-ssh-"))
    by_rtt: dict[float, dict[str, list[float]]] = {}
    try:
        bed.up(3)
        root = work / "project"
        for rtt in rtts:
            if rtt == 0:
                by_rtt[rtt] = dispatch(root, bed, work, args, bed.ssh_config_path)
                continue
            with LatencyProxies(bed, rtt / 1000) as proxies:
                by_rtt[rtt] = dispatch(root, bed, work, args, proxies.ssh_config)
        write_project(
            root, bed, slots=args.slots, disk_watch=args.disk_watch, ssh_config=bed.ssh_config_path
        )
        moves = [failover(root, bed) for _ in range(args.failovers)]
    finally:
        bed.down()
        shutil.rmtree(work, ignore_errors=True)

    slots = args.slots * 3
    print(
        f"{args.tasks} tasks of `sleep {args.sleep}` on 3 hosts x {args.slots} slots "
        f"({slots} at once); ideal {args.tasks / slots * args.sleep:.2f} s"
    )
    print(f"{'':40}{'runs (s)':>28}{'median (s)':>12}")
    figures = []
    for rtt, times in by_rtt.items():
        hsm_s, par_s = statistics.median(times["hsm"]), statistics.median(times["parallel"])
        for name, label in (("hsm", "hsm run"), ("parallel", "GNU parallel (ControlMaster)")):
            runs = " ".join(f"{t:.2f}" for t in times[name])
            print(
                f"{label + f' RTT {rtt:g} ms':40}{runs:>28}{statistics.median(times[name]):>12.2f}"
            )
        print(f"{f'ratio hsm / parallel, RTT {rtt:g} ms':40}{'':>28}{hsm_s / par_s:>12.2f}")
        figures.append(
            {
                "rtt_ms": rtt,
                "hsm_s": hsm_s,
                "parallel_s": par_s,
                "ratio": hsm_s / par_s,
                "hsm_runs": times["hsm"],
                "parallel_runs": times["parallel"],
            }
        )
    if moves:
        print(
            f"{'failover (link cut)':40}{' '.join(f'{m:.1f}' for m in moves):>28}"
            f"{statistics.median(moves):>12.1f}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "tasks": args.tasks,
                    "sleep": args.sleep,
                    "slots": slots,
                    "by_rtt": figures,
                    "failover_s": statistics.median(moves) if moves else None,
                    "failovers": moves,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
