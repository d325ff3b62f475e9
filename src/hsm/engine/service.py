"""Library entry points: plan, run, resume and cancel sweeps. They return results, never print."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hsm.engine.bringup import broken_sources, gather_failures, settle_lost
from hsm.engine.codeversion import code_version
from hsm.engine.failsafe import FailsafeConfig
from hsm.engine.run import Engine, EngineOptions, ProgressFn, RunOutcome
from hsm.errors import ConfigError, ExitCode, HsmError, StateError, SweepAborted
from hsm.jobscript import GuardSettings
from hsm.sources.base import Source, SweepContext, task_folder_name
from hsm.sources.registry import (
    build_sources,
    known_sources,
    local_gpus,
    local_python,
    resolve_names,
)
from hsm.spec.config import LoadedConfig, load_config
from hsm.spec.expand import count_tasks, iter_tasks
from hsm.spec.overrides import apply_resources
from hsm.spec.program import check_local_program
from hsm.spec.render import task_argv
from hsm.spec.sweep import SweepSpec, load_sweep, sweep_from_data
from hsm.state import DB_NAME, RerunRow, SourceRow, Store, SweepRow
from hsm.states import SweepState, TaskStatus

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
LOG_DATEFMT = "%Y-%m-%d %H:%M:%S"
SWEEP_LOG = "hsm.log"
FILE_ONLY = "hsm_file_only"  # a log record's attribute: for the sweep log, not the console

sweep_log = logging.getLogger("hsm.sweep")


@dataclass(frozen=True)
class Project:
    loaded: LoadedConfig

    @property
    def root(self) -> Path:
        return self.loaded.project_root

    @property
    def state_path(self) -> Path:
        return self.loaded.state_dir / DB_NAME

    @property
    def output_dir(self) -> Path:
        return self.loaded.output_dir

    def open_store(self, *, create: bool = False) -> Store:
        return Store.open(self.state_path, create=create)

    def has_state(self) -> bool:
        return self.state_path.exists()


def open_project(config: Path | None, cwd: Path | None = None) -> Project:
    return Project(load_config(config, cwd or Path.cwd()))


@dataclass(frozen=True)
class Plan:
    spec_path: Path
    spec: SweepSpec
    total: int
    sources: list[str]
    parallel: int | None
    explicit_alone: bool = False  # one source, named by the user (or this machine alone)


def plan_run(
    project: Project,
    spec_path: Path,
    *,
    sources: Sequence[str] = (),
    distributed: bool = False,
    parallel: int | None = None,
) -> Plan:
    """Validate everything a run needs, without writing anything."""
    if parallel is not None and parallel < 1:
        raise ConfigError("--parallel: must be 1 or more")
    if distributed and not project.loaded.config.distributed.enabled:
        raise ConfigError(
            f"{project.loaded.path}: distributed.enabled: false, so --distributed"
            " is off; set it to true, or name sources with --source"
        )
    spec = load_sweep(spec_path, project.root)
    names = resolve_names(project.loaded, names=sources, distributed=distributed)
    names = drop_disabled(project, names, explicit=bool(sources))
    check_gpus(project, spec_path, spec, names)
    if names == ["local"]:
        check_local_program(spec, project.root)
    return Plan(
        spec_path,
        spec,
        count_tasks(spec),
        names,
        parallel,
        explicit_alone=len(names) == 1 and not distributed,
    )


def check_gpus(project: Project, spec_path: Path, spec: SweepSpec, names: Sequence[str]) -> None:
    """Each source with a GPU allowlist must have room for one task's GPUs."""
    per_task = spec.resources.gpus
    if not per_task:
        return
    remotes = project.loaded.config.distributed.remotes
    for name in names:
        if name == "local":
            allowed, key = local_gpus(project.loaded), "local.gpus"
        else:
            listed = remotes[name].gpus
            allowed = listed if isinstance(listed, list) else []
            key = f"distributed.remotes.{name}.gpus"
        if allowed and len(allowed) < per_task:
            where = project.loaded.path or "hsm_config.yaml"
            raise ConfigError(
                f"{spec_path}: resources.gpus: each task asks for {per_task} GPU(s), but source"
                f" {name!r} allows only {len(allowed)} ({key} in {where}: {allowed})"
            )


