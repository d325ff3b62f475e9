"""Command line for the test bed (needs root).

    python -m tests.testbed up [--hosts 3] [--slurm [host|local]] [--prefix P] [--subnet S]
    python -m tests.testbed down --prefix P [--force]

``up`` prints one JSON object (hosts, keys, ssh_config, Slurm env) on stdout and keeps
everything running until Ctrl-C or SIGTERM, then tears it down. ``down`` removes leftovers of
a run that was killed.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any

from ._util import TestBedError
from .hosts import TestBed, cleanup_stale
from .slurm import SlurmCluster


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.testbed", description="hsm test bed")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="bring up a test bed and keep it up until Ctrl-C/SIGTERM")
    up.add_argument("--hosts", type=int, default=3, help="number of SSH hosts (default 3)")
    up.add_argument(
        "--slurm",
        nargs="?",
        const="host",
        choices=["host", "local"],
        help="also start Slurm: inside the first host (default) or on this machine",
    )
    up.add_argument("--prefix", default="hsmtb", help="name prefix (default hsmtb)")
    up.add_argument("--subnet", default="10.231.7", help="first three octets (default 10.231.7)")
    up.add_argument("--disk-size", default="64m", help="work disk per host (default 64m)")
    down = sub.add_parser("down", help="remove leftovers of a test bed with this prefix")
    down.add_argument("--prefix", default="hsmtb")
    down.add_argument("--force", action="store_true", help="even if a live process holds it")
    return parser.parse_args(argv)


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop


def _up(args: argparse.Namespace) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_stop)
    bed = TestBed(prefix=args.prefix, subnet=args.subnet)
    slurm: SlurmCluster | None = None
    try:
        bed.up(args.hosts, disk_size=args.disk_size)
        description: dict[str, Any] = bed.describe()
        if args.slurm:
            host = bed.hosts[0] if args.slurm == "host" else None
            slurm = SlurmCluster(prefix=args.prefix, host=host).start()
            description["slurm"] = slurm.describe()
        print(json.dumps(description, indent=2), flush=True)
        print("test bed is up; Ctrl-C or SIGTERM tears it down", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)
    except _Stop:
        pass
    except TestBedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if slurm is not None:
            slurm.stop()
        bed.down()
    print("test bed is down", file=sys.stderr)
    return 0


def _down(args: argparse.Namespace) -> int:
    try:
        removed = cleanup_stale(args.prefix, force=args.force)
    except TestBedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"prefix": args.prefix, "removed": removed}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    return _up(args) if args.command == "up" else _down(args)


if __name__ == "__main__":
    sys.exit(main())
