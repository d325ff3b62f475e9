"""The deterministic fault simulation tier (see tests/sim/harness.py and
docs/architecture.md, "Deterministic fault simulation")."""

from __future__ import annotations

import pytest

from tests.sim.faults import Fault, generate
from tests.sim.harness import run_schedule
from tests.sim.regressions import REGRESSIONS, Regression
from tests.sim.runner import KNOWN_FAILING_FAULTS, Summary, report, run_many

RANDOM_SCHEDULES = 10_000


def test_random_schedules() -> None:
    summary = run_many(0, RANDOM_SCHEDULES, workers=2, exclude=KNOWN_FAILING_FAULTS)
    assert not summary.failures, summary.text(KNOWN_FAILING_FAULTS)


def _case(r: Regression) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=r.failing)] if r.failing else []
    return pytest.param(r, id=r.name.replace(" ", "-"), marks=marks)


@pytest.mark.parametrize("regression", [_case(r) for r in REGRESSIONS])
def test_regression(regression: Regression) -> None:
    result = run_schedule(regression.schedule)
    assert result.ok, report(result, shrink=False)


def test_kill_at_every_commit() -> None:
    """A small sweep, its controller killed at each of its commits in turn, then resumed."""
    base = generate(7, exclude=[k for k in KNOWN_FAILING_FAULTS] + ["kill"])
    clean = run_schedule(base)
    assert clean.ok, report(clean, shrink=False)
    failed = []
    for n in range(1, clean.commits[0] + 1):
        result = run_schedule(
            type(base)(
                seed=base.seed, tasks=base.tasks, hosts=base.hosts, faults=(Fault("kill", param=n),)
            )
        )
        if not result.ok:
            failed.append(f"kill at commit {n}: {result.violations}")
    assert not failed, "\n".join(failed)


def test_replay_is_deterministic() -> None:
    first, second = run_schedule(generate(11)), run_schedule(generate(11))
    assert (first.violations, first.commits) == (second.violations, second.commits)


def test_a_long_run_names_every_failing_seed() -> None:
    failures = [f"seed {n} FAILS:\n  - a broken invariant" for n in range(11, 18)]
    text = Summary(schedules=100, seconds=1.0, failures=failures).text(())
    head, seeds, *shown = text.split("\n")
    assert head.endswith("7 failed")
    assert seeds == "failing seeds: 11 12 13 14 15 16 17 (the first 5 below)"
    assert sum(line.endswith("FAILS:") for line in shown) == 5
