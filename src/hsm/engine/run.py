"""The run loop: one asyncio loop per sweep. Dispatch, polling, collection, retries."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from hsm import clock
from hsm.backoff import Backoff
from hsm.engine import fence, lifecycle
from hsm.engine.bringup import broken_sources, prepare_all, settle_lost
from hsm.engine.collect import collect_backoff, give_up_collecting
from hsm.engine.failsafe import TASK_LEVEL_CAUSES, FailsafeConfig
from hsm.engine.lifecycle import Next, Verdict
from hsm.engine.messages import event_level, failed_task_message
from hsm.engine.monitor import SourceMonitor
from hsm.engine.pacing import poll_pacer
from hsm.engine.policy import home_source, homes, judge_attempt
from hsm.engine.strategy import make_strategy, prefer, views
from hsm.engine.summary import failed_message
from hsm.errors import ConfigError, ExitCode
from hsm.jobscript import TASK_INFO, read_events, read_status
from hsm.sources.base import (
    JobHandle,
    LaunchRequest,
    PollResult,
    Source,
    SweepContext,
    task_folder_name,
)
from hsm.spec.config import HealthConfig
from hsm.state import AttemptRow, Store
from hsm.states import (
    INFRASTRUCTURE_CAUSES,
    AttemptState,
    Cause,
    SweepState,
    TaskStatus,
)

log = logging.getLogger("hsm.sweep")

CANCEL_CHECK_INTERVAL = 0.5
CANCEL_GRACE = 15.0


@dataclass
class Running:
    attempt: AttemptRow
    handle: JobHandle | None = None
    ended: bool = False  # its wrapper recorded the end; the slot is free, results may come
    events_seen: int = 0  # event lines of the attempt already logged
    reattached: bool = False  # started by an earlier controller
    collect: Backoff = field(default_factory=collect_backoff)  # bounded result collection


@dataclass
class RunOutcome:
    sweep_id: str
    state: SweepState
    exit_code: int
    message: str | None = None


@dataclass
class EngineOptions:
    max_retries: int = 2
    strategy: str = "round_robin"
    poll_interval: Mapping[str, float] = field(default_factory=dict)
    failsafe: FailsafeConfig = field(default_factory=FailsafeConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    health_interval: float = 60.0
    stall_timeout: float = 600.0  # nothing running, nothing can start: give up after this
    explicit_alone: bool = False  # the run's one source was named by the user


ProgressFn = Callable[[dict[TaskStatus, int]], None]


class Engine:
    """Runs (or resumes) one sweep to its end."""

    def __init__(
        self,
        *,
        store: Store,
        sweep_id: str,
        ctx: SweepContext,
        sources: Mapping[str, Source],
        options: EngineOptions,
        on_progress: ProgressFn | None = None,
    ) -> None:
        self.store = store
        self.sweep_id = sweep_id
        self.ctx = ctx
        self.sources = dict(sources)
        self.order = list(self.sources)
        self.options = options
        self.on_progress = on_progress
        self.strategy = make_strategy(options.strategy)
        self.pending: deque[int] = deque()
        self.avoid: dict[int, set[str]] = {}
        self.home: dict[int, str] = {}  # a retry after a walltime or preemption goes back here
        self.running: dict[str, dict[int, Running]] = {n: {} for n in self.sources}
        self.free_slots: dict[str, list[int]] = {}
        self.counts: dict[TaskStatus, int] = {}
        self.wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._interrupted = False
        self._cancelled = False
        self._aborted: str | None = None
        self._stalled_since: float | None = None
        self._fatal: BaseException | None = None  # raised by a background task: re-raised
        self._stall_logged = 0.0
        self.monitor = SourceMonitor(
            store=store,
            sweep_id=sweep_id,
            sources=self.sources,
            health=options.health,
            failsafe=options.failsafe,
            interval=options.health_interval,
            running=lambda name: len(self.running.get(name, ())),
        )
        self._background: set[asyncio.Task[None]] = set()
        # Attempts recorded as lost while their host was unreachable: they may still run
        # there. Settled when the host is back (see _resolve_orphans).
        self.orphans: dict[str, list[Running]] = {n: [] for n in self.sources}
        self._orphans_lock = asyncio.Lock()

    # -- lifecycle -----------------------------------------------------------------------
    async def run(self) -> RunOutcome:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal)
        try:
            await self._prepare()
            self._load_tasks()
            self._reattach()
            await self.monitor.check_all()
            self._check_start()
            for name in self.sources:
                self._spawn(self._poller(name))
            self._spawn(self._watch_cancel())
            self._spawn(self.monitor.run(self._stop, self.wake))
            await self._main_loop()
            return await self._finish()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            self._stop.set()
            for task in list(self._background):
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            await asyncio.gather(
                *(s.close() for s in self.sources.values()), return_exceptions=True
            )

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, Exception):  # e.g. SystemExit: the run ends with it
                self._fatal = self._fatal or exc
                self._stop.set()
                self.wake.set()
                return
            log.error("internal error in the run loop: %r", exc, exc_info=exc)
            # Stop here, without stopping the tasks (they go on, and resume reattaches
            # them), and never report the sweep as completed.
            self._aborted = self._aborted or (
                f"internal error in the run loop: {exc!r}; the running tasks go on;"
                f" continue with: hsm resume {self.sweep_id}"
            )
            self._stop.set()
            self.wake.set()

    def _on_signal(self) -> None:
        if not self._interrupted:
            log.warning("interrupted: stopping running tasks (Ctrl-C again is not needed)")
        self._interrupted = True
        self.wake.set()

    async def _prepare(self) -> None:
        failures = await prepare_all(self.sources, self.ctx)
        for name, reason in broken_sources(
            failures, explicit_alone=self.options.explicit_alone, what="setup and code push"
        ).items():
            self.monitor.disable(name, f"{reason}; going on with the other sources")
            await self.sources.pop(name).close()
            self.order.remove(name)
            settle_lost(self.store, self.sweep_id, name)
        per_task = self.ctx.gpus_per_task
        for source in self.sources.values():
            source.configure_gpus(per_task)
            if per_task and source.gpus and source.slots == 0:
                raise ConfigError(
                    f"resources.gpus: each task asks for {per_task} GPU(s), but source"
                    f" {source.name!r} allows only {len(source.gpus)}"
                )
        for name, source in self.sources.items():
            self.free_slots[name] = list(range(source.slots - 1, -1, -1))

    def _load_tasks(self) -> None:
        # Placement memory comes from the recorded attempts, so it survives any restart;
        # tasks that already failed or were lost somewhere go first.
        self.avoid = self.store.failed_placements(self.sweep_id)
        for number in self.store.requeue_untracked(self.sweep_id):
            log.warning(
                "task %d was recorded running with no attempt that runs: queued again", number
            )
        self.home = homes(
            (a.number, a.attempt, a.source, a.cause) for a in self.store.attempts(self.sweep_id)
        )
        numbers = self.store.pending_numbers(self.sweep_id)
        self.pending.extend(n for n in numbers if n in self.avoid)
        self.pending.extend(n for n in numbers if n not in self.avoid)
        self.counts = self.store.task_counts(self.sweep_id)
        self._cancelled = self.store.cancel_requested(self.sweep_id)
        self._progress()

    def _reattach(self) -> None:
        """Pick up attempts that were running when a previous controller died."""
        for attempt in self.store.attempts(self.sweep_id, active_only=True):
            self._track(attempt)
        self._orphans_from_store()

    def _track(self, attempt: AttemptRow) -> None:
        """Follow a recorded active attempt from here on (a reattach)."""
        source = self.sources.get(attempt.source)
        if source is None:
            log.warning(
                "task %d was running on %s, which is not part of this run; it is left alone",
                attempt.number,
                attempt.source,
            )
            return
        handle = (
            JobHandle.from_json(attempt.handle)
            if attempt.handle
            else JobHandle(
                source=source.name,
                number=attempt.number,
                attempt=attempt.attempt,
                task_dir=source.task_dir(self.ctx, attempt.number),
                confirmed=False,
                nonce=attempt.nonce,
            )
        )
        slots = self.free_slots[source.name]
        if attempt.slot in slots:
            slots.remove(attempt.slot)
        else:  # fewer slots than before: it holds another one (or none) until it ends
            attempt = replace(attempt, slot=slots.pop() if slots else None)
        self.running[source.name][attempt.id] = Running(attempt, handle, reattached=True)
        log.info(
            "reattached task %d (attempt %d) on %s",
            attempt.number,
            attempt.attempt,
            source.name,
        )

    def _orphans_from_store(self) -> None:
        # The last lost attempt of each task on each source may still be running there.
        lost = {
            (a.number, a.source): a
            for a in self.store.attempts(self.sweep_id)
            if a.state is AttemptState.LOST and a.handle and a.source in self.sources
        }
        for attempt in lost.values():
            assert attempt.handle is not None
            self.orphans[attempt.source].append(
                Running(attempt, JobHandle.from_json(attempt.handle))
            )
            self.sources[attempt.source].wake.set()

    # -- the main loop -------------------------------------------------------------------
    async def _main_loop(self) -> None:
        while not self._stop.is_set():
            self._raise_fatal()
            self.monitor.refresh()
            self._check_abort()
            if self._interrupted or self._cancelled or self._aborted:
                await self._stop_running()
                return
            self._dispatch()
            if not self.pending and not any(self.running.values()) and not self._pick_up():
                return
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=1.0)

    def _pick_up(self) -> bool:
        """Before the end: every task the state holds as unfinished is followed here. A task
        left neither queued nor running (it would never end) is picked up again, with a
        warning. Returns whether there was one."""
        tracked = {r.attempt.id for runs in self.running.values() for r in runs.values()}
        untracked = [
            a
            for a in self.store.attempts(self.sweep_id, active_only=True)
            if a.id not in tracked and a.source in self.sources
        ]
        numbers = self.store.requeue_untracked(self.sweep_id) + [
            n for n in self.store.pending_numbers(self.sweep_id) if n not in self.pending
        ]
        for attempt in untracked:
            log.warning(
                "task %d (attempt %d) was not followed: reattached", attempt.number, attempt.attempt
            )
            self._track(attempt)
        for number in dict.fromkeys(numbers):
            if number not in self.pending:
                log.warning("task %d was neither queued nor running: queued again", number)
                self.pending.append(number)
        if untracked or numbers:
            self.counts = self.store.task_counts(self.sweep_id)
        return bool(untracked or numbers)

    def usable(self, name: str) -> bool:
        """Whether a source may take new tasks now (enabled, healthy)."""
        return self.monitor.usable(name)

    def _takes_work(self, name: str) -> bool:
        source = self.sources[name]
        busy = source.slots - len(self.free_slots.get(name, ()))
        return self._open_to_work(name) and busy < self.monitor.capacity(name, source.slots)

    def _check_start(self) -> None:
        """Every source unusable for a reason that will not pass by itself (disabled, a
        critical disk): say so at once, with the thresholds and the values seen."""

        def hopeless(name: str) -> bool:  # disabled, or answered with a critical disk
            st = self.monitor.state[name]
            return not st.enabled or (
                not self.usable(name)
                and st.verdict is not None
                and st.verdict.disk_status is not None
            )

        if (
            not self.pending
            or any(self.running.values())
            or not all(hopeless(n) for n in self.sources)
        ):
            return  # (tasks still running are waited for: _check_stall and _check_abort)
        self._aborted = (
            f"no source can take a task: {self.monitor.describe_unusable()}. Free space or "
            f"change those keys in hsm_config.yaml, or re-enable a source with: hsm "
            f"distributed enable NAME; then continue with: hsm resume {self.sweep_id}"
        )

    def _check_stall(self) -> None:
        """Tasks pending, none running, no source able to take one: say what the sweep waits
        for, and give up after ``stall_timeout``."""
        now = clock.monotonic()
        if (
            not self.pending
            or any(self.running.values())
            or any(self._takes_work(n) for n in self.sources)
        ):
            self._stalled_since = None
            return
        if self._stalled_since is None:
            self._stalled_since = self._stall_logged = now
            log.warning(
                "waiting: no source takes work now (%s); the sweep gives up after %.0f"
                " s of this (distributed.stall_timeout)",
                self.monitor.describe_unusable(),
                self.options.stall_timeout,
            )
        elif now - self._stall_logged >= 60.0:
            self._stall_logged = now
            log.warning(
                "still waiting for a source to take work (%.0f s): %s",
                now - self._stalled_since,
                self.monitor.describe_unusable(),
            )
        if now - self._stalled_since >= self.options.stall_timeout:
            self._aborted = (
                f"nothing could start for {now - self._stalled_since:.0f} s"
                f" (distributed.stall_timeout): {self.monitor.describe_unusable()}. Fix the"
                f" sources or change those keys in hsm_config.yaml, then continue with:"
                f" hsm resume {self.sweep_id}"
            )

    def _check_abort(self) -> None:
        """Stop early when the script fails everywhere, or no usable source is left."""
        if self._aborted:
            return
        if self.monitor.broken_script():
            self._aborted = self._broken_script_message()
            return
        self._check_stall()
        if self._aborted or not self.pending or any(self.running.values()):
            return
        if any(self._recoverable(n) for n in self.sources):
            return
        self._aborted = (
            f"no usable source is left: {self.monitor.describe_unusable()}. Re-enable a "
            f"source with: hsm distributed enable NAME (after fixing it), then continue with: "
            f"hsm resume {self.sweep_id}"
        )

    def _recoverable(self, name: str) -> bool:
        st = self.monitor.state[name]
        if not st.enabled:
            return False
        v = st.verdict
        return v is None or v.passed or st.consecutive < self.options.failsafe.health_failures

    def _broken_script_message(self) -> str:
        first = self.store.first_failed_attempt(self.sweep_id, [c.value for c in TASK_LEVEL_CAUSES])
        tail = ""
        if first is not None:
            log_path = Path(
                self.ctx.sweep_dir, "tasks", task_folder_name(first.number), "stderr.log"
            )
            try:
                lines = log_path.read_text(errors="replace").splitlines()[-10:]
            except OSError:
                lines = []
            tail = (
                f"\nThe first failure (task {first.number} on {first.source}, exit code "
                f"{first.exit_code}) ended with, in {log_path}:\n"
                + "\n".join(f"  {line}" for line in lines)
            )
        return (
            f"the script itself fails: every task failed on every source and none "
            f"completed, so the sources are not to blame. Fix the script, then continue "
            f"with: hsm resume {self.sweep_id} --retry-failed{tail}"
        )

    def _open_to_work(self, name: str) -> bool:
        return self.usable(name) and self.sources[name].reachable and not self.orphans[name]

    def _dispatch(self) -> None:
        batches: dict[str, list[LaunchRequest]] = {}
        held: list[int] = []  # retries waiting for a slot on a source they did not fail on
        while self.pending:
            busy = {n: s.slots - len(self.free_slots[n]) for n, s in self.sources.items()}
            candidates = [
                v
                for v in views({n: s.slots for n, s in self.sources.items()}, busy)
                if self.free_slots[v.name] and self._takes_work(v.name)
            ]
            if not candidates:
                break
            number = self.pending.popleft()
            home = self.home.get(number)
            if home is not None and self._open_to_work(home):
                # Its checkpoint is in its folder there: it waits for a slot on that source.
                at_home = [c for c in candidates if c.name == home]
                if not at_home:
                    held.append(number)
                    continue
                candidates = at_home
            avoid = self.avoid.get(number, set()) - {home}
            eligible = prefer(candidates, avoid)
            if eligible[0].name in avoid and any(
                n not in avoid and self._open_to_work(n) for n in self.sources
            ):
                held.append(number)  # a source it has not failed on will free a slot
                continue
            choice = self.strategy.pick(eligible, self.order)
            slot = self.free_slots[choice.name].pop()
            attempt = self.store.begin_attempt(self.sweep_id, number, source=choice.name, slot=slot)
            self.running[choice.name][attempt.id] = Running(attempt)
            self._count(TaskStatus.PENDING, TaskStatus.RUNNING)
            params = self.store.task(self.sweep_id, number).params
            batches.setdefault(choice.name, []).append(
                LaunchRequest(
                    number=number,
                    attempt=attempt.attempt,
                    params=params,
                    slot=slot,
                    attempt_id=attempt.id,
                    nonce=attempt.nonce,
                )
            )
        self.pending.extendleft(reversed(held))
        for name, requests in batches.items():
            self._spawn(self._launch(name, requests))

    async def _launch(self, name: str, requests: list[LaunchRequest]) -> None:
        source = self.sources[name]
        if not source.capabilities.remote:  # it runs in the task folder: give it a clean one
            for req in requests:
                if self.home.get(req.number) == name:
                    continue  # a retry that may resume from the checkpoint in its folder
                try:
                    fence.set_aside(Path(source.task_dir(self.ctx, req.number)))
                except OSError as exc:
                    log.warning(
                        "could not move the earlier attempt of task %d aside: %s", req.number, exc
                    )
        try:
            handles = await source.launch(ctx=self.ctx, requests=requests)
        except Exception as exc:  # noqa: BLE001 - a failed launch is retried elsewhere
            log.error("could not launch %d task(s) on %s: %s", len(requests), name, exc)
            for req in requests:
                run = self.running[name].get(req.attempt_id)
                if run is not None:
                    self._settle(name, run, Cause.LAUNCH_FAILED, None)
            return
        for req, handle in zip(requests, handles, strict=True):
            run = self.running[name].get(req.attempt_id)
            if run is None:
                continue
            if isinstance(handle, Exception):  # this one surely did not start
                log.error("could not launch task %d on %s: %s", req.number, name, handle)
                self._settle(name, run, Cause.LAUNCH_FAILED, None)
                continue
            self.store.attempt_launched(
                req.attempt_id, handle.to_json(), handle.host, confirmed=handle.confirmed
            )
            run.handle = handle
            if handle.confirmed:
                run.attempt = replace(run.attempt, state=AttemptState.RUNNING)
                log.debug("task %d started on %s (attempt %d)", req.number, name, req.attempt)
            else:
                log.warning(
                    "the launch of task %d on %s was not confirmed; it is checked"
                    " on the host before anything else is decided",
                    req.number,
                    name,
                )
        source.wake.set()

    async def _poller(self, name: str) -> None:
        source = self.sources[name]
        pacer = poll_pacer(source, self.options.poll_interval.get(name, 1.0))
        failed_before = False
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(source.wake.wait(), timeout=pacer.interval)
            if source.wake.is_set():
                pacer.reset()
            source.wake.clear()
            if self.orphans[name] and source.reachable:
                await self._resolve_orphans(name)
            runs = [r for r in self.running[name].values() if r.handle is not None]
            if not runs:
                continue
            try:
                results = await source.poll(handles=[r.handle for r in runs if r.handle])
            except Exception as exc:  # noqa: BLE001 - a backend bug must not stop the sweep
                if not failed_before:
                    log.error("poll of %s failed: %r", name, exc, exc_info=exc)
                failed_before = True
                continue
            failed_before = False
            pacer.observed({h: r.state for h, r in results.items()})
            for run in runs:
                assert run.handle is not None
                result = results.get(run.handle)
                if result is None:
                    continue
                if result.events:
                    self._report_events(name, run, result.events)
                verdict = self._verdict(source, result)
                if verdict.next is Next.FINISHED:
                    await self._complete(name, run, verdict)
                elif verdict.next is Next.LOST:
                    self._lose(name, run, verdict)
                elif verdict.next is Next.NOT_STARTED:
                    self._not_started(name, run, verdict)
                elif self._ended(source, run, result):
                    self._free_slot(name, run)

    async def _resolve_orphans(self, name: str) -> None:
        """The host of lost attempts is reachable again. An attempt that still runs (or
        finished) is reattached if its task waits in the queue; if the task was started
        again elsewhere (or is done), a running one is stopped. So no task runs twice."""
        async with self._orphans_lock:  # the poller and the end of the run both call this
            await self._resolve_orphans_of(name)

    async def _resolve_orphans_of(self, name: str) -> None:
        source, orphans = self.sources[name], self.orphans[name]
        if not orphans:
            return
        try:
            results = await source.poll(handles=[r.handle for r in orphans if r.handle])
        except Exception as exc:  # noqa: BLE001 - asked again on the next round
            log.warning("could not check the lost tasks on %s: %s", name, exc)
            return
        stop: list[Running] = []
        stopping = self._interrupted or self._cancelled or bool(self._aborted)
        for run in list(orphans):
            result = results.get(run.handle) if run.handle else None
            if run.handle is None or result is None:
                continue
            verdict = self._verdict(source, result)
            if verdict.next is Next.UNKNOWN:
                continue
            number, slots = run.attempt.number, self.free_slots[name]
            alive = verdict.next in (Next.RUNNING, Next.STARTING)
            if (
                (alive or verdict.next is Next.FINISHED)
                and not stopping
                and number in self.pending
                and slots
            ):
                slot = run.attempt.slot if run.attempt.slot in slots else slots[-1]
                # It was not lost after all: the same attempt runs again, if it is still
                # the task's current one.
                attempt = self.store.revive_attempt(run.attempt, slot=slot)
                if attempt is not None:
                    self.pending.remove(number)
                    slots.remove(slot)
                    # (found again, as a reattach is: a stop it shows came from an earlier
                    # controller, not from this one)
                    self.running[name][attempt.id] = Running(attempt, run.handle, reattached=True)
                    self._count(TaskStatus.PENDING, TaskStatus.RUNNING)
                    log.warning(
                        "task %d (attempt %d) %s on %s, which is back: reattached",
                        number,
                        attempt.attempt,
                        "still runs" if alive else "has ended",
                        name,
                    )
                    orphans.remove(run)
                    continue
            if alive:
                stop.append(run)
                continue
            if verdict.next is Next.FINISHED:  # superseded: recorded, never the result
                outcome = verdict.cause.value if verdict.cause else "ended"
                self.store.record_outcome(run.attempt, outcome)
                log.warning(
                    "task %d: its old attempt %d on %s ended (%s) after it had been"
                    " started again; its results are not used",
                    number,
                    run.attempt.attempt,
                    name,
                    outcome,
                )
            orphans.remove(run)
        if stop:
            try:
                await source.cancel(handles=[r.handle for r in stop if r.handle])
            except Exception as exc:  # noqa: BLE001 - tried again on the next round
                log.warning("could not stop old attempts on %s: %s", name, exc)
                return
            for run in stop:
                orphans.remove(run)
                log.warning(
                    "task %d had been started again elsewhere: stopped its old attempt %d on %s",
                    run.attempt.number,
                    run.attempt.attempt,
                    name,
                )
        source.wake.set()

    @staticmethod
    def _verdict(source: Source, result: PollResult) -> Verdict:
        """The attempt's next state, decided from the facts the backend reported (the one
        place that decides)."""
        return lifecycle.decide(
            result.facts, lost_after=source.lost_after, host=source.host_label()
        )

    def _lose(self, name: str, run: Running, verdict: Verdict) -> None:
        log.warning("task %d lost on %s: %s", run.attempt.number, name, verdict.detail)
        self._settle(name, run, verdict.cause or Cause.LOST, None)
        if not self.sources[name].reachable:
            self.orphans[name].append(run)

    def _not_started(self, name: str, run: Running, verdict: Verdict) -> None:
        """Recorded but proven never started (e.g. the controller died mid-launch): the row
        stays, marked so; the task goes back to the front of the queue, no try used."""
        log.info(
            "task %d (attempt %d) never started on %s (%s); it goes back to the queue",
            run.attempt.number,
            run.attempt.attempt,
            name,
            verdict.detail,
        )
        self.store.finish_attempt(
            run.attempt,
            state=AttemptState.NOT_STARTED,
            cause=None,
            exit_code=None,
            task_status=TaskStatus.PENDING,
            counted=False,
        )
        self._release(name, run)
        self.pending.appendleft(run.attempt.number)
        self._count(TaskStatus.RUNNING, TaskStatus.PENDING)

    async def _complete(self, name: str, run: Running, verdict: Verdict) -> None:
        source = self.sources[name]
        handle = run.handle
        assert handle is not None
        attempt = run.attempt
        final = Path(self.ctx.sweep_dir, "tasks", task_folder_name(attempt.number))
        if not run.collect.ready():
            return
        try:
            if source.capabilities.remote:
                await source.collect(ctx=self.ctx, handle=handle)
                staged = fence.incoming_dir(self.ctx.sweep_dir, name) / final.name
                placed = fence.accept(staged, final, attempt.attempt, attempt.nonce)
            else:
                placed = fence.verify(final, attempt.attempt, attempt.nonce)
        except Exception as exc:  # noqa: BLE001 - results stay on the host; retried later
            if give_up_collecting(run.collect, attempt.number, name, handle.task_dir, exc):
                self._settle(name, run, Cause.COLLECT_FAILED, None)
            return
        if not placed:
            self._lose(
                name,
                run,
                Verdict(Next.LOST, Cause.LOST, "its folder holds no final status of this attempt"),
            )
            return
        status = read_status(final)
        self._report_events(name, run, read_events(final, attempt.attempt))
        self._settle(
            name,
            run,
            verdict.cause or Cause.TASK_FAILED,
            status.exit_code if status is not None else None,
        )

    @staticmethod
    def _report_events(name: str, run: Running, lines: Sequence[str]) -> None:
        """Log the attempt's event lines (e.g. low-disk warnings) not logged yet."""
        for line in lines[run.events_seen :]:
            log.log(event_level(line), "%s [task %d on %s]", line, run.attempt.number, name)
        run.events_seen = max(run.events_seen, len(lines))

    def _settle(self, name: str, run: Running, cause: Cause, exit_code: int | None) -> None:
        """Record the end of an attempt and decide what happens to its task."""
        attempt = run.attempt
        verify = cause in TASK_LEVEL_CAUSES and self._can_verify(name, attempt.number)
        # Tries used before this one: attempts that never started or were cancelled use none.
        tries = 0 if cause is Cause.COMPLETED else self.store.tries(self.sweep_id, attempt.number)
        verdict = judge_attempt(
            cause,
            attempt=tries + 1,
            max_retries=self.options.max_retries,
            retry_task_failures=verify,
        )
        if (
            cause is Cause.DISK_PRECHECK
            and not self._aborted
            and not any(n != name and self._open_to_work(n) for n in self.sources)
        ):
            # Refused for a full disk, and no other source to go to: stop with one clear
            # message instead of refusing task after task; the task has not run.
            self._aborted = self._disk_full_message(name, attempt.number)
            task_status = TaskStatus.PENDING
        elif (self._interrupted or self._aborted) and cause is Cause.CANCELLED:
            task_status = TaskStatus.PENDING  # Ctrl-C: resume runs it again
        elif cause is Cause.CANCELLED and run.reattached and not self._cancelled:
            # Stopped by an earlier controller's Ctrl-C, which died before recording it:
            # this resume runs it again, as it would have.
            task_status = TaskStatus.PENDING
            self.pending.appendleft(attempt.number)
        else:
            task_status = verdict.task_status
        # A lost attempt is the host's silence, and a task refused by the disk pre-check a
        # full disk: the health checks judge those. Neither is a job failure, and neither
        # counts toward the failure rate.
        counted: bool | None = None
        if cause in (Cause.CANCELLED, Cause.LOST, Cause.DISK_PRECHECK):
            counted = False
        elif cause in INFRASTRUCTURE_CAUSES:
            counted = True
        self.store.finish_attempt(
            attempt,
            state=verdict.attempt_state,
            cause=cause,
            exit_code=exit_code,
            task_status=task_status,
            counted=counted,
        )
        self._release(name, run)
        self._count(TaskStatus.RUNNING, task_status)
        if verdict.attempt_state in (AttemptState.FAILED, AttemptState.LOST):
            self.avoid.setdefault(attempt.number, set()).add(name)
        home = home_source(cause, name)
        if home is not None:
            self.home[attempt.number] = home
        else:
            self.home.pop(attempt.number, None)
        if verdict.retry and not (self._interrupted or self._cancelled or self._aborted):
            self.pending.appendleft(attempt.number)  # retried work goes first
            log.warning(
                "task %d failed on %s (%s); retrying (try %d of at most %d)",
                attempt.number,
                name,
                cause.value,
                tries + 2,
                self.options.max_retries + 1,
            )
        elif task_status is TaskStatus.COMPLETED:
            log.debug("task %d completed on %s", attempt.number, name)
        elif task_status is TaskStatus.FAILED:
            log.error(
                "%s",
                failed_task_message(
                    attempt.number,
                    name,
                    cause.value,
                    exit_code,
                    Path(
                        self.ctx.sweep_dir, "tasks", task_folder_name(attempt.number), "stderr.log"
                    ),
                ),
            )
        if cause is not Cause.CANCELLED:
            self.monitor.after_attempt(name, attempt.number, attempt.attempt, cause)
        self.wake.set()

    def _disk_full_message(self, name: str, number: int) -> str:
        """One clear message for a task refused by the disk pre-check where no other source
        can take it: what is free, what is needed, and the keys."""
        info = Path(self.ctx.sweep_dir, "tasks", task_folder_name(number), TASK_INFO)
        seen = ""
        with contextlib.suppress(OSError):
            checks = re.findall(
                r"Disk space check for (.*) at .*:\n\s+Available: ([^\n]*)\n"
                r"Disk space check FAILED",
                info.read_text(errors="replace"),
            )
            seen = "; ".join(f"{path} has {free}" for path, free in checks)
        guard = self.ctx.guard
        return (
            f"the disk of {name} is too full to start tasks"
            f"{': ' + seen if seen else ''}. A task needs disk.project_min_free:"
            f" {guard.project_min_free / 1e9:g}GB free in the project folder and"
            f" disk.task_min_free: {guard.task_min_free / 1e9:g}GB in its task folder"
            f" ({info}). Free some space, or lower those keys in"
            f" hsm_config.yaml, then continue with: hsm resume {self.sweep_id}"
        )

    def _can_verify(self, name: str, number: int) -> bool:
        """Whether a task failure can be retried on another source to learn whose fault it
        is (the failsafe's rule: a failure counts against a source only if the task
        succeeds elsewhere)."""
        if not self.options.failsafe.enabled:
            return False
        tried = self.avoid.get(number, set()) | {name}
        return any(n not in tried and self.monitor.state[n].enabled for n in self.sources)

    @staticmethod
    def _ended(source: Source, run: Running, result: PollResult) -> bool:
        """Whether the attempt's wrapper has recorded its end while its results are still
        on the way (e.g. being pulled from a host). Not for batch schedulers, whose job may
        still hold its allocation."""
        status = result.status
        return (
            not source.capabilities.queue
            and status is not None
            and status.terminal
            and status.belongs_to(run.attempt.attempt, run.attempt.nonce)
        )

    def _free_slot(self, name: str, run: Running) -> None:
        """Give the attempt's slot back (once). Called as soon as its task is over, so that
        the next task starts before the results of this one are collected and recorded."""
        if run.ended:
            return
        run.ended = True
        if run.attempt.slot is not None and run.attempt.slot < self.sources[name].slots:
            self.free_slots[name].append(run.attempt.slot)
        self.wake.set()

    def _release(self, name: str, run: Running) -> None:
        self.running[name].pop(run.attempt.id, None)
        self._free_slot(name, run)

    # -- counts and progress -------------------------------------------------------------
    def _count(self, old: TaskStatus, new: TaskStatus) -> None:
        self.counts[old] = self.counts.get(old, 0) - 1
        self.counts[new] = self.counts.get(new, 0) + 1
        self._progress()

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(dict(self.counts))

    # -- cancel and interrupt ------------------------------------------------------------
    async def _watch_cancel(self) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(CANCEL_CHECK_INTERVAL)
            if self.store.cancel_requested(self.sweep_id):
                log.warning("cancel requested: stopping every running task")
                self._cancelled = True
                self.wake.set()
                return

    async def _stop_running(self) -> None:
        """Cancel every running attempt and wait (bounded) for the wrappers to confirm."""
        self.pending.clear()  # on Ctrl-C the tasks that never started stay pending
        by_source = {
            n: [r.handle for r in runs.values() if r.handle] for n, runs in self.running.items()
        }
        await asyncio.gather(
            *(self.sources[n].cancel(handles=h) for n, h in by_source.items() if h),
            return_exceptions=True,
        )
        deadline = clock.monotonic() + CANCEL_GRACE
        while any(self.running.values()) and clock.monotonic() < deadline:
            self._raise_fatal()
            for name in self.sources:
                self.sources[name].wake.set()
            await asyncio.sleep(0.2)
        for name, runs in self.running.items():
            for run in list(runs.values()):
                # Its stop was not confirmed (still launching, or its host does not
                # answer): it stays on record as it is, and a resume checks it on its host.
                log.warning(
                    "task %d (attempt %d) on %s: its stop was not confirmed; it stays"
                    " on record, and hsm resume %s checks it",
                    run.attempt.number,
                    run.attempt.attempt,
                    name,
                    self.sweep_id,
                )
        if self._cancelled:
            self.store.cancel_pending(self.sweep_id)

    # -- the end -------------------------------------------------------------------------
    def _raise_fatal(self) -> None:
        if self._fatal is not None:
            raise self._fatal

    async def _finish(self) -> RunOutcome:
        self._raise_fatal()
        for name, source in self.sources.items():  # old runs on hosts that are back: stop
            if self.orphans[name] and source.reachable:
                await self._resolve_orphans(name)
        counts = self.store.task_counts(self.sweep_id)
        self.counts = counts
        self._progress()
        if self._aborted:
            state, code, message = SweepState.ABORTED, ExitCode.ABORTED, self._aborted
        elif self._cancelled:
            state, code, message = SweepState.CANCELLED, ExitCode.INTERRUPTED, "sweep cancelled"
        elif self._interrupted:
            state, code = SweepState.CANCELLED, ExitCode.INTERRUPTED
            message = f"interrupted; continue with: hsm resume {self.sweep_id}"
        elif counts[TaskStatus.FAILED]:
            state, code = SweepState.FAILED, ExitCode.TASKS_FAILED
            message = failed_message(self.store, self.sweep_id, counts[TaskStatus.FAILED])
        else:
            state, code, message = SweepState.COMPLETED, ExitCode.OK, None
        self.store.set_sweep_state(self.sweep_id, state, abort_reason=message)
        all_completed = counts[TaskStatus.COMPLETED] == sum(counts.values())
        await asyncio.gather(
            *(s.finish(ctx=self.ctx, all_completed=all_completed) for s in self.sources.values()),
            return_exceptions=True,
        )
        return RunOutcome(self.sweep_id, state, code, message)