def drop_disabled(project: Project, names: list[str], *, explicit: bool) -> list[str]:
    """Sources in the disabled set are not used; naming one explicitly is an error."""
    if not project.has_state():
        return names
    store = project.open_store()
    try:
        states = store.enabled_states()
    finally:
        store.close()
    disabled = [n for n in names if n in states and not states[n].enabled]
    if explicit and disabled:
        name = disabled[0]
        raise ConfigError(
            f"source {name!r} is disabled ({states[name].disabled_reason}); re-enable it with:"
            f" hsm distributed enable {name}"
        )
    kept = [n for n in names if n not in disabled]
    for name in disabled:
        logging.getLogger("hsm.cli").warning(
            "source %s is disabled (%s); not using it. Re-enable: hsm distributed enable %s",
            name,
            states[name].disabled_reason,
            name,
        )
    if not kept:
        raise SweepAborted(
            "every source is disabled: "
            + "; ".join(f"{n} ({states[n].disabled_reason})" for n in disabled)
            + ". Re-enable one with: hsm distributed enable NAME"
        )
    return kept


def preview_argv(
    plan: Plan, *, project: Project | None = None, sweep_id: str | None = None
) -> Iterator[list[str]]:
    """The argv each task gets on this machine. Without a sweep ID (``--name``), the ID is
    shown as ``SWEEP_ID`` (a placeholder that needs no quoting)."""
    sweep_id = sweep_id or "SWEEP_ID"
    sweep_dir = str(project.output_dir / sweep_id) if project else f"OUTPUT_DIR/{sweep_id}"
    for number, params in enumerate(iter_tasks(plan.spec), start=1):
        task_dir = f"{sweep_dir}/tasks/{task_folder_name(number)}"
        python = local_python(project.loaded) if project else "python3"
        yield task_argv(plan.spec, params, python=python, task_dir=task_dir, sweep_id=sweep_id)


def stored_spec(sweep: SweepRow, reruns: Sequence[RerunRow] = ()) -> SweepSpec:
    """The spec as it was when the sweep started (the file may have changed since), with
    the resources changed by its reruns."""
    data = apply_resources(sweep.spec, [r.resources for r in reruns]) if reruns else sweep.spec
    return sweep_from_data(data, Path(sweep.spec_path), None)


def current_sources(sweep: SweepRow, reruns: Sequence[RerunRow]) -> list[str]:
    """The sources the sweep runs on: the last ones a rerun moved it to, else its own."""
    for rerun in reversed(reruns):
        if rerun.sources:
            return list(rerun.sources)
    return list(sweep.sources)


def disabled_reason(project: Project, states: Mapping[str, SourceRow], name: str) -> str | None:
    """Why a source is disabled (in the state, or by ``enabled: false``), or None."""
    row = states.get(name)
    if row is not None and not row.enabled:
        return f"{row.disabled_reason}; re-enable it with: hsm distributed enable {name}"
    remote = project.loaded.config.distributed.remotes.get(name)
    if remote is not None and not remote.enabled:
        return f"enabled: false in {project.loaded.path} (distributed.remotes.{name}.enabled)"
    return None


def available_sources(
    project: Project, store: Store, sweep: SweepRow, names: Sequence[str], *, settle: bool
) -> list[str]:
    """Of a stored sweep's sources, those a resume (or cancel) can build. A source gone from
    the config is left out, and its running attempts are settled as lost, with their job
    handles, so that they are checked again if it comes back. A disabled source takes part
    only while attempts of the sweep run on it (to collect them); it takes no new tasks.
    Without ``settle``, nothing is written or logged (to check a resume before it starts)."""
    known = set(known_sources(project.loaded))
    states = store.enabled_states()
    active = store.attempts(sweep.id, active_only=True)
    busy = {a.source for a in active}
    kept: list[str] = []
    for name in dict.fromkeys([*names, *sorted(busy)]):
        if name not in known:
            if not settle:
                continue
            lost = settle_lost(store, sweep.id, name)
            sweep_log.warning(
                "source %s is no longer in %s: not using it%s",
                name,
                project.loaded.path or "the config",
                f"; its {lost} running task(s) go back to the queue" if lost else "",
            )
            continue
        why = disabled_reason(project, states, name)
        if why is not None and name not in busy:
            if settle:
                sweep_log.warning("source %s is disabled (%s); not using it", name, why)
            continue
        kept.append(name)
    return kept


