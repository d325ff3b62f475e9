"""Many schedules, in worker processes; shrinking a failing one to a minimal replay."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tests.sim.faults import Schedule, generate
from tests.sim.harness import Result, _template_db, run_schedule

# Fault kinds today's engine is known to fail (see the regression table in
# tests/sim/regressions.py). The random schedules of CI leave them out so that they pass;
# a fix of the engine removes its kinds from here.
KNOWN_FAILING_FAULTS: tuple[str, ...] = ()


def run_seed(
    seed: int, *, exclude: Iterable[str] = KNOWN_FAILING_FAULTS, verbose: bool = False
) -> Result:
    return run_schedule(generate(seed, exclude=exclude), verbose=verbose)


def shrink(schedule: Schedule) -> Schedule:
    """Drop faults one by one while the schedule still fails."""
    i = 0
    while i < len(schedule.faults):
        smaller = schedule.without(i)
        if not run_schedule(smaller).ok:
            schedule = smaller
        else:
            i += 1
    return schedule


def report(
    result: Result,
    *,
    exclude: Sequence[str] = KNOWN_FAILING_FAULTS,
    shrink_it: bool = True,
    shrink: bool = True,
) -> str:
    s = result.schedule
    if result.ok:
        return (
            f"seed {s.seed}: ok ({len(s.faults)} fault(s), {result.kills} kill(s),"
            f" outcomes {[o.state.value for o in result.outcomes]})"
        )
    minimal = _shrink(s) if (shrink and shrink_it) else s
    flag = " --all-faults" if not exclude else ""
    lines = [f"seed {s.seed} FAILS:"]
    lines += [f"  - {v}" for v in result.violations]
    lines.append("minimal replay (faults dropped while it still fails):")
    lines.append("  " + minimal.code().replace("\n", "\n  "))
    lines.append(f"rerun: python -m tests.sim --seed {s.seed}{flag} -v")
    return "\n".join(lines)


_shrink = shrink


@dataclass
class Summary:
    schedules: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    def text(self, exclude: Sequence[str]) -> str:
        rate = self.schedules / self.seconds if self.seconds else 0.0
        head = (
            f"{self.schedules} schedules in {self.seconds:.1f} s: {rate:.0f} schedules/s;"
            f" {len(self.failures)} failed"
        )
        if exclude:
            head += f" (fault kinds left out: {', '.join(exclude)})"
        shown = self.failures[:5]
        if len(self.failures) > len(shown):  # every failing seed, to replay the rest
            seeds = [f.split()[1] for f in self.failures]
            head += f"\nfailing seeds: {' '.join(seeds)} (the first {len(shown)} below)"
        return "\n".join([head, *shown])


def _chunk(args: tuple[int, int, tuple[str, ...]]) -> list[str]:
    start, count, exclude = args
    out: list[str] = []
    for seed in range(start, start + count):
        result = run_schedule(generate(seed, exclude=exclude))
        if not result.ok:
            out.append(report(result, exclude=exclude, shrink=len(out) < 1))
    return out


def run_many(
    start: int, count: int, *, workers: int = 2, exclude: Iterable[str] = KNOWN_FAILING_FAULTS
) -> Summary:
    banned = tuple(exclude)
    _template_db()  # made once here, so that the forked workers share it
    t0 = time.perf_counter()
    step = 500
    jobs = [(s, min(step, start + count - s), banned) for s in range(start, start + count, step)]
    failures: list[str] = []
    if workers <= 1:
        for job in jobs:
            failures += _chunk(job)
    else:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(workers) as pool:
            for found in pool.imap(_chunk, jobs):
                failures += found
    return Summary(count, time.perf_counter() - t0, failures)
