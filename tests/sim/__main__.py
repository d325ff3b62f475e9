"""python -m tests.sim: run schedules, or replay one seed with the engine's log.

python -m tests.sim --seed 178 -v          replay one schedule, log on virtual time
python -m tests.sim --schedules 1000000    a long run; prints schedules per second
"""

from __future__ import annotations

import argparse
import logging
import sys

from hsm import clock
from tests.sim.runner import KNOWN_FAILING_FAULTS, report, run_many, run_seed


class _VirtualTime(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"t={clock.monotonic():8.3f} {record.levelname:<7} {record.getMessage()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.sim",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seed", type=int, help="replay this seed")
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--start", type=int, default=0, help="first seed of a run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--all-faults",
        action="store_true",
        help="also the fault kinds today's engine is known to fail",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="the engine's log")
    args = parser.parse_args(argv)
    exclude = () if args.all_faults else KNOWN_FAILING_FAULTS
    if args.seed is not None:
        if args.verbose:
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(_VirtualTime())
            logging.getLogger("hsm").addHandler(handler)
        result = run_seed(args.seed, exclude=exclude, verbose=args.verbose)
        logging.getLogger("hsm").handlers.clear()
        print(report(result, exclude=exclude, shrink=True))
        return 0 if result.ok else 1
    summary = run_many(args.start, args.schedules, workers=args.workers, exclude=exclude)
    print(summary.text(exclude))
    return 0 if not summary.failures else 1


if __name__ == "__main__":
    sys.exit(main())