def new_sweep_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def guard_settings(loaded: LoadedConfig) -> GuardSettings:
    disk = loaded.config.disk
    return GuardSettings(
        project_min_free=int(disk.project_min_free),
        task_min_free=int(disk.task_min_free),
        check_interval=int(disk.check_interval),
        warn_below=int(disk.warn_below),
        kill_below=int(disk.kill_below),
    )


def sweep_context(project: Project, sweep: SweepRow, spec: SweepSpec) -> SweepContext:
    def argv_for(params: Mapping[str, Any], task_dir: str | None, python: str) -> list[str]:
        return task_argv(spec, params, python=python, task_dir=task_dir, sweep_id=sweep.id)

    return SweepContext(
        sweep_id=sweep.id,
        sweep_dir=sweep.sweep_dir,
        project_root=sweep.project_root,
        project_name=Path(sweep.project_root).name or "project",
        guard=guard_settings(project.loaded),
        wandb_group=sweep.id,
        argv_for=argv_for,
        gpus_per_task=spec.resources.gpus,
        resources=spec.resources,
    )


def start_run(
    project: Project,
    plan: Plan,
    *,
    name: str | None,
    command_line: str,
    on_progress: ProgressFn | None = None,
) -> RunOutcome:
    """Create the sweep (state rows + folder) and run it to its end."""
    sweep_id = name or new_sweep_id()
    check_sweep_name(name)
    sweep_dir = project.output_dir / sweep_id
    if sweep_dir.exists():
        raise ConfigError(f"--name: the sweep folder {sweep_dir} exists already")
    sources = build_sources(
        project.loaded, plan.sources, parallel=plan.parallel, resources=plan.spec.resources
    )
    # One event loop for the checks and the run: the connections the checks opened serve
    # the run (sources hold asyncio objects bound to their loop).
    with _event_loop(sources) as runner:
        sources = preflight_sources(project, sources, runner, explicit_alone=plan.explicit_alone)
        plan = replace(plan, sources=list(sources))
        store, sweep = create_sweep(project, plan, sweep_id=sweep_id, command_line=command_line)
        return _drive(
            project,
            store,
            sweep,
            sources,
            on_progress,
            runner=runner,
            explicit_alone=plan.explicit_alone,
        )


def hsm_folders(project: Project) -> list[Path]:
    """hsm's own folders in the project: they are not part of its code version."""
    return [project.loaded.state_dir, project.output_dir]


def create_sweep(
    project: Project, plan: Plan, *, sweep_id: str, command_line: str
) -> tuple[Store, SweepRow]:
    """Record the sweep and all its tasks (one transaction), and make its folder."""
    sweep_dir = project.output_dir / sweep_id
    store = project.open_store(create=True)
    try:
        store.create_sweep(
            sweep_id=sweep_id,
            spec_path=str(plan.spec_path.resolve()),
            spec=plan.spec.raw,
            sweep_dir=str(sweep_dir),
            project_root=str(project.root),
            sources=plan.sources,
            parallel=plan.parallel,
            command_line=command_line,
            params=iter_tasks(plan.spec),
            code_version=code_version(project.root, hsm_folders(project)),
        )
        sweep_dir.mkdir(parents=True)
        (sweep_dir / "sweep.yaml").write_bytes(plan.spec_path.read_bytes())
    except OSError as exc:
        raise StateError(f"{sweep_dir}: cannot create the sweep folder: {exc}") from None
    return store, store.sweep(sweep_id)


SWEEP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")


def check_sweep_name(name: str | None) -> None:
    """A sweep ID names a folder and appears in log lines: letters, digits and ``_.+-``."""
    if name is not None and not SWEEP_NAME.fullmatch(name):
        raise ConfigError(
            f"--name: {name!r} is not a valid sweep ID: use up to 128 letters, digits and"
            " '_.+-', not starting with '.', '+' or '-'"
        )


