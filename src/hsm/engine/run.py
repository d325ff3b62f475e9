"""The run loop: one asyncio loop per sweep. Dispatch, polling, collection, retries."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from hsm.backoff import Backoff
from hsm.engine.collect import collect_backoff, give_up_collecting
from hsm.engine.failsafe import TASK_LEVEL_CAUSES, FailsafeConfig
from hsm.engine.monitor import SourceMonitor
from hsm.engine.pacing import poll_pacer
from hsm.engine.policy import judge_attempt
from hsm.engine.strategy import make_strategy, views
from hsm.errors import ConfigError, ExitCode, HsmError, SourceUnavailableError
from hsm.jobscript import read_events
from hsm.sources.base import (
    JobHandle,
    LaunchRequest,
    PollResult,
    PollState,
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


ProgressFn = Callable[[dict[TaskStatus, int]], None]


class Engine:
    """Runs (or resumes) one sweep to its end."""

    def __init__(self, *, store: Store, sweep_id: str, ctx: SweepContext,
                 sources: Mapping[str, Source], options: EngineOptions,
                 on_progress: ProgressFn | None = None) -> None:
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
        self.running: dict[str, dict[int, Running]] = {n: {} for n in self.sources}
        self.free_slots: dict[str, list[int]] = {}
        self.counts: dict[TaskStatus, int] = {}
        self.wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._interrupted = False
        self._cancelled = False
        self._aborted: str | None = None
        self.monitor = SourceMonitor(
            store=store, sweep_id=sweep_id, sources=self.sources, health=options.health,
            failsafe=options.failsafe, interval=options.health_interval,
            running=lambda name: len(self.running.get(name, ())))
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
            await asyncio.gather(*(s.close() for s in self.sources.values()),
                                 return_exceptions=True)

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("internal error in the run loop: %r", exc, exc_info=exc)
            # Stop here, without stopping the tasks (they go on, and resume reattaches
            # them), and never report the sweep as completed.
            self._aborted = self._aborted or (
                f"internal error in the run loop: {exc!r}; the running tasks go on;"
                f" continue with: hsm resume {self.sweep_id}")
            self._stop.set()
            self.wake.set()

    def _on_signal(self) -> None:
        if not self._interrupted:
            log.warning("interrupted: stopping running tasks (Ctrl-C again is not needed)")
        self._interrupted = True
        self.wake.set()

    async def _prepare(self) -> None:
        async def one(source: Source) -> None:
            try:
                await source.prepare(ctx=self.ctx)
            except HsmError:
                raise
            except Exception as exc:  # noqa: BLE001 - any backend failure is reported
                raise SourceUnavailableError(
                    f"source {source.name!r} could not be prepared: {exc}") from None

        await asyncio.gather(*(one(s) for s in self.sources.values()))
        per_task = self.ctx.gpus_per_task
        for source in self.sources.values():
            source.configure_gpus(per_task)
            if per_task and source.gpus and source.slots == 0:
                raise ConfigError(
                    f"resources.gpus: each task asks for {per_task} GPU(s), but source"
                    f" {source.name!r} allows only {len(source.gpus)}")
        for name, source in self.sources.items():
            self.free_slots[name] = list(range(source.slots - 1, -1, -1))

    def _load_tasks(self) -> None:
        self.pending.extend(self.store.pending_numbers(self.sweep_id))
        self.counts = self.store.task_counts(self.sweep_id)
        self._cancelled = self.store.cancel_requested(self.sweep_id)
        self._progress()

    def _reattach(self) -> None:
        """Pick up attempts that were running when a previous controller died."""
        for attempt in self.store.attempts(self.sweep_id, active_only=True):
            source = self.sources.get(attempt.source)
            if source is None:
                log.warning("task %d was running on %s, which is not part of this run;"
                            " it is left alone", attempt.number, attempt.source)
                continue
            handle = (JobHandle.from_json(attempt.handle) if attempt.handle else
                      JobHandle(source=source.name, number=attempt.number,
                                attempt=attempt.attempt,
                                task_dir=source.task_dir(self.ctx, attempt.number)))
            slots = self.free_slots[source.name]
            if attempt.slot in slots:
                slots.remove(attempt.slot)
            elif slots:
                slots.pop()
            self.running[source.name][attempt.id] = Running(attempt, handle)
            log.info("reattached task %d (attempt %d) on %s", attempt.number, attempt.attempt,
                     source.name)
        # The last lost attempt of each task on each source may still be running there.
        lost = {(a.number, a.source): a for a in self.store.attempts(self.sweep_id)
                if a.state is AttemptState.LOST and a.handle and a.source in self.sources}
        for attempt in lost.values():
            assert attempt.handle is not None
            self.orphans[attempt.source].append(
                Running(attempt, JobHandle.from_json(attempt.handle)))
            self.sources[attempt.source].wake.set()

    # -- the main loop -------------------------------------------------------------------
    async def _main_loop(self) -> None:
        while not self._stop.is_set():
            self.monitor.refresh()
            self._check_abort()
            if self._interrupted or self._cancelled or self._aborted:
                await self._stop_running()
                return
            self._dispatch()
            if not self.pending and not any(self.running.values()):
                return
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=1.0)

    def usable(self, name: str) -> bool:
        """Whether a source may take new tasks now (enabled, healthy)."""
        return self.monitor.usable(name)

    def _check_abort(self) -> None:
        """Stop early when the script fails everywhere, or no usable source is left."""
        if self._aborted:
            return
        if self.monitor.broken_script():
            self._aborted = self._broken_script_message()
            return
        if not self.pending or any(self.running.values()):
            return
        if any(self._recoverable(n) for n in self.sources):
            return
        self._aborted = (
            f"no usable source is left: {self.monitor.describe_unusable()}. Re-enable a "
            f"source with: hsm distributed enable NAME (after fixing it), then continue with: "
            f"hsm resume {self.sweep_id}")

    def _recoverable(self, name: str) -> bool:
        st = self.monitor.state[name]
        if not st.enabled:
            return False
        v = st.verdict
        return v is None or v.passed or st.consecutive < self.options.failsafe.health_failures

    def _broken_script_message(self) -> str:
        first = self.store.first_failed_attempt(self.sweep_id, [c.value for c in
                                                                TASK_LEVEL_CAUSES])
        tail = ""
        if first is not None:
            log_path = Path(self.ctx.sweep_dir, "tasks", task_folder_name(first.number),
                            "stderr.log")
            try:
                lines = log_path.read_text(errors="replace").splitlines()[-10:]
            except OSError:
                lines = []
            tail = (f"\nThe first failure (task {first.number} on {first.source}, exit code "
                    f"{first.exit_code}) ended with, in {log_path}:\n" + "\n".join(
                        f"  {line}" for line in lines))
        return (f"the script itself fails: every task failed on every source and none "
                f"completed, so the sources are not to blame. Fix the script, then continue "
                f"with: hsm resume {self.sweep_id} --retry-failed{tail}")

    def _open_to_work(self, name: str) -> bool:
        return (self.usable(name) and self.sources[name].reachable
                and not self.orphans[name])

    def _dispatch(self) -> None:
        batches: dict[str, list[LaunchRequest]] = {}
        held: list[int] = []  # retries waiting for a slot on a source they did not fail on
        while self.pending:
            busy = {n: s.slots - len(self.free_slots[n]) for n, s in self.sources.items()}
            candidates = [v for v in views({n: s.slots for n, s in self.sources.items()}, busy)
                          if self.free_slots[v.name] and self._open_to_work(v.name)]
            if not candidates:
                break
            number = self.pending.popleft()
            avoid = self.avoid.get(number, set())
            fresh = [c for c in candidates if c.name not in avoid]
            if avoid and not fresh and any(n not in avoid and self._open_to_work(n)
                                           for n in self.sources):
                held.append(number)  # a source it has not failed on will free a slot
                continue
            choice = self.strategy.pick(fresh or candidates, self.order)
            slot = self.free_slots[choice.name].pop()
            attempt = self.store.begin_attempt(self.sweep_id, number, source=choice.name,
                                               slot=slot)
            self.running[choice.name][attempt.id] = Running(attempt)
            self._count(TaskStatus.PENDING, TaskStatus.RUNNING)
            params = self.store.task(self.sweep_id, number).params
            batches.setdefault(choice.name, []).append(
                LaunchRequest(number=number, attempt=attempt.attempt, params=params, slot=slot,
                              attempt_id=attempt.id))
        self.pending.extendleft(reversed(held))
        for name, requests in batches.items():
            self._spawn(self._launch(name, requests))

    async def _launch(self, name: str, requests: list[LaunchRequest]) -> None:
        source = self.sources[name]
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
            self.store.attempt_launched(req.attempt_id, handle.to_json(), handle.host)
            run.handle = handle
            run.attempt = replace(run.attempt, state=AttemptState.RUNNING)
            log.debug("task %d started on %s (attempt %d)", req.number, name, req.attempt)
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
                if result.state in (PollState.FINISHED, PollState.LOST):
                    await self._complete(name, run, result)
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
            if run.handle is None or result is None or result.state is PollState.UNKNOWN:
                continue
            number, slots = run.attempt.number, self.free_slots[name]
            if (result.state in (PollState.RUNNING, PollState.FINISHED) and not stopping
                    and number in self.pending and slots):
                self.pending.remove(number)
                slot = run.attempt.slot if run.attempt.slot in slots else slots[-1]
                slots.remove(slot)
                # It was not lost after all: record it as the attempt that runs.
                attempt = self.store.reattach_attempt(run.attempt, slot=slot,
                                                      handle=run.handle.to_json(),
                                                      host=run.handle.host)
                self.running[name][attempt.id] = Running(attempt, run.handle)
                self._count(TaskStatus.PENDING, TaskStatus.RUNNING)
                log.warning("task %d (attempt %d) still runs on %s, which is back: reattached",
                            number, run.handle.attempt, name)
            elif result.state is PollState.RUNNING:
                stop.append(run)
                continue
            orphans.remove(run)
        if stop:
            try:
                await source.cancel(handles=[r.handle for r in stop if r.handle])
            except Exception as exc:  # noqa: BLE001 - tried again on the next round
                log.warning("could not stop old attempts on %s: %s", name, exc)
                return
            for run in stop:
                orphans.remove(run)
                log.warning("task %d had been started again elsewhere: stopped its old attempt"
                            " %d on %s", run.attempt.number, run.attempt.attempt, name)
        source.wake.set()

    async def _complete(self, name: str, run: Running, result: PollResult) -> None:
        source = self.sources[name]
        handle = run.handle
        assert handle is not None
        if result.state is PollState.LOST:
            if (run.attempt.state is AttemptState.LAUNCHING and result.status is None
                    and result.scheduler_cause is None):
                # Recorded but never started (the controller died mid-launch).
                self.store.discard_attempt(run.attempt)
                self._release(name, run)
                self.pending.appendleft(run.attempt.number)
                self._count(TaskStatus.RUNNING, TaskStatus.PENDING)
                return
            # A scheduler may end an attempt before its wrapper could record it (e.g. a
            # timeout or a node failure): its cause then comes from the scheduler.
            lost_cause = Cause(result.scheduler_cause) if result.scheduler_cause else Cause.LOST
            log.warning("task %d lost on %s: %s", run.attempt.number, name, result.detail)
            self._settle(name, run, lost_cause, None)
            if not source.reachable:
                self.orphans[name].append(run)
            return
        status = result.status
        assert status is not None
        if not run.collect.ready():
            return
        try:
            await source.collect(ctx=self.ctx, handle=handle)
        except Exception as exc:  # noqa: BLE001 - results stay on the host; retried later
            if give_up_collecting(run.collect, run.attempt.number, name, handle.task_dir, exc):
                self._settle(name, run, Cause.COLLECT_FAILED, status.exit_code)
            return
        local_dir = Path(self.ctx.sweep_dir, "tasks", Path(handle.task_dir).name)
        self._report_events(name, run, read_events(local_dir, run.attempt.attempt))
        cause = Cause(result.scheduler_cause or (status.cause.value if status.cause else
                                                 Cause.TASK_FAILED.value))
        self._settle(name, run, cause, status.exit_code)

    @staticmethod
    def _report_events(name: str, run: Running, lines: Sequence[str]) -> None:
        """Log the attempt's event lines (e.g. low-disk warnings) not logged yet."""
        for line in lines[run.events_seen:]:
            log.warning("%s [task %d on %s]", line, run.attempt.number, name)
        run.events_seen = max(run.events_seen, len(lines))

    def _settle(self, name: str, run: Running, cause: Cause, exit_code: int | None) -> None:
        """Record the end of an attempt and decide what happens to its task."""
        attempt = run.attempt
        verify = cause in TASK_LEVEL_CAUSES and self._can_verify(name, attempt.number)
        verdict = judge_attempt(cause, attempt=attempt.attempt,
                                max_retries=self.options.max_retries,
                                retry_task_failures=verify)
        if (self._interrupted or self._aborted) and cause is Cause.CANCELLED:
            task_status = TaskStatus.PENDING  # Ctrl-C: resume runs it again
        else:
            task_status = verdict.task_status
        counted: bool | None = None
        if cause in INFRASTRUCTURE_CAUSES:
            counted = True
        elif cause is Cause.CANCELLED:
            counted = False
        self.store.finish_attempt(attempt, state=verdict.attempt_state, cause=cause,
                                  exit_code=exit_code, task_status=task_status,
                                  counted=counted)
        self._release(name, run)
        self._count(TaskStatus.RUNNING, task_status)
        if verdict.retry and not (self._interrupted or self._cancelled or self._aborted):
            self.avoid.setdefault(attempt.number, set()).add(name)
            self.pending.append(attempt.number)
            log.warning("task %d failed on %s (%s); retrying (attempt %d of at most %d)",
                        attempt.number, name, cause.value, attempt.attempt + 1,
                        self.options.max_retries + 1)
        elif task_status is TaskStatus.COMPLETED:
            log.debug("task %d completed on %s", attempt.number, name)
        elif task_status is TaskStatus.FAILED:
            log.error("task %d failed on %s: %s (exit code %s)", attempt.number, name,
                      cause.value, exit_code)
        if cause is not Cause.CANCELLED:
            self.monitor.after_attempt(name, attempt.number, attempt.attempt, cause)
        self.wake.set()

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
        return (not source.capabilities.queue and status is not None
                and status.terminal and status.attempt == run.attempt.attempt)

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
        by_source = {n: [r.handle for r in runs.values() if r.handle] for n, runs in
                     self.running.items()}
        await asyncio.gather(*(self.sources[n].cancel(handles=h) for n, h in by_source.items()
                               if h), return_exceptions=True)
        deadline = time.monotonic() + CANCEL_GRACE
        while any(self.running.values()) and time.monotonic() < deadline:
            for name in self.sources:
                self.sources[name].wake.set()
            await asyncio.sleep(0.2)
        for name, runs in self.running.items():
            for run in list(runs.values()):
                self._settle(name, run, Cause.CANCELLED, None)
        if self._cancelled:
            self.store.cancel_pending(self.sweep_id)

    # -- the end -------------------------------------------------------------------------
    async def _finish(self) -> RunOutcome:
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
            message = (f"{counts[TaskStatus.FAILED]} task(s) failed; rerun them with:"
                       f" hsm resume {self.sweep_id} --retry-failed")
        else:
            state, code, message = SweepState.COMPLETED, ExitCode.OK, None
        self.store.set_sweep_state(self.sweep_id, state, abort_reason=message)
        all_completed = counts[TaskStatus.COMPLETED] == sum(counts.values())
        await asyncio.gather(*(s.finish(ctx=self.ctx, all_completed=all_completed)
                               for s in self.sources.values()), return_exceptions=True)
        return RunOutcome(self.sweep_id, state, code, message)
