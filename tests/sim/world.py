"""The simulated world: a virtual clock, hosts whose job wrappers are state machines, and
the schedule of faults that happen to them. It outlives any one controller: a killed
controller's hosts keep running, and the next controller finds them as they are."""

from __future__ import annotations

import heapq
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.sim.faults import Schedule
    from tests.sim.source import SimSource

# As the SSH backend: a silent connection is noticed after the keepalives (3 s), its tasks
# count as lost 1 s later, and a host that is back is reconnected within a second.
SILENCE = 3.0
LOST_AFTER = 4.0
RECONNECT = 0.5
LATENCY = 0.002  # one round trip
EPOCH = 1.7e9  # wall-clock time at virtual time 0


@dataclass(frozen=True)
class Outage:
    kind: str  # freeze (SIGSTOP: silent), link (connection cut), sshd (restarted)
    t0: float
    t1: float

    @property
    def detect(self) -> float:
        return self.t0 + (SILENCE if self.kind == "freeze" else 0.0)


@dataclass
class Execution:
    """One job wrapper a host started: what really ran."""

    host: str
    task_dir: str
    number: int
    attempt: int
    nonce: str
    received: float
    ended: float | None = None
    outcome: str | None = None  # completed, failed, cancelled
    pid: int = 0


@dataclass
class HostEvent:
    t: float
    fn: Callable[[], None]
    cancelled: bool = False


def status_text(
    e: Execution, state: str, *, cause: str | None, exit_code: int | None, pid: int, now: float
) -> str:
    """A status record in the job wrapper's format (parse_status reads it)."""
    data: dict[str, Any] = {
        "version": 1,
        "attempt": e.attempt,
        "status": state,
        "cause": cause,
        "exit_code": exit_code,
        "pid": pid,
        "pgid": pid,
        "host": e.host,
        "started": EPOCH + e.received,
        "finished": None if state == "running" else EPOCH + now,
    }
    if e.nonce:
        data["nonce"] = e.nonce
    return json.dumps(data)