def preflight_sources(
    project: Project, sources: dict[str, Source], runner: asyncio.Runner, *, explicit_alone: bool
) -> dict[str, Source]:
    """Check every source before the sweep is written or changed. A source that fails is
    disabled with the reason and left out (see :mod:`hsm.engine.bringup`); the sources
    left are returned."""

    async def check(source: Source) -> None:
        await source.preflight()

    failures = runner.run(gather_failures(sources, check))
    broken = broken_sources(failures, explicit_alone=explicit_alone, what="checks")
    if not broken:
        return sources
    store = project.open_store(create=True)
    try:
        for name, reason in broken.items():
            sweep_log.error(
                "%s; disabling it and going on with the other sources. After"
                " fixing it: hsm distributed enable %s",
                reason,
                name,
            )
            store.set_source_enabled(name, False, reason=reason)
    finally:
        store.close()

    async def close() -> None:
        await asyncio.gather(*(sources[n].close() for n in broken), return_exceptions=True)

    runner.run(close())
    return {n: s for n, s in sources.items() if n not in broken}


@contextmanager
def _event_loop(sources: dict[str, Source]) -> Iterator[asyncio.Runner]:
    """The event loop the sources live in. They are closed (their connections) here when
    the run does not get to start, or fails on its way; a run that starts closes them
    itself when it ends."""
    with asyncio.Runner() as runner:
        try:
            yield runner
        except BaseException:

            async def close() -> None:
                await asyncio.gather(*(s.close() for s in sources.values()), return_exceptions=True)

            with contextlib.suppress(Exception):
                runner.run(close())
            raise


def _drive(
    project: Project,
    store: Store,
    sweep: SweepRow,
    sources: dict[str, Source],
    on_progress: ProgressFn | None,
    *,
    runner: asyncio.Runner,
    spec: SweepSpec | None = None,
    previous: SweepRow | None = None,
    explicit_alone: bool = False,
) -> RunOutcome:
    """Run the engine on a recorded sweep. ``previous`` is the sweep as it was before a
    resume (None: the sweep is new). When the run stops on bad input before any task
    started (exit 2), it leaves nothing behind: a new sweep is removed, a resumed one gets
    back its state."""
    spec = spec or stored_spec(sweep)
    ctx = sweep_context(project, sweep, spec)
    dist = project.loaded.config.distributed
    options = EngineOptions(
        max_retries=dist.max_retries,
        strategy=dist.strategy,
        failsafe=FailsafeConfig.from_config(dist),
        health=project.loaded.config.health,
        health_interval=float(dist.health_check_interval),
        stall_timeout=float(dist.stall_timeout),
        explicit_alone=explicit_alone,
    )
    attempts_before = len(store.attempts(sweep.id))
    try:
        with controller_lock(Path(sweep.sweep_dir)), sweep_log_file(Path(sweep.sweep_dir)):
            store.set_sweep_state(sweep.id, SweepState.RUNNING, controller_pid=os.getpid())
            sweep_log.info(
                "sweep %s: %d task(s) on %s; folder %s",
                sweep.id,
                sum(store.task_counts(sweep.id).values()),
                ", ".join(sources),
                sweep.sweep_dir,
            )
            engine = Engine(
                store=store,
                sweep_id=sweep.id,
                ctx=ctx,
                sources=sources,
                options=options,
                on_progress=on_progress,
            )
            try:
                outcome = runner.run(engine.run())
            except HsmError as exc:
                if (
                    exc.exit_code != ExitCode.BAD_INPUT
                    or len(store.attempts(sweep.id)) != attempts_before
                ):
                    store.set_sweep_state(sweep.id, SweepState.ABORTED, abort_reason=exc.message)
                    raise
                sweep_log.error("%s", exc.message)
                raise _Undo(exc) from None
            if outcome.message:
                level = logging.INFO if outcome.exit_code == 0 else logging.WARNING
                # The command prints the message once, below its table: the log file
                # alone gets it as a line.
                sweep_log.log(
                    level,
                    "sweep %s %s: %s",
                    sweep.id,
                    outcome.state.value,
                    outcome.message,
                    extra={FILE_ONLY: True},
                )
            else:
                sweep_log.info("sweep %s %s", sweep.id, outcome.state.value)
            return outcome
    except _Undo as undo:
        _undo(store, sweep, previous)
        raise undo.error from None


