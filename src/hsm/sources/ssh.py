"""An SSH host as a source: push the code with rsync, start detached wrappers, pull results.

Remote layout under ``remote_root`` (default ``~/hsm``)::

    .hsm/wrapper-<hash>.sh                      the job wrapper, one per version
    <project>/code-latest -> sweeps/.../code    the newest snapshot (for --link-dest)
    <project>/sweeps/<sweep id>/<source>/code/  the sweep's own snapshot of the code
    <project>/sweeps/<sweep id>/<source>/task_NNNN/   one folder per task

Tasks run from their own sweep's snapshot, pushed once per sweep (a resume keeps it), with
unchanged files hard-linked to the previous snapshot; it goes with the source's folder.
The source's folder is per source name, so that hosts sharing a file system never share a
task folder. A host monitor (``ssh_monitor``) starts the wrappers and reports their status
files; when the connection breaks, the source is unreachable until it reconnects, and its
running attempts are reported lost ``lost_after`` seconds after the host went silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import posixpath
import sys
from collections.abc import Awaitable, Sequence

from hsm import clock
from hsm.backoff import Backoff, Sleep
from hsm.engine import fence
from hsm.engine.lifecycle import Ack, Facts
from hsm.errors import HsmError
from hsm.jobscript import encode_spec, parse_events, parse_status, wrapper_name
from hsm.sources import ssh_host
from hsm.sources import ssh_scripts as scripts
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
from hsm.sources.hostpath import expand_root
from hsm.sources.probe import PROBE_SCRIPT, parse_probe
from hsm.sources.ssh_monitor import HostMonitor, LaunchResult, Unconfirmed
from hsm.sources.ssh_pull import HostPuller, Key, Prefetch
from hsm.sources.transport import (
    ConnectError,
    ConnectionLost,
    RemoteError,
    SshTransport,
    check_remote,
)

log = logging.getLogger(__name__)

RECONNECT_FIRST, RECONNECT_CAP = 1.0, 4.0  # seconds between reconnects: 1, 2, 4, 4 ...
PRUNE_AFTER = 10.0  # stop watching folders the engine has not asked about for this long
# Not pulled: the task's private scratch folders, and the wrapper's input and reserve file.
PULL_EXCLUDE = ("tmp", "cuda_cache", ".hsm/spec", ".hsm/status.spare")


class SshSource(Source):
    capabilities = Capabilities(remote=True, queue=False)

    def __init__(
        self,
        name: str,
        *,
        transport: SshTransport,
        slots: int,
        remote_root: str,
        python: str,
        setup: Sequence[str],
        gpus: Sequence[int] = (),
        keep_remote: bool = False,
        exclude: Sequence[str] = (),
        probe_gpus: bool = False,
        project_name: str = "project",
        host_tasks: bool = True,
    ) -> None:
        super().__init__(name, slots=slots, setup=setup, python=python, gpus=gpus)
        self.transport = transport
        self.remote_root = remote_root.rstrip("/") or "/"
        self.keep_remote = keep_remote
        self.exclude = list(exclude)
        self.probe_gpus = probe_gpus
        self.project_name = project_name
        # False when this only serves a cluster's login node: folders, code push and result
        # pulls, but no tasks of its own (no checks, no monitor).
        self.host_tasks = host_tasks
        self.lost_after = transport.target.lost_after
        self._ctx: SweepContext | None = None
        self._home: str | None = None
        self._root: str | None = None
        self._monitor: HostMonitor | None = None
        self._puller: HostPuller | None = None
        self._helper_lock = asyncio.Lock()
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self.sleep: Sleep = asyncio.sleep  # the waits between reconnects (tests drive them)
        self._pushed = self._checked = False
        self._down_since: float | None = None
        self._down_reason = ""
        self._ids: dict[str, int] = {}
        self._touched: dict[int, float] = {}
        self._first_seen: dict[Key, float] = {}
        self._dirs: dict[int, str] = {}
        self._unknown: set[int] = set()  # watched, not looked at by the monitor yet
        self._up_since = 0.0  # when the connection was last made (again)
        self._prefetch = Prefetch(self._pull, self.wake.set)

    # -- paths ---------------------------------------------------------------------------
    def _abs(self, path: str) -> str:
        return expand_root(path, self._home) if self._home else path

    def base(self, ctx: SweepContext) -> str:
        return f"{self._root or self.remote_root}/{ctx.project_name}"

    def project_dir(self, ctx: SweepContext) -> str:
        return f"{self.sweep_root(ctx)}/code"

    def latest_code(self, ctx: SweepContext) -> str:
        return f"{self.base(ctx)}/code-latest"

    def sweep_root(self, ctx: SweepContext) -> str:
        return f"{self.base(ctx)}/sweeps/{ctx.sweep_id}/{self.name}"

    def task_dir(self, ctx: SweepContext, number: int) -> str:
        return f"{self.sweep_root(ctx)}/{task_folder_name(number)}"

    def wrapper_path(self, ctx: SweepContext) -> str:
        return f"{self._root or self.remote_root}/.hsm/{wrapper_name()}"

    def host_label(self) -> str:
        return self.transport.target.host

    def _where(self) -> str:
        return f"source {self.name!r} ({self.transport.target.label()})"

    # -- before the sweep ----------------------------------------------------------------
    async def preflight(self) -> None:
        await ssh_host.preflight(
            self.transport,
            self._where(),
            name=self.name,
            remote_root=self.remote_root,
            project_name=self.project_name,
            python=self.python,
            setup=self.setup,
        )

    async def prepare(self, *, ctx: SweepContext) -> None:
        self._ctx = ctx
        if not self.host_tasks:
            await self._bring_up()
            return
        self.transport.on_lost = self._connection_lost
        try:
            await self._bring_up()
        except ConnectError as exc:
            if not exc.unreachable or self.probe_gpus:
                raise
            self._mark_down(exc.message)
        self._supervisor = asyncio.create_task(self._supervise())

    async def _bring_up(self) -> None:
        """Connect, make the folders, push and check (once), start the monitor."""
        ctx = self._ctx
        assert ctx is not None
        where = self._where()
        try:
            self._home, self._root, snapshot = await ssh_host.setup(
                self.transport,
                where,
                remote_root=self.remote_root,
                project_name=ctx.project_name,
                sweep_id=ctx.sweep_id,
                source=self.name,
                wrapper_name=wrapper_name(),
            )
            # After the push, recording the snapshot and the check go side by side (each is a
            # round trip of its own).
            steps: list[Awaitable[object]] = []
            if not self._pushed and await ssh_host.push_snapshot(
                self.transport,
                project_root=ctx.project_root,
                code_dir=self.project_dir(ctx),
                latest=self.latest_code(ctx),
                exclude=self.exclude,
                snapshot=snapshot,
            ):
                steps.append(
                    ssh_host.mark_pushed(
                        self.transport,
                        code_dir=self.project_dir(ctx),
                        latest=self.latest_code(ctx),
                    )
                )
            checking = self.host_tasks and not self._checked
            if checking:
                steps.append(
                    ssh_host.check(
                        self.transport,
                        where,
                        name=self.name,
                        code_dir=self.project_dir(ctx),
                        python=self.python,
                        argv=ctx.argv_for({}, None, self.python),
                        setup=self.setup,
                        probe_gpus=self.probe_gpus,
                    )
                )
            results = await all_of(steps)
            self._pushed = True
            if checking:
                if self.probe_gpus:
                    gpus = results[-1]
                    assert isinstance(gpus, list)
                    self.gpus = gpus
                self._checked = True
            if self.host_tasks:
                await self._start_monitor()
            else:  # a cluster's login: its pulls share one channel too
                await self._restart_puller()
        except ConnectionLost as exc:
            raise ConnectError(f"{where}: {exc.message}", unreachable=True) from None
        if self._down_since is not None:
            log.warning("source %s is reachable again", self.name)
        self._down_since = None
        self._up_since = clock.monotonic()
        self.reachable = True
        self.wake.set()

    # -- connection state ----------------------------------------------------------------
    async def _start_monitor(self) -> None:
        """Start (or restart) the host monitor and the puller."""
        await self._stop_helpers()
        ctx = self._ctx
        assert ctx is not None and self._root is not None
        monitor = HostMonitor(self.transport, self.wrapper_path(ctx), self._changed)
        puller = HostPuller(self.transport)
        started = await asyncio.gather(monitor.start(), puller.start(), return_exceptions=True)
        self._monitor, self._puller = monitor, puller  # (stopped as helpers if one failed)
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _restart_puller(self) -> HostPuller | None:
        async with self._helper_lock:
            if self._puller is not None and self._puller.alive:
                return self._puller
            puller = HostPuller(self.transport)
            try:
                await puller.start()
            except HsmError:
                return None
            self._puller = puller
            return puller

    async def _stop_helpers(self) -> None:
        if self._monitor is not None:
            await self._monitor.close()
        if self._puller is not None:
            await self._puller.close()

    def _connection_lost(self, exc: Exception | None) -> None:
        if self._closing:
            return
        reason = str(exc) if exc else "the host closed the connection"
        silent = "keepalive" in reason.lower()
        now = clock.monotonic()
        self._mark_down(reason, since=now - self.transport.target.silence_limit if silent else now)

    def _mark_down(self, reason: str, since: float | None = None) -> None:
        if self._down_since is not None:
            return
        now = clock.monotonic()
        self._down_since = since if since is not None else now
        self._down_reason = reason
        self.reachable = False
        log.warning("source %s is unreachable: %s", self.name, reason)
        self.wake.set()
        delay = max(0.0, self._down_since + self.lost_after - now) + 0.05
        asyncio.get_running_loop().call_later(delay, self.wake.set)

    async def _supervise(self) -> None:
        """Keep the monitor running; reconnect after the host was lost. If the supervisor
        itself fails, the source is unreachable from then on (its attempts go the way of a
        lost host's), never "reachable" without a monitor."""
        try:
            await self._keep_up()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("source %s: its supervisor failed: %r", self.name, exc)
            self._mark_down(f"the supervisor failed: {exc!r}")
            self.reachable = False

    async def _keep_up(self) -> None:
        backoff = Backoff(tries=sys.maxsize, first=RECONNECT_FIRST, cap=RECONNECT_CAP)
        while not self._closing:
            monitor = self._monitor
            if self.reachable and monitor is not None:
                await monitor.done.wait()
                if self._closing:
                    return
                if self.transport.connected:
                    log.warning(
                        "host monitor on %s stopped (%s); restarting it", self.name, monitor.error
                    )
                    await asyncio.sleep(RECONNECT_FIRST)
                    with contextlib.suppress(HsmError):
                        await self._start_monitor()
                        continue
                self._mark_down(self.transport.lost_reason or monitor.error)
                self.transport.drop()
            try:
                await self._bring_up()
            except (HsmError, OSError) as exc:
                reason = exc.message if isinstance(exc, HsmError) else str(exc)
                network = isinstance(exc, ConnectError) and exc.unreachable
                if not network and reason != self._down_reason:  # e.g. a new host key
                    log.warning("source %s cannot be used again yet: %s", self.name, reason)
                self._down_reason = reason
                backoff.failed()
                await self.sleep(backoff.delay())
            else:
                backoff.succeeded()

    # -- tasks ---------------------------------------------------------------------------
    def _id(self, task_dir: str) -> int:
        ident = self._ids.get(task_dir)
        if ident is None:
            ident = self._ids[task_dir] = len(self._ids) + 1
            self._dirs[ident] = task_dir
        return ident

    def _changed(self, idents: Sequence[int]) -> None:
        """The monitor saw status changes: pull what ended, wake the engine."""
        monitor = self._monitor
        for ident in idents:
            attempt = monitor.watched.get(ident) if monitor else None
            key = (self._dirs.get(ident, ""), attempt or 0)
            if self._finished(key):
                self._prefetch.ended(key)
        self.wake.set()

    async def launch(
        self, *, ctx: SweepContext, requests: Sequence[LaunchRequest]
    ) -> list[JobHandle | Exception]:
        monitor = self._monitor
        if not self.reachable or monitor is None or not monitor.alive:
            raise RemoteError(f"{self._where()}: the host is unreachable: {self._down_reason}")
        items = []
        for req in requests:
            task_dir = self.task_dir(ctx, req.number)
            spec = encode_spec(self.task_spec(ctx, req, self.gpu_ids(req.slot)))
            items.append((self._id(task_dir), task_dir, req.attempt, req.nonce, spec))
        try:
            results: list[LaunchResult] = await monitor.launch(items)
        except (RemoteError, TimeoutError) as exc:
            # Some may have started: the handles let the engine find (or lose) them.
            results = [exc] * len(items)
        now = clock.monotonic()
        handles: list[JobHandle | Exception] = []
        refused = 0
        for req, (ident, task_dir, *_), result in zip(requests, items, results, strict=True):
            key = (task_dir, req.attempt)
            self._first_seen[key] = self._touched[ident] = now
            if isinstance(result, int):
                self._prefetch.unpulled.add(key)
            elif not isinstance(result, ConnectionLost | TimeoutError | Unconfirmed):
                # The host answered that it could not start it.
                refused += 1
                handles.append(RemoteError(f"{self._where()}: the launch failed: {result}"))
                continue
            handles.append(
                JobHandle(
                    source=self.name,
                    number=req.number,
                    attempt=req.attempt,
                    task_dir=task_dir,
                    host=self.host_label(),
                    job_id=str(result) if isinstance(result, int) else None,
                    confirmed=isinstance(result, int),
                    nonce=req.nonce,
                )
            )
        if refused == len(items):  # none started: the engine retries them elsewhere
            first = handles[0]
            assert isinstance(first, Exception)
            raise first
        return handles

    async def poll(self, *, handles: Sequence[JobHandle]) -> dict[JobHandle, PollResult]:
        monitor = self._monitor
        now = clock.monotonic()
        if not self.reachable or monitor is None or not monitor.alive:
            return self._unreachable(handles, now)
        fresh = []
        for h in handles:
            task_dir = self._abs(h.task_dir)
            ident = self._id(task_dir)
            self._touched[ident] = now
            if monitor.watched.get(ident) != h.attempt:
                monitor.watch(ident, task_dir, h.attempt, h.nonce, _pid(h.job_id))
                self._unknown.add(ident)
            if ident in self._unknown:
                fresh.append(ident)
        if fresh:  # newly watched: wait until the monitor has looked at them
            try:
                await monitor.barrier()
            except (RemoteError, TimeoutError):
                return self._unreachable(handles, now)
            self._unknown.difference_update(fresh)
        for ident in [i for i in monitor.watched if now - self._touched.get(i, 0) > PRUNE_AFTER]:
            monitor.unwatch(ident)
        return {h: self._judge(monitor, h, now) for h in handles}

    def _judge(self, monitor: HostMonitor, h: JobHandle, now: float) -> PollResult:
        """The facts the host monitor last reported for this attempt."""
        task_dir = self._abs(h.task_dir)
        key = (task_dir, h.attempt)
        seen = monitor.seen.get(self._id(task_dir))
        status = parse_status(seen.text) if seen else None
        state = summarize(status, h.attempt)
        mine = status is not None and status.belongs_to(h.attempt, h.nonce)
        events: tuple[str, ...] = ()
        if mine and state is PollState.RUNNING:
            events = tuple(parse_events(monitor.events.get(self._id(task_dir), ""), h.attempt))
        if mine and seen is not None and seen.alive is None and status is not None:
            # The host did not know the wrapper's pid (an unconfirmed launch, found again):
            # the status names it, so watch it from the next scan on.
            monitor.watch(self._id(task_dir), task_dir, h.attempt, h.nonce, status.pid)
            self._unknown.add(self._id(task_dir))
        facts = Facts(
            attempt=h.attempt,
            nonce=h.nonce,
            status=status,
            received=True if mine else self._received(monitor, task_dir, h),
            status_unreadable=seen is not None and bool(seen.text) and status is None,
            wrapper_alive=seen.alive if seen is not None else None,
            ack=Ack.CONFIRMED if h.confirmed else Ack.UNCONFIRMED,
            # How long the launch has had to report: from the launch, or from the reconnect
            # when the host was away since (a frozen host may start it only once it thaws).
            since_launch=now - max(self._first_seen.setdefault(key, now), self._up_since),
            collectable=not (mine and self._prefetch.pending(key)),
        )
        return PollResult(state, status, events=events, facts=facts)

    def _received(self, monitor: HostMonitor, task_dir: str, h: JobHandle) -> bool | None:
        """Whether the task folder holds this attempt's launch record (None: not reported).
        The record is "ATTEMPT NONCE [PID]"; a handle older than fencing has no nonce."""
        record = monitor.launched.get(self._id(task_dir))
        if record is None:
            return None
        attempt, nonce, *_ = [*record.split(), "", ""]
        return attempt == str(h.attempt) and (not h.nonce or nonce == h.nonce)

    def _unreachable(self, handles: Sequence[JobHandle], now: float) -> dict[JobHandle, PollResult]:
        since = self._down_since
        silent = now - since if since is not None else 0.0
        detail = f"{self.host_label()} is unreachable: {self._down_reason}"
        return {
            h: PollResult(
                PollState.UNKNOWN,
                None,
                Facts(attempt=h.attempt, nonce=h.nonce, host_answered=False, silent_for=silent),
                detail,
            )
            for h in handles
        }

    async def cancel(self, *, handles: Sequence[JobHandle]) -> None:
        """Stop these attempts: the host gets the wrapper's pid (from the launch, or else the
        last status the monitor saw, or else the host's launch record) and its task's process
        group; it decides nothing from the status file itself."""
        monitor = self._monitor
        args: list[str] = []
        for h in handles:
            task_dir = self._abs(h.task_dir)
            seen = monitor.seen.get(self._id(task_dir)) if monitor is not None else None
            status = parse_status(seen.text) if seen is not None else None
            if status is None or not status.belongs_to(h.attempt, h.nonce):
                status = None
            pid = _pid(h.job_id) or (status.pid if status is not None else None)
            pgid = status.pgid if status is not None else None
            args += [task_dir, str(h.attempt), h.nonce, _text(pid), _text(pgid)]
        if args:
            result = await self.transport.run_script(scripts.CANCEL, args, name="hsm-cancel")
            check_remote(result, f"{self._where()}: cancelling {len(handles)} task(s)")

    async def collect(self, *, ctx: SweepContext, handle: JobHandle) -> None:
        key = (self._abs(handle.task_dir), handle.attempt)
        if not await self._prefetch.wait(key):
            await self._pull(posixpath.dirname(key[0]), [key])
        self._prefetch.unpulled.discard(key)

    async def _pull(self, parent: str, keys: list[Key]) -> None:
        """Bring these task folders into the local sweep folder, over the puller's channel
        (or, if that fails, over a new one)."""
        assert self._ctx is not None
        local = fence.incoming_dir(self._ctx.sweep_dir, self.name)
        local.mkdir(parents=True, exist_ok=True)
        names = [posixpath.basename(d) for d, _ in keys]
        for name in names:  # a staged folder holds one pull, never a merge of two
            fence.clear_staging(local / name)
        exclude = [f"{n}/{x}" for n in names for x in PULL_EXCLUDE]
        puller = self._puller
        if (puller is None or not puller.alive) and self.reachable:
            puller = await self._restart_puller()
        if puller is not None and puller.alive:
            try:
                await puller.pull(parent, names, local, exclude=exclude)
                return
            except ConnectionLost:
                pass
        await self.transport.pull(parent, names, local, exclude=exclude)

    def _finished(self, key: Key) -> bool:
        monitor = self._monitor
        seen = monitor.seen.get(self._id(key[0])) if monitor else None
        status = parse_status(seen.text) if seen else None
        return summarize(status, key[1]) is PollState.FINISHED

    # -- the end -------------------------------------------------------------------------
    async def finish(self, *, ctx: SweepContext, all_completed: bool) -> None:
        if not all_completed or self.keep_remote:
            log.info("the task folders on %s stay in %s", self.name, self.sweep_root(ctx))
            return
        if not self.reachable:
            log.warning(
                "%s is unreachable: its task folders stay in %s", self.name, self.sweep_root(ctx)
            )
            return
        sweep = posixpath.dirname(self.sweep_root(ctx))
        result = await self.transport.run_script(
            scripts.CLEAN, [sweep, self.sweep_root(ctx)], name="hsm-clean"
        )
        check_remote(result, f"{self._where()}: removing {self.sweep_root(ctx)}")

    async def probe(self) -> HealthSample:
        if self._ctx is not None and not self.reachable:
            return HealthSample(reachable=False, error=f"unreachable: {self._down_reason}")
        root = self._root or self.remote_root
        try:
            result = await self.transport.run_script(
                PROBE_SCRIPT, [root], name="hsm-probe", timeout=15
            )
        except HsmError as exc:
            return HealthSample(reachable=False, error=exc.message)
        except TimeoutError:
            return HealthSample(reachable=False, error="the probe timed out")
        return parse_probe(result.stdout, root)

    async def close(self) -> None:
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await self._prefetch.close()
        await self._stop_helpers()
        await self.transport.close()


def _pid(job_id: str | None) -> int | None:
    """The wrapper's pid an SSH handle carries as its job id (None when it has none)."""
    return int(job_id) if job_id is not None and job_id.isdigit() else None


def _text(number: int | None) -> str:
    return "" if number is None else str(number)


async def all_of(steps: Sequence[Awaitable[object]]) -> list[object]:
    """Run ``steps`` side by side; their results in order, or the first error in order
    (after all of them ended)."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return list(results)