class Host:
    def __init__(self, world: World, name: str, outages: list[Outage]) -> None:
        self.world = world
        self.name = name
        self.outages = sorted(outages, key=lambda o: o.t0)
        self.files: dict[str, dict[str, str]] = {}
        self.current: dict[str, Execution] = {}
        self.live: set[int] = set()
        self._events: dict[int, HostEvent] = {}
        self.frozen_at: float | None = None
        self.fails: set[int] = set()  # tasks whose script fails on this host
        # one-shot faults: (time from which they apply, kind)
        self.once: list[tuple[float, str, float]] = []
        self.pids = 1000

    # -- truth ---------------------------------------------------------------------------
    def answering(self, t: float) -> bool:
        return not any(o.t0 <= t < o.t1 for o in self.outages)

    def silent_through(self, a: float, b: float) -> bool:
        """Whether the host answered nothing at any time in [a, b]."""
        return any(o.t0 <= a + 1e-9 and b < o.t1 for o in self.outages)

    def unreachable_through(self, a: float, b: float) -> Outage | None:
        """The outage during which a controller saw the host down (and silent since) from
        ``a`` to ``b``, if any."""
        for o in self.outages:
            if o.detect < o.t1 and o.t0 <= a + 1e-6 and o.detect <= b < o.t1 + RECONNECT:
                return o
        return None

    def outage_between(self, a: float, b: float) -> bool:
        """Whether the host was silent at any time in [a, b]."""
        return any(o.t0 <= b and a < o.t1 for o in self.outages)

    def outage_at(self, t: float) -> Outage | None:
        for o in self.outages:
            if o.t0 <= t < o.t1:
                return o
        return None

    # -- what a controller sees --------------------------------------------------------
    def view(self, t: float) -> tuple[bool, float | None]:
        """(connected, down since): the connection of a controller to this host."""
        since: float | None = None
        for o in self.outages:
            if o.detect < o.t1 and o.detect <= t < o.t1 + RECONNECT:
                since = o.t0 if since is None else min(since, o.t0)
        return since is None, since

    def up_since(self, t: float) -> float | None:
        """When a controller's connection to this host was last made again after an outage
        it saw (None: it never lost it)."""
        back = [o.t1 + RECONNECT for o in self.outages if o.detect < o.t1 and o.t1 + RECONNECT <= t]
        return max(back) if back else None

    def take(self, kind: str) -> float | None:
        """Consume a one-shot fault of this kind that is due; its parameter, or None."""
        now = self.world.now
        for i, (t, k, param) in enumerate(self.once):
            if k == kind and t <= now:
                del self.once[i]
                return param
        return None

    # -- freeze-aware timers -----------------------------------------------------------
    def after(self, delay: float, fn: Callable[[], None]) -> None:
        self._schedule(HostEvent(self.world.now + delay, fn))

    def _schedule(self, ev: HostEvent) -> None:
        key = id(ev)
        self._events[key] = ev
        self.world.at(ev.t, lambda: self._fire(key))

    def _fire(self, key: int) -> None:
        ev = self._events.get(key)
        if ev is None or ev.cancelled or self.frozen_at is not None:
            return  # frozen: it fires after the thaw, as late as the freeze was long
        del self._events[key]
        ev.fn()

    def freeze(self) -> None:
        self.frozen_at = self.world.now

    def thaw(self) -> None:
        if self.frozen_at is None:
            return
        t0, shift = self.frozen_at, self.world.now - self.frozen_at
        self.frozen_at = None
        old = list(self._events.values())
        self._events.clear()
        for ev in old:
            ev.cancelled = True
            self._schedule(HostEvent(ev.t + shift if ev.t >= t0 else self.world.now, ev.fn))

    # -- the job wrapper -----------------------------------------------------------------
    def receive(self, task_dir: str, number: int, attempt: int, nonce: str, info: str) -> None:
        """A launch request arrives: the wrapper starts."""
        o = self.outage_at(self.world.now)
        if o is not None and o.kind != "freeze":
            return  # the connection broke before the request got through
        world = self.world
        e = Execution(self.name, task_dir, number, attempt, nonce, world.now)
        world.executions.append(e)
        self.current[task_dir] = e
        self.pids += 1
        e.pid = pid = self.pids
        files = self.files.setdefault(task_dir, {})
        files["task_info.txt"] = info
        files["status.json"] = status_text(
            e, "running", cause=None, exit_code=None, pid=pid, now=world.now
        )
        duration = world.duration(number, attempt, self.name)
        self.after(duration, lambda: self._end(e, pid, cancelled=False))

    def _end(self, e: Execution, pid: int, *, cancelled: bool) -> None:
        if e.ended is not None:
            return
        world = self.world
        e.ended = world.now
        files = self.files.setdefault(e.task_dir, {})
        if cancelled:
            e.outcome = "cancelled"
            files["status.json"] = status_text(
                e, "cancelled", cause="cancelled", exit_code=None, pid=pid, now=world.now
            )
        elif e.number in self.fails or e.number in world.bad_tasks:
            e.outcome = "failed"
            files["status.json"] = status_text(
                e, "failed", cause="task_failed", exit_code=1, pid=pid, now=world.now
            )
        else:
            e.outcome = "completed"
            files["result.json"] = json.dumps(
                {"number": e.number, "attempt": e.attempt, "nonce": e.nonce, "source": self.name}
            )
            files["status.json"] = status_text(
                e, "completed", cause="completed", exit_code=0, pid=pid, now=world.now
            )
        source = world.sources.get(self.name)
        if source is not None:
            source.wrapper_ended(e)

    def cancel(self, task_dir: str, attempt: int) -> None:
        e = self.current.get(task_dir)
        if e is None or e.attempt != attempt or e.ended is not None:
            return
        pid = e.pid
        if self.take("end_during_cancel") is not None:
            self.after(0.01, lambda: self._end(e, pid, cancelled=False))  # it wins the race
        else:
            self.after(0.05, lambda: self._end(e, pid, cancelled=True))


class World:
    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self.now = 0.0
        self.deadline = 3600.0
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self.executions: list[Execution] = []
        self.sources: dict[str, SimSource] = {}  # the live controller's
        self.bad_tasks: set[int] = set()
        self.hosts: dict[str, Host] = {}
        self.on_time: list[tuple[float, Callable[[], None]]] = []
        self.generation = 0  # the live controller's (negative: it was killed)
        outages: dict[str, list[Outage]] = {name: [] for name, _ in schedule.hosts}
        for f in schedule.faults:
            if f.kind in ("freeze", "link", "sshd"):
                outages[f.host].append(Outage(f.kind, f.t, f.t + f.param))
        for name, _ in schedule.hosts:
            self.hosts[name] = Host(self, name, outages[name])
        for host in self.hosts.values():
            for o in host.outages:
                if o.kind == "freeze":
                    self.at(o.t0, host.freeze)
                    self.at(o.t1, host.thaw)
                for t in (o.detect, o.t0 + LOST_AFTER + 0.05, o.t1 + RECONNECT):
                    self.at(t, partial(self.wake, host.name))

    def duration(self, number: int, attempt: int, host: str) -> float:
        rng = random.Random(f"{self.schedule.seed}:{number}:{attempt}:{host}")
        lo, hi = self.schedule.durations
        return rng.uniform(lo, hi)

    def wake(self, host: str) -> None:
        source = self.sources.get(host)
        if source is not None:
            source.wake.set()

    # -- the clock -----------------------------------------------------------------------
    def at(self, t: float, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (max(t, self.now), self._seq, fn))

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def advance_to(self, t: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= t:
            when, _, fn = heapq.heappop(heap)
            if when > self.now:
                self.now = when
            fn()
        if t > self.now:
            self.now = t

    def wall(self) -> float:
        return EPOCH + self.now

    def mono(self) -> float:
        return self.now


__all__ = ["LOST_AFTER", "Execution", "Host", "Outage", "World"]