class _Undo(Exception):
    def __init__(self, error: HsmError) -> None:
        super().__init__(error.message)
        self.error = error


def _undo(store: Store, sweep: SweepRow, previous: SweepRow | None) -> None:
    """Leave no trace of a run that stopped on bad input before any task started."""
    with contextlib.suppress(HsmError, OSError):
        if previous is None:
            store.delete_sweep(sweep.id)
            shutil.rmtree(sweep.sweep_dir, ignore_errors=True)
        else:
            store.set_sweep_state(sweep.id, previous.state, abort_reason=previous.abort_reason)


@contextmanager
def controller_lock(sweep_dir: Path) -> Iterator[None]:
    """Only one controller drives a sweep at a time (flock, released when the process dies)."""
    lock_dir = sweep_dir / ".hsm"
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / "controller.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateError(
                f"sweep {sweep_dir.name} is being driven by another hsm process right now;"
                " wait for it, or stop it with: hsm cancel " + sweep_dir.name
            ) from None
        yield
    finally:
        os.close(fd)


def controller_alive(sweep: SweepRow) -> bool:
    """Whether the hsm process recorded as driving the sweep still runs. Read-only (no lock
    is taken), so it is safe to ask while a controller starts."""
    pid = sweep.controller_pid
    if pid is None:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX" and b"hsm" in cmdline


def controller_running(sweep_dir: Path) -> bool:
    try:
        with controller_lock(sweep_dir):
            return False
    except StateError:
        return True


def _sweep_record(record: logging.LogRecord) -> bool:
    """The sweep log keeps INFO and above, plus the per-task DEBUG lines of the run loop."""
    return record.levelno >= logging.INFO or record.name == "hsm.sweep"


@contextmanager
def sweep_log_file(sweep_dir: Path) -> Iterator[None]:
    handler = logging.FileHandler(sweep_dir / SWEEP_LOG, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATEFMT))
    root = logging.getLogger("hsm")
    root.addHandler(handler)
    handler.addFilter(_sweep_record)
    if root.level == logging.NOTSET or root.level > logging.DEBUG:
        root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def request_cancel(project: Project, sweep_id: str, *, wait: float = 30.0) -> SweepRow:
    """Ask the running controller to cancel; with no controller alive, cancel here."""
    store = project.open_store(create=False)
    sweep = store.sweep(sweep_id)
    if sweep.state is not SweepState.RUNNING and not store.attempts(sweep_id, active_only=True):
        if not store.task_counts(sweep_id)[TaskStatus.PENDING]:
            return sweep  # it has ended: nothing to cancel, and its state stays as it is
        store.cancel_pending(sweep_id)
        store.set_sweep_state(sweep_id, SweepState.CANCELLED, abort_reason="sweep cancelled")
        return store.sweep(sweep_id)
    store.set_cancel_requested(sweep_id, True)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and controller_running(Path(sweep.sweep_dir)):
        time.sleep(0.2)
    if controller_running(Path(sweep.sweep_dir)):
        raise StateError(f"the controller of sweep {sweep_id} did not stop within {wait:.0f} s")
    if store.sweep(sweep_id).state is not SweepState.CANCELLED:
        # No controller was alive: drive the cancel ourselves (it reattaches and stops).
        reruns = store.reruns(sweep_id)
        spec = stored_spec(sweep, reruns)
        names = available_sources(
            project, store, sweep, current_sources(sweep, reruns), settle=True
        )
        sources = build_sources(project.loaded, names, parallel=sweep.parallel)
        store.set_cancel_requested(sweep_id, True)
        with _event_loop(sources) as runner:
            _drive(project, store, sweep, sources, None, spec=spec, runner=runner)
    return store.sweep(sweep_id)
