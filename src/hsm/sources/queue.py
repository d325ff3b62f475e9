"""What every batch-scheduler source shares: array jobs submitted in chunks, one batched status
query per poll, translation of the scheduler's states (once, through the scheduler's map), and
reattachment by job id. A scheduler (``slurm.py``, ``pbs.py``) is mostly data: its commands, its
job-id syntax, its directive prefix, its state map and its header.

Each array element runs the job wrapper (``bash wrapper.sh TASK_DIR``) in a task folder whose
spec was written before the submission, so the disk guard, the private temp folders,
``task_info.txt`` and ``status.json`` work as on every other source.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from hsm import clock
from hsm.backoff import Backoff, Sleep, retry
from hsm.engine.lifecycle import Facts, QueueFacts
from hsm.errors import ConfigError, HsmError, SourceUnavailableError, SubmissionError
from hsm.jobscript import STATUS_FILE, encode_spec, parse_status
from hsm.sources.base import (
    Capabilities,
    HealthSample,
    JobHandle,
    LaunchRequest,
    PollResult,
    Source,
    SweepContext,
    summarize,
)
from hsm.sources.login import Login
from hsm.sources.probe import parse_queue_probe, queue_probe_script
from hsm.sources.process import CommandResult
from hsm.sources.scheduler import (
    ArraySpec,
    ClusterSettings,
    Element,
    JobOptions,
    Scheduler,
)
from hsm.spec.sweep import Resources
from hsm.states import TERMINAL_ELEMENT, ElementState

log = logging.getLogger(__name__)

QUEUE_DEPTH = 10_000  # tasks a cluster may hold at once (queued or running)
CANCEL_TRIES = 3  # a cancel that fails is tried again after 1 s, then 2 s
STOP_WAIT = 5.0  # seconds a cancel waits for signalled wrappers to record their end
SUBMIT_MAGIC = "hsm-submit-1"
T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> list[list[T]]:
    """Split ``items`` into consecutive chunks of at most ``size`` (one array job each)."""
    if size < 1:
        raise ValueError("a chunk holds at least one element")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


SECTIONS_EVERY = 600.0  # seconds between two asks for the scheduler's health sections
SUBMIT_TRIES = 3  # a submission the scheduler could not take now: tried again after 1 s, 2 s
# What a submit command says when the scheduler could not take a job now (it may take it on a
# later try); anything else is a rejection.
_TRANSIENT = re.compile(
    r"socket timed out|unable to contact|temporarily unavailable|try again|connection refused"
    r"|cannot connect|server is busy|transport endpoint",
    re.IGNORECASE,
)


class _Transient(Exception):
    """A submission the scheduler did not take now, and may take on a later try."""


def job_name(sweep_id: str, attempt_id: int) -> str:
    """The job name of a submission: unique per sweep and first attempt; found again by it."""
    return f"hsm-{re.sub(r'[^A-Za-z0-9_.-]', '_', sweep_id)}-{attempt_id}"


@dataclass
class _Submission:
    name: str
    script: str  # path of the job script
    requests: list[LaunchRequest] = field(default_factory=list)


class QueueSource(Source):
    """A Slurm or PBS cluster: tasks become elements of throttled array jobs."""

    def __init__(
        self,
        name: str,
        *,
        scheduler: Scheduler,
        login: Login,
        settings: ClusterSettings,
        python: str,
        setup: Sequence[str],
        resources: Resources | None = None,
    ) -> None:
        super().__init__(name, slots=QUEUE_DEPTH, setup=setup, python=python)
        self.resources = resources  # the sweep's, when known before prepare (preflight)
        self.scheduler = scheduler
        self.login = login
        self.settings = settings
        self.transport = login.transport  # the health monitor reads its timeouts
        self.capabilities = Capabilities(remote=login.remote, queue=True)
        self.options = JobOptions()
        self._where = f"distributed.remotes.{name}"
        self._grace: dict[tuple[str, int], float] = {}
        self._resolved: dict[tuple[str, int], str | None] = {}
        self._cancelled: set[tuple[str, int]] = set()
        self._query_failed = False
        self.sleep: Sleep = asyncio.sleep  # the waits between retries (tests drive them)
        # During a sweep, the scheduler's own health sections (nodes, your queue: shown, not
        # judged) are asked for at most every SECTIONS_EVERY seconds; in between, the last
        # answer is shown again. The controller's answer is asked for at every check.
        self._in_sweep = False
        self._sections: tuple[float, dict[str, Any]] | None = None

    # -- paths ---------------------------------------------------------------------------
    def sweep_root(self, ctx: SweepContext) -> str:
        return self.login.sweep_root(ctx)

    def project_dir(self, ctx: SweepContext) -> str:
        return self.login.project_dir(ctx)

    def task_dir(self, ctx: SweepContext, number: int) -> str:
        return self.login.task_dir(ctx, number)

    def host_label(self) -> str:
        return self.login.label

    async def _run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float = 60.0
    ) -> CommandResult:
        return await self.login.run(argv, input=input, timeout=timeout)

    # -- before the sweep ----------------------------------------------------------------
    async def preflight(self) -> None:
        """Before anything is written: the login side, the scheduler's commands and its
        controller, and (when the sweep's resources are known) the job script itself."""
        await self.login.preflight()
        await self._check(self.resources or Resources())

    async def prepare(self, *, ctx: SweepContext) -> None:
        await self._check(ctx.resources)
        await self.login.prepare(ctx)
        self._in_sweep = True

    async def _check(self, res: Resources) -> None:
        sched = self.scheduler
        try:
            missing = await self.login.missing(sched.commands)
            if missing:
                raise SourceUnavailableError(
                    f"source {self.name!r}: {', '.join(missing)} not found on "
                    f"{self.login.label}. A {sched.name} source needs "
                    f"{', '.join(sched.commands)} on the PATH of the login node; check "
                    f"{self._where}.host and .type"
                )
            await sched.configure(self._run, self.name)
            self.options = JobOptions.merge(res, self.settings, self._where)
            sched.check_signal(self.options)
            try:  # a line of another scheduler is an error before anything starts
                sched.directives(self.options)
            except ConfigError as exc:
                raise ConfigError(f"{self._where}.{exc.message}") from None
            await self._test_submission()
        except TimeoutError:
            raise SourceUnavailableError(
                f"source {self.name!r}: the {sched.name} commands on {self.login.label} did "
                "not answer in time; is the scheduler's controller up?"
            ) from None
        except OSError as exc:
            raise SourceUnavailableError(f"source {self.name!r}: {exc}") from None

    @property
    def chunk_size(self) -> int:
        return self.settings.max_array_size or self.scheduler.max_array_size

    @property
    def throttle(self) -> int | None:
        return self.settings.throttle

    async def _test_submission(self) -> None:
        argv = self.scheduler.test_argv()
        if argv is None:
            return
        array = ArraySpec("hsm-check", min(2, self.chunk_size), self.throttle)
        script = self.scheduler.render(
            self.options,
            array,
            root="/nonexistent",
            wrapper="/nonexistent",
            tasks=["x"] * array.size,
        )
        result = await self._run(argv, input=script.encode())
        if result.returncode != 0:
            raise SubmissionError(
                f"source {self.name!r}: the {self.scheduler.name} cluster rejected the job "
                f"script ({shlex.join(argv)}, exit {result.returncode}): "
                f"{_tail(result)}. Fix the resources in the sweep's resources: or in "
                f"{self._where}"
            )

    # -- launch --------------------------------------------------------------------------
    async def launch(
        self, *, ctx: SweepContext, requests: Sequence[LaunchRequest]
    ) -> list[JobHandle | Exception]:
        if not requests:
            return []
        root = self.sweep_root(ctx)
        files: dict[str, bytes] = {}
        plans: list[_Submission] = []
        for chunk in chunks(requests, self.chunk_size):
            name = job_name(ctx.sweep_id, chunk[0].attempt_id)
            plan = _Submission(name, f"{root}/.hsm/jobs/{name}.sh", chunk)
            rels = [self._rel(root, self.task_dir(ctx, r.number)) for r in chunk]
            array = ArraySpec(name, len(chunk), self.throttle)
            script = self.scheduler.render(
                self.options, array, root=root, wrapper=self.login.wrapper_path(ctx), tasks=rels
            )
            files[f".hsm/jobs/{name}.sh"] = script.encode()
            for index, (req, rel) in enumerate(zip(chunk, rels, strict=True), start=1):
                files[f"{rel}/.hsm/spec"] = encode_spec(self.task_spec(ctx, req))
                files[f"{rel}/.hsm/submit"] = (
                    f"{SUBMIT_MAGIC}\n{name}\n{index}\n{len(chunk)}\n{req.attempt}\n".encode()
                )
            plans.append(plan)
        await self.login.write(root, files)
        handles: list[JobHandle | Exception] = []
        submitted: list[str] = []
        for plan in plans:
            array = ArraySpec(plan.name, len(plan.requests), self.throttle)
            # Chunks run one after the other, so the throttle holds for the whole batch.
            after = submitted[-1] if submitted and self.scheduler.chain_chunks else None
            try:
                array_id = await self._submit(plan.script, array, after)
            except Exception as exc:  # noqa: BLE001 - this chunk did not start; others did
                if not submitted:
                    raise
                handles += [exc] * len(plan.requests)
                continue
            submitted.append(array_id)
            for index, req in enumerate(plan.requests, start=1):
                handles.append(
                    JobHandle(
                        source=self.name,
                        number=req.number,
                        attempt=req.attempt,
                        task_dir=self.task_dir(ctx, req.number),
                        host=self.login.label,
                        job_id=self.scheduler.element_id(array_id, index, array.size),
                        nonce=req.nonce,
                    )
                )
        log.info(
            "source %s: submitted %d task(s) as %s", self.name, len(requests), ", ".join(submitted)
        )
        return handles

    def checkpoint_signal(self) -> str | None:
        return self.options.signal

    def preview_script(self, ctx: SweepContext, numbers: Sequence[int]) -> str:
        """The job script of the first array a launch of ``numbers`` would submit, rendered
        offline (for ``--dry-run``: nothing is asked of the cluster)."""
        root = self.sweep_root(ctx)
        chunk = list(numbers[: self.chunk_size])
        array = ArraySpec(job_name(ctx.sweep_id, 1), len(chunk), self.throttle)
        options = JobOptions.merge(ctx.resources, self.settings, self._where)
        rels = [self._rel(root, self.task_dir(ctx, n)) for n in chunk]
        return self.scheduler.render(
            options, array, root=root, wrapper=self.login.wrapper_path(ctx), tasks=rels
        )

    @staticmethod
    def _rel(root: str, task_dir: str) -> str:
        if not task_dir.startswith(root + "/"):
            raise ValueError(f"task folder {task_dir} is not below {root}")
        return task_dir[len(root) + 1 :]

    async def _submit(self, script: str, array: ArraySpec, after: str | None) -> str:
        """Submit one array. A submission the scheduler could not take now (no answer in
        time, the controller busy or unreachable) is tried again, at most ``SUBMIT_TRIES``
        times with a backoff; before each new try the array is looked for by its name, since
        an unanswered submission may have been taken after all (it is never submitted twice).
        A rejection (a bad partition, say) is raised at once."""
        backoff = Backoff(tries=SUBMIT_TRIES)
        while True:
            try:
                return await self._submit_once(script, array, after)
            except _Transient as exc:
                found = (await self._find_arrays([array.name]) or {}).get(array.name)
                if found is not None:
                    log.info(
                        "source %s: %s was taken after all, as %s", self.name, array.name, found
                    )
                    return found
                if backoff.failed():
                    raise SubmissionError(
                        f"source {self.name!r}: {self.scheduler.name} did not take the "
                        f"submission after {SUBMIT_TRIES} tries: {exc}"
                    ) from None
                wait = backoff.delay()
                log.warning(
                    "source %s: submission not taken (%s); trying again in %.0f s",
                    self.name,
                    exc,
                    wait,
                )
                await self.sleep(wait)

    async def _submit_once(self, script: str, array: ArraySpec, after: str | None) -> str:
        argv = self.scheduler.submit_argv(script, array, after)
        try:
            result = await self._run(argv, timeout=120)
        except (TimeoutError, OSError, HsmError) as exc:  # no answer, or the login went away
            raise _Transient(f"{argv[0]}: {exc or 'no answer within 120 s'}") from None
        if result.returncode != 0:
            message = _tail(result)
            if _TRANSIENT.search(message):
                raise _Transient(f"{argv[0]}, exit {result.returncode}: {message}")
            raise SubmissionError(
                f"source {self.name!r}: {self.scheduler.name} rejected the "
                f"submission ({argv[0]}, exit {result.returncode}): {message}"
            )
        try:
            return self.scheduler.parse_submit(result.stdout)
        except ValueError:
            raise SubmissionError(
                f"source {self.name!r}: cannot read a job id in the output "
                f"of {argv[0]}: {result.stdout.strip()!r}"
            ) from None

    async def _find_arrays(self, names: Sequence[str]) -> dict[str, str] | None:
        """The array id of each job name the scheduler knows (None: it did not answer)."""
        try:
            result = await self._run(self.scheduler.find_argv(names))
        except (HsmError, OSError, TimeoutError):
            return None
        try:
            listed = self.scheduler.parse_status(result.stdout)
        except (ValueError, SyntaxError):
            return None
        return {e.name: self.scheduler.array_of(e.job_id) for e in listed if e.name in names}

    # -- poll ----------------------------------------------------------------------------
    async def poll(self, *, handles: Sequence[JobHandle]) -> dict[JobHandle, PollResult]:
        sched = self.scheduler
        job_ids = await self._job_ids(handles)
        records = await self._query([j for j in job_ids.values() if j])
        need = [
            h
            for h in handles
            if records is None or _needs_status(records.get(sched.canonical(job_ids[h] or "")))
        ]
        try:
            texts = await self.login.read([f"{h.task_dir}/{STATUS_FILE}" for h in need])
        except (HsmError, OSError, TimeoutError) as exc:
            log.debug("source %s: cannot read status files: %s", self.name, exc)
            texts = {}
        out: dict[JobHandle, PollResult] = {}
        now = clock.monotonic()
        for h in handles:
            status = parse_status(texts.get(f"{h.task_dir}/{STATUS_FILE}", ""))
            queue = self._facts(h, job_ids[h], records, now)
            facts = Facts(attempt=h.attempt, nonce=h.nonce, status=status, queue=queue)
            out[h] = PollResult(summarize(status, h.attempt), status, facts)
        return out

    def _facts(
        self, h: JobHandle, job_id: str | None, records: dict[str, Element] | None, now: float
    ) -> QueueFacts:
        """What the scheduler said of this attempt's element at this poll."""
        key = (h.task_dir, h.attempt)
        if records is None:
            return QueueFacts(answered=False)
        if not h.job_id and key not in self._resolved:
            return QueueFacts(found=False)
        element = records.get(self.scheduler.canonical(job_id)) if job_id else None
        state = element.state if element is not None else None
        blind = self.scheduler.blind and job_id is not None
        if (state is None and not blind) or state in TERMINAL_ELEMENT:
            self._grace.setdefault(key, now)  # the scheduler shows it ended: since when
        else:
            self._grace.pop(key, None)
        first = self._grace.get(key)
        return QueueFacts(
            state=state,
            raw=element.raw if element is not None else "",
            reason=element.reason if element is not None else "",
            blind=blind,
            cancelled=key in self._cancelled,
            ended_for=None if first is None else now - first,
            hint=f"; see {h.task_dir}/.hsm/job.log",
        )

    async def _query(self, job_ids: Sequence[str]) -> dict[str, Element] | None:
        """Every element of their arrays, in one status call (plus one history call for
        elements the live query no longer shows). None when the scheduler does not answer."""
        sched = self.scheduler
        arrays = sorted({sched.array_of(j) for j in job_ids})
        if not arrays:
            return {}
        try:
            result = await self._run(sched.status_argv(arrays), timeout=60)
        except (HsmError, OSError, TimeoutError) as exc:
            self._query_error(str(exc))
            return None
        if sched.status_failed(result):
            self._query_error(f"{shlex.join(result.argv[:2])}: {_tail(result)}")
            return None
        try:
            records = {e.job_id: e for e in sched.parse_status(result.stdout)}
        except (ValueError, SyntaxError) as exc:  # never read a garbled answer as "all gone"
            self._query_error(f"cannot parse the output of {result.argv[0]}: {exc}")
            return None
        if self._query_failed:
            log.info("source %s: %s answers again", self.name, self.scheduler.name)
            self._query_failed = False
        self.reachable = True
        gone = sorted({sched.array_of(j) for j in job_ids if sched.canonical(j) not in records})
        history = sched.history_argv(gone) if gone else None
        if history is not None:
            try:
                past = await self._run(history, timeout=60)
                for e in sched.parse_history(past.stdout):
                    records.setdefault(e.job_id, e)
            except (HsmError, OSError, TimeoutError) as exc:
                log.debug("source %s: no job history: %s", self.name, exc)
        return records

    def _query_error(self, reason: str) -> None:
        self.reachable = False  # no new tasks until it answers again
        if not self._query_failed:
            log.warning(
                "source %s: cannot ask %s for job states: %s",
                self.name,
                self.scheduler.name,
                reason,
            )
        self._query_failed = True

    async def _job_ids(self, handles: Sequence[JobHandle]) -> dict[JobHandle, str | None]:
        """Job ids of the handles; a handle a killed controller never stored (no job id)
        is found again through the submission marker in its task folder and the job name."""
        out: dict[JobHandle, str | None] = {h: h.job_id for h in handles}
        orphans = [
            h for h in handles if not h.job_id and (h.task_dir, h.attempt) not in self._resolved
        ]
        if orphans:
            await self._resolve(orphans)
        for h in handles:
            if not h.job_id:
                out[h] = self._resolved.get((h.task_dir, h.attempt))
        return out

    async def _resolve(self, orphans: Sequence[JobHandle]) -> None:
        if self.scheduler.blind:  # its status listing does not name array elements
            self._resolved.update({(h.task_dir, h.attempt): None for h in orphans})
            return
        paths = {h: f"{h.task_dir}/.hsm/submit" for h in orphans}
        try:
            texts = await self.login.read(list(paths.values()))
        except (HsmError, OSError, TimeoutError):
            return
        wanted: dict[JobHandle, tuple[str, int, int]] = {}
        for h, path in paths.items():
            fields = texts.get(path, "").split("\n")
            if (
                len(fields) >= 5
                and fields[0] == SUBMIT_MAGIC
                and fields[2].isdigit()
                and fields[3].isdigit()
                and fields[4] == str(h.attempt)
            ):
                wanted[h] = (fields[1], int(fields[2]), int(fields[3]))
            else:
                self._resolved[(h.task_dir, h.attempt)] = None  # never written: not submitted
        if not wanted:
            return
        found = await self._find_arrays(sorted({w[0] for w in wanted.values()}))
        if found is None:
            return
        for h, (name, index, size) in wanted.items():
            array_id = found.get(name)
            job_id = self.scheduler.element_id(array_id, index, size) if array_id else None
            self._resolved[(h.task_dir, h.attempt)] = job_id
            log.info(
                "source %s: task %d (attempt %d) %s",
                self.name,
                h.number,
                h.attempt,
                f"found again as job {job_id}" if job_id else "was never submitted",
            )

    # -- cancel, collect, finish ---------------------------------------------------------
    async def cancel(self, *, handles: Sequence[JobHandle]) -> None:
        self._cancelled.update((h.task_dir, h.attempt) for h in handles)
        job_ids = await self._job_ids(handles)
        await self._cancel_ids([j for j in job_ids.values() if j])

    async def _cancel_ids(self, job_ids: Sequence[str]) -> None:
        job_ids = list(dict.fromkeys(job_ids))
        if not job_ids:
            return
        running: list[str] = []
        if self.scheduler.signal_argv(job_ids) is not None:
            records = await self._query(job_ids) or {}
            running = [
                j
                for j in job_ids
                if (e := records.get(self.scheduler.canonical(j))) is not None
                and e.state is ElementState.RUNNING
            ]
        # Pending elements first, so that none starts while the running ones stop.
        await self._scheduler_cancel([j for j in job_ids if j not in running])
        if running:
            await self._stop_gently(running)
            await self._scheduler_cancel(running)

    async def _scheduler_cancel(self, job_ids: Sequence[str]) -> None:
        for part in chunks(job_ids, 500) if job_ids else []:
            argv = self.scheduler.cancel_argv(part)
            try:
                result = await retry(
                    functools.partial(self._run, argv, timeout=60),
                    backoff=Backoff(tries=CANCEL_TRIES),
                    sleep=self.sleep,
                    retry_on=(HsmError, OSError, TimeoutError),
                )
            except (HsmError, OSError, TimeoutError) as exc:
                log.warning(
                    "source %s: cancelling %d job(s) failed after %d tries: %s",
                    self.name,
                    len(part),
                    CANCEL_TRIES,
                    exc,
                )
                continue
            if result.returncode != 0:  # e.g. some had finished already
                log.debug("source %s: %s: %s", self.name, result.argv[0], _tail(result))

    async def _stop_gently(self, running: list[str]) -> None:
        """SIGTERM to the job wrappers of running elements only: each stops its task and
        records ``cancelled`` (a scheduler's cancel signals every process of the job at once,
        so a task could die before its wrapper noticed the cancel). Then wait, a little, for
        them to end; the scheduler's cancel that follows ends whatever is left."""
        sched = self.scheduler
        argv = sched.signal_argv(running)
        assert argv is not None
        with contextlib.suppress(HsmError, OSError, TimeoutError):
            await self._run(argv, timeout=60)
        deadline = time.monotonic() + STOP_WAIT
        while running and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            records = await self._query(running)
            if records is None:
                return
            running = [
                j
                for j in running
                if (e := records.get(sched.canonical(j))) is not None
                and e.state is ElementState.RUNNING
            ]

    async def collect(self, *, ctx: SweepContext, handle: JobHandle) -> None:
        await self.login.collect(ctx, handle)

    async def finish(self, *, ctx: SweepContext, all_completed: bool) -> None:
        await self.login.finish(ctx, all_completed)

    async def close(self) -> None:
        await self.login.close()

    # -- health --------------------------------------------------------------------------
    async def probe(self) -> HealthSample:
        now = clock.monotonic()
        last = self._sections
        sections = not self._in_sweep or last is None or now - last[0] >= SECTIONS_EVERY
        script = queue_probe_script(self.scheduler, sections=sections)
        try:
            result = await self._run(
                ["bash", "-c", script, "hsm-probe", self.login.work_root], timeout=30
            )
        except (HsmError, OSError, TimeoutError) as exc:
            sample = HealthSample(reachable=False, error=str(exc) or type(exc).__name__)
        else:
            sample = parse_queue_probe(self.scheduler, result.stdout, self.login.work_root)
            if sample.reachable and sections:
                self._sections = (now, dict(sample.extra))
            elif sample.reachable and last is not None:
                sample = replace(sample, extra={**sample.extra, **last[1]})
        self.reachable = sample.reachable  # new tasks only while the controller answers
        return sample


def _needs_status(element: Element | None) -> bool:
    return (
        element is None
        or element.state in TERMINAL_ELEMENT
        or element.state is ElementState.UNKNOWN
    )


def _tail(result: CommandResult) -> str:
    text = (result.stderr.strip() or result.stdout.strip()).splitlines()
    return " / ".join(line.strip() for line in text[-3:]) or "no message"
