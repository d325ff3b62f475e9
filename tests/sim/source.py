"""SimSource: a backend on a simulated host, with the SSH backend's behaviour.

It reports what the SSH source reports: ``starting`` until a status appears (``lost ... it
never started`` after START_GRACE), ``unknown`` while the connection is down and ``lost``
LOST_AFTER seconds after the host went silent; launches wait for the host's acknowledgement
(ACK_TIMEOUT); an attempt that ends while it is watched is pulled into the local task
folder at once, as the SSH source's prefetch does.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
from collections.abc import Sequence
from pathlib import Path

from hsm.engine import fence
from hsm.engine.lifecycle import Ack, Facts
from hsm.jobscript import parse_status
from hsm.sources.base import (
    Capabilities,
    HealthSample,
    JobHandle,
    LaunchRequest,
    PollResult,
    PollState,
    Source,
    SweepContext,
    summarize,
    task_folder_name,
)
from tests.sim.world import LATENCY, LOST_AFTER, Execution, Host, World

START_GRACE = 10.0
ACK_TIMEOUT = 30.0
PROBE_TIMEOUT = 15.0
PRUNE_AFTER = 10.0


class ControllerKilled(BaseException):
    """SIGKILL of the controller: raised wherever the killed controller tries to act."""


class SimRemoteError(Exception):
    pass


class SimSource(Source):
    capabilities = Capabilities(remote=True, queue=False)
    lost_after = LOST_AFTER

    def __init__(self, world: World, host: Host, *, slots: int, generation: int) -> None:
        super().__init__(host.name, slots=slots)
        self.world = world
        self.host = host
        self.generation = generation
        self.ctx: SweepContext | None = None
        self._first_seen: dict[tuple[str, int], float] = {}
        self._failed: dict[tuple[str, int], str] = {}
        self._watched: dict[str, tuple[int, float]] = {}  # task_dir -> (attempt, touched)

    @property
    def reachable(self) -> bool:
        return self.host.view(self.world.now)[0]

    @reachable.setter
    def reachable(self, value: bool) -> None:
        pass

    # -- plumbing ------------------------------------------------------------------------
    def _alive(self) -> None:
        if self.world.generation != self.generation:
            raise ControllerKilled()

    async def _rpc(self, what: str) -> None:
        """One round trip. Blocks while the host is silent but not yet known to be."""
        self._alive()
        world, host = self.world, self.host
        up, _ = host.view(world.now)
        if not up:
            raise SimRemoteError(f"{host.name} is unreachable ({what})")
        o = host.outage_at(world.now)
        if o is not None:
            if o.detect < o.t1:
                await asyncio.sleep(max(0.0, o.detect - world.now))
                self._alive()
                raise SimRemoteError(f"connection to {host.name} lost ({what})")
            await asyncio.sleep(o.t1 - world.now)
        await asyncio.sleep(LATENCY)
        self._alive()

    def task_dir(self, ctx: SweepContext, number: int) -> str:
        return f"/remote/{self.name}/{ctx.sweep_id}/{task_folder_name(number)}"

    # -- the contract --------------------------------------------------------------------
    async def prepare(self, *, ctx: SweepContext) -> None:
        self._alive()
        self.ctx = ctx

    async def launch(
        self, *, ctx: SweepContext, requests: Sequence[LaunchRequest]
    ) -> list[JobHandle | Exception]:
        self._alive()
        world, host = self.world, self.host
        if not self.reachable:
            raise SimRemoteError(f"{host.name} is unreachable")
        if host.take("launch_refused") is not None:
            await asyncio.sleep(LATENCY)
            raise SimRemoteError(f"{host.name} refused the launch")
        lost = host.take("launch_lost") is not None
        late = host.take("launch_late") or 0.0
        partial = len(requests) > 1 and host.take("launch_partial") is not None
        send = list(requests[:1]) if partial else list(requests)
        now = world.now
        if not lost:
            for req in send:
                task_dir = self.task_dir(ctx, req.number)
                nonce = str(getattr(req, "nonce", "") or "")
                info = (
                    f"Task: {req.number}\nSource: {self.name}\nAttempt: {req.attempt}\n"
                    f"Nonce: {nonce}\n"
                )
                host.after(
                    LATENCY,
                    functools.partial(host.receive, task_dir, req.number, req.attempt, nonce, info),
                )
        if partial:  # the host wrote the first spec, then its disk was full
            await asyncio.sleep(LATENCY)
            self._alive()
        # The acknowledgement: a round trip, plus the fault's delay; while the host is
        # frozen, it comes after the thaw. The wait ends early when the connection breaks.
        ack = now + 2 * LATENCY + late
        o = host.outage_at(now)
        if o is not None:
            ack += o.t1 - now
        wait_until = min(ack if not lost else float("inf"), now + ACK_TIMEOUT)
        for o in host.outages:
            if now <= o.detect < wait_until and o.detect < o.t1:
                wait_until = o.detect
        await asyncio.sleep(wait_until - now)
        self._alive()
        confirmed = not lost and world.now >= ack
        handles: list[JobHandle | Exception] = []
        for index, req in enumerate(requests):
            if partial and index > 0:
                handles.append(OSError(errno.ENOSPC, "No space left on device (task spec)"))
                continue
            task_dir = self.task_dir(ctx, req.number)
            self._first_seen[(task_dir, req.attempt)] = world.now
            self._watched[task_dir] = (req.attempt, world.now)
            handles.append(
                JobHandle(
                    source=self.name,
                    number=req.number,
                    attempt=req.attempt,
                    task_dir=task_dir,
                    host=self.name,
                    confirmed=confirmed,
                    nonce=str(getattr(req, "nonce", "") or ""),
                )
            )
        return handles

    async def poll(self, *, handles: Sequence[JobHandle]) -> dict[JobHandle, PollResult]:
        self._alive()
        world, host = self.world, self.host
        up, since = host.view(world.now)
        if not up:
            assert since is not None
            return {
                h: PollResult(
                    PollState.UNKNOWN,
                    None,
                    Facts(
                        attempt=h.attempt,
                        nonce=h.nonce,
                        host_answered=False,
                        silent_for=world.now - since,
                    ),
                    f"{host.name} is unreachable",
                )
                for h in handles
            }
        # The host monitor's last report: a frozen host changes nothing, so it is current.
        await asyncio.sleep(LATENCY)
        self._alive()
        now = world.now
        out = {}
        for h in handles:
            self._watched[h.task_dir] = (h.attempt, now)
            out[h] = self._judge(h, now)
        return out

    def _judge(self, h: JobHandle, now: float) -> PollResult:
        """The facts, as the SSH backend reports them (its host monitor tells whether the
        wrapper lives; it has no word yet on whether the host got a launch)."""
        key = (h.task_dir, h.attempt)
        e = self.host.current.get(h.task_dir)
        # The monitor knows this attempt's wrapper from its launch, whatever the status says,
        # and looks at it before it reads the status: a wrapper that is gone wrote it whole.
        alive = (e.ended is None) if e is not None and e.attempt == h.attempt else None
        text = self.host.files.get(h.task_dir, {}).get("status.json")
        if text is not None and alive is not False and self.host.take("torn_status") is not None:
            text = text[: len(text) // 2]  # read while the wrapper was writing it
        status = parse_status(text) if text is not None else None
        state = summarize(status, h.attempt)
        facts = Facts(
            attempt=h.attempt,
            nonce=h.nonce,
            status=status,
            wrapper_alive=alive,
            status_unreadable=text is not None and status is None,
            ack=Ack.CONFIRMED if h.confirmed else Ack.UNCONFIRMED,
            # (counted from the launch, or from the reconnect when the host was away since)
            since_launch=now
            - max(self._first_seen.setdefault(key, now), self.host.up_since(now) or 0),
        )
        return PollResult(state, status, facts=facts)

    async def cancel(self, *, handles: Sequence[JobHandle]) -> None:
        if not handles:
            return
        await self._rpc("cancel")
        for h in handles:
            self.host.cancel(h.task_dir, h.attempt)

    async def collect(self, *, ctx: SweepContext, handle: JobHandle) -> None:
        await self._rpc("collect")
        self._pull(handle.task_dir)

    def _pull(self, task_dir: str) -> None:
        """Copy the host's task folder into the staging folder (as the SSH pull does)."""
        assert self.ctx is not None
        local = fence.incoming_dir(self.ctx.sweep_dir, self.name) / Path(task_dir).name
        fence.clear_staging(local)
        local.mkdir(parents=True, exist_ok=True)
        full = self.host.take("enospc") is not None
        for name, text in sorted(self.host.files.get(task_dir, {}).items()):
            if full:
                (local / name).write_text(text[: len(text) // 3])
                raise OSError(errno.ENOSPC, f"No space left on device: {local / name}")
            (local / name).write_text(text)

    def wrapper_ended(self, e: Execution) -> None:
        """The host monitor saw a wrapper end: a watched attempt is pulled at once."""
        if self.world.generation != self.generation or self.ctx is None:
            return
        watched = self._watched.get(e.task_dir)
        if watched is None or watched[0] != e.attempt:
            return
        if self.world.now - watched[1] > PRUNE_AFTER or not self.reachable:
            return
        with contextlib.suppress(OSError):
            self._pull(e.task_dir)
        self.wake.set()

    async def probe(self) -> HealthSample:
        self._alive()
        world, host = self.world, self.host
        if not self.reachable:
            return HealthSample(reachable=False, error=f"unreachable: {host.name}")
        o = host.outage_at(world.now)
        if o is not None:
            end = min(o.detect if o.detect < o.t1 else o.t1, world.now + PROBE_TIMEOUT)
            await asyncio.sleep(end - world.now)
            self._alive()
            if not host.answering(world.now) or not self.reachable:
                return HealthSample(reachable=False, error="the probe timed out")
        await asyncio.sleep(LATENCY)
        self._alive()
        return HealthSample(
            reachable=True,
            disk_path="/remote",
            free_bytes=500 * 10**9,
            total_bytes=1000 * 10**9,
            load1=0.1,
            cores=8,
            memory_percent=10.0,
        )
