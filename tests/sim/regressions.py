"""Regression schedules: each reproduced a defect seen in real runs, before its fix. A
``failing`` reason marks one the engine still has (its test is a strict xfail: a fix flips
it, and the mark must go)."""

from __future__ import annotations

from dataclasses import dataclass

from tests.sim.faults import Fault, Schedule, generate

ALL = ()  # no fault kind left out
# The fault kinds left out when the seeds below were found (generate() depends on them).
KNOWN = ("bad_task", "host_fails_task", "launch_partial", "interrupt", "freeze")


@dataclass(frozen=True)
class Regression:
    name: str
    schedule: Schedule
    failing: str = ""  # why today's engine fails it ("" : it passes)


def _two_hosts(
    faults: tuple[Fault, ...], *, tasks: int = 6, durations: tuple[float, float] = (0.5, 3.0)
) -> Schedule:
    return Schedule(
        seed=0, tasks=tasks, hosts=(("h1", 1), ("h2", 1)), faults=faults, durations=durations
    )


REGRESSIONS = (
    Regression("superseded attempt overwrites the final result", generate(178, exclude=ALL)),
    Regression("retry placement forgotten on restart", generate(379, exclude=ALL)),
    Regression(
        "lost 'never started' while it ran (half-written status)",
        _two_hosts((Fault("torn_status", 11.0, "h1"),), tasks=1, durations=(12, 14)),
    ),
    Regression(
        "launch rows deleted and rerun under the same attempt number", generate(1173, exclude=KNOWN)
    ),
    Regression("task failure excused by a machine cause elsewhere", generate(524, exclude=ALL)),
    Regression(
        "lost tasks at the back of a long queue", _two_hosts((Fault("link", 0.7, "h1", 16.7),))
    ),
    Regression("partial launch settles the whole batch", generate(1844, exclude=ALL)),
    Regression(
        "truncated status record",
        _two_hosts((Fault("torn_status", 1.0, "h1"), Fault("torn_status", 1.5, "h2"))),
    ),
    Regression("sshd restarted while tasks run", _two_hosts((Fault("sshd", 1.0, "h1", 1.0),))),
    Regression(
        "a lost attempt stopped by an earlier Ctrl-C, found again: cancelled for good",
        Schedule(
            seed=1207840,
            tasks=6,
            hosts=(("h1", 1), ("h2", 1)),
            faults=(
                Fault("interrupt", 0.72, ""),
                Fault("kill", 0, "", 8),
                Fault("freeze", 1.84, "h2", 3.69),
            ),
            durations=(0.5, 3.0),
            max_retries=2,
        ),
    ),
    Regression(
        "a launch a frozen host got late, taken as never reported: run twice on one host",
        Schedule(
            seed=1221303,
            tasks=5,
            hosts=(("h1", 2), ("h2", 1)),
            faults=(Fault("link", 3.52, "h2", 20.41), Fault("freeze", 5.98, "h1", 11.88)),
            durations=(0.5, 3.0),
            max_retries=2,
        ),
    ),
    Regression(
        "a status read half-written as its wrapper ends: lost although it completed",
        Schedule(
            seed=514,
            tasks=4,
            hosts=(("h1", 1), ("h2", 1), ("h3", 1)),
            faults=(Fault("torn_status", 2.52, "h2"),),
            durations=(0.5, 3.0),
            max_retries=2,
        ),
    ),
)
