"""Regression schedules: each reproduces a defect seen in real runs. ``failing`` names the
defects today's engine still has (their tests are strict xfails: a fix flips them)."""

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


def _two_hosts(faults: tuple[Fault, ...], *, tasks: int = 6,
               durations: tuple[float, float] = (0.5, 3.0)) -> Schedule:
    return Schedule(seed=0, tasks=tasks, hosts=(("h1", 1), ("h2", 1)), faults=faults,
                    durations=durations)


REGRESSIONS = (
    Regression("superseded attempt overwrites the final result", generate(178, exclude=ALL),
               "the pull of an old attempt that ends after its replacement lands in the"
               " task folder"),
    Regression("retry placement forgotten on restart", generate(379, exclude=ALL),
               "which sources failed a task lives in memory only"),
    Regression("lost 'never started' while it ran (half-written status)",
               _two_hosts((Fault("torn_status", 11.0, "h1"),), tasks=1, durations=(12, 14)),
               "a status read half-written counts as no status"),
    Regression("launch rows deleted and rerun under the same attempt number",
               generate(1173, exclude=KNOWN),
               "resume discards a 'launching' row whose launch may have happened"),
    Regression("task failure excused by a machine cause elsewhere", generate(524, exclude=ALL),
               "failed_sources_of_task counts lost attempts"),
    Regression("lost tasks at the back of a long queue",
               _two_hosts((Fault("link", 0.7, "h1", 16.7),)),
               "a lost task is appended to the queue"),
    Regression("partial launch settles the whole batch", generate(1844, exclude=ALL),
               "a batch launch that fails partway settles every request as launch_failed"),
    Regression("truncated status record", _two_hosts((Fault("torn_status", 1.0, "h1"),
                                                      Fault("torn_status", 1.5, "h2")))),
    Regression("sshd restarted while tasks run", _two_hosts((Fault("sshd", 1.0, "h1", 1.0),))),
)
