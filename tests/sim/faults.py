"""Schedules: a small sweep and the faults that happen to it, all drawn from one seed."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

# Every fault kind a schedule can mix.
FAULT_KINDS = (
    "launch_late",  # the host acknowledges a launch late (param: extra seconds)
    "launch_lost",  # a launch request never reaches the host
    "launch_refused",  # the host refuses a launch (nothing starts)
    "launch_partial",  # a batch launch fails after its first request started
    "freeze",  # SIGSTOP of the whole host, then SIGCONT (param: seconds)
    "link",  # the connection is cut, then restored (param: seconds)
    "sshd",  # sshd restarted: connections drop (param: seconds)
    "kill",  # the controller is SIGKILLed at its Nth commit (param: N), resumed
    "interrupt",  # Ctrl-C, then resume
    "torn_status",  # a status file read half-written
    "end_during_cancel",  # a task ends while it is being cancelled
    "enospc",  # the local disk fills during a copy of results
    "fewer_slots",  # the next resume has one slot less on every source
    "host_fails_task",  # the script fails on one host for one task (param: task)
    "bad_task",  # the script fails everywhere for one task (param: task)
)
HOST_FAULTS = {
    "launch_late",
    "launch_lost",
    "launch_refused",
    "launch_partial",
    "freeze",
    "link",
    "sshd",
    "torn_status",
    "end_during_cancel",
    "enospc",
    "host_fails_task",
}


@dataclass(frozen=True)
class Fault:
    kind: str
    t: float = 0.0
    host: str = ""
    param: float = 0.0

    def code(self) -> str:
        return f"Fault({self.kind!r}, t={self.t:g}, host={self.host!r}, param={self.param:g})"


@dataclass(frozen=True)
class Schedule:
    seed: int
    tasks: int
    hosts: tuple[tuple[str, int], ...]  # (name, slots)
    faults: tuple[Fault, ...] = ()
    durations: tuple[float, float] = (0.5, 3.0)
    max_retries: int = 2
    note: str = field(default="", compare=False)

    def without(self, index: int) -> Schedule:
        return replace(self, faults=self.faults[:index] + self.faults[index + 1 :])

    def code(self) -> str:
        faults = "".join(f"\n        {f.code()}," for f in self.faults)
        return (
            f"Schedule(seed={self.seed}, tasks={self.tasks}, hosts={self.hosts!r},"
            f" durations={self.durations!r}, max_retries={self.max_retries},\n"
            f"    faults=({faults}\n    ))"
        )


def generate(seed: int, *, exclude: Iterable[str] = ()) -> Schedule:
    """The schedule of a seed: 1-6 tasks on 2-3 hosts, and 0-4 faults."""
    rng = random.Random(seed)
    banned = set(exclude)
    kinds = [k for k in FAULT_KINDS if k not in banned]
    hosts = tuple((f"h{i}", rng.randint(1, 2)) for i in range(1, rng.randint(2, 3) + 1))
    tasks = rng.randint(1, 6)
    faults: list[Fault] = []
    busy: dict[str, list[tuple[float, float]]] = {h: [] for h, _ in hosts}
    for _ in range(rng.randint(0, 4)):
        if not kinds:
            break
        kind = rng.choice(kinds)
        host = rng.choice(hosts)[0]
        t = round(rng.uniform(0.0, 8.0), 2)
        param = 0.0
        if kind in ("freeze", "link", "sshd"):
            param = round(rng.uniform(0.5, 2.0) if kind == "sshd" else rng.uniform(1.0, 25.0), 2)
            if any(a < t + param + 1.0 and t < b + 1.0 for a, b in busy[host]):
                continue  # one outage at a time per host
            busy[host].append((t, t + param))
        elif kind == "launch_late":
            param = round(rng.choice((rng.uniform(0.5, 5.0), rng.uniform(20.0, 45.0))), 2)
        elif kind == "kill":
            param = rng.randint(1, 40)
            t = 0.0
        elif kind in ("host_fails_task", "bad_task"):
            param = rng.randint(1, tasks)
            t = 0.0
        if kind not in HOST_FAULTS:
            host = ""
        faults.append(Fault(kind, t, host, param))
    return Schedule(seed=seed, tasks=tasks, hosts=hosts, faults=tuple(faults))
