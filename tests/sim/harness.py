"""Run one schedule: the real engine, policy and SQLite store against simulated hosts, on
virtual time; kill and resume the controller as the schedule says; check the invariants.

The simulation tier, module by module:

- loop.py: an asyncio loop on virtual time (hsm reads time through ``hsm.clock``);
- world.py: hosts whose job wrappers are state machines writing real status records;
- source.py: SimSource, a backend with the SSH backend's behaviour, on those hosts;
- faults.py: a schedule (a small sweep and its faults), drawn from one seed;
- invariants.py: what must hold after every schedule;
- runner.py / __main__.py: many schedules in worker processes, shrinking, replay;
- regressions.py: one schedule per known defect (strict xfails while it is there).

A killed controller is a SimStore whose commit N raises ControllerKilled (a BaseException:
the transaction rolls back) and refuses every later write; its sources refuse to act, and
its loop no longer moves the world. The next controller opens a new connection on the same
database and finds the same hosts, as ``hsm resume`` does.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from sqlite3 import Connection

from hsm import clock
from hsm.engine.run import Engine, EngineOptions, RunOutcome
from hsm.jobscript import GuardSettings
from hsm.sources.base import Source, SweepContext
from hsm.state import Store
from hsm.states import SweepState
from tests.sim import invariants
from tests.sim.faults import Schedule
from tests.sim.loop import SimDeadlock, SimHang, VirtualLoop
from tests.sim.source import ControllerKilled, SimSource
from tests.sim.world import World

SWEEP = invariants.SWEEP
MAX_CONTROLLERS = 8  # runs of one schedule (kills, interrupts, aborts, then resumes)
RESTART_DELAY = 2.0  # virtual seconds between a controller's death and its resume
AFTERMATH = 120.0  # the hosts run on this long after the sweep ended
HEALTH_INTERVAL = 5.0
GUARD = GuardSettings(
    project_min_free=0, task_min_free=0, check_interval=5, warn_below=0, kill_below=0
)


def _tmp_root() -> Path:
    env = os.environ.get("HSM_SIM_DIR")
    if env:
        return Path(env)
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


class SimStore(Store):
    """The real store; its transactions can be made to die (SIGKILL) at commit N."""

    kill_at: int | None = None
    commits = 0
    dead = False
    on_kill = staticmethod(lambda: None)

    @classmethod
    def open_sim(cls, path: Path) -> SimStore:
        store = cls.open(path)
        assert isinstance(store, SimStore)
        return store

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        if self.dead:
            raise ControllerKilled()
        with super().transaction() as tx:
            yield tx
            self.commits += 1
            if self.commits == self.kill_at:
                self.dead = True  # the commit never happens; nothing more is written
                self.on_kill()
                raise ControllerKilled()


@dataclass
class Result:
    schedule: Schedule
    violations: list[str] = field(default_factory=list)
    outcomes: list[RunOutcome] = field(default_factory=list)
    commits: list[int] = field(default_factory=list)  # per controller
    kills: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations


class _Errors(logging.Handler):
    """Internal errors of the run loop are failures (unless the controller was killed)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("internal error") or message.startswith("poll of"):
            self.messages.append(message)


_template: Path | None = None


def _template_db() -> Path:
    global _template
    if _template is None or not _template.exists():
        path = Path(tempfile.mkdtemp(dir=_tmp_root(), prefix="hsm-sim-template-")) / "hsm.db"
        Store.open(path).close()
        atexit.register(shutil.rmtree, path.parent, ignore_errors=True)
        _template = path
    return _template


def run_schedule(schedule: Schedule, *, verbose: bool = False) -> Result:
    root = Path(tempfile.mkdtemp(dir=_tmp_root(), prefix="hsm-sim-"))
    logger = logging.getLogger("hsm")
    errors = _Errors()
    old = (logger.level, logger.propagate)
    logger.addHandler(errors)
    logger.setLevel(logging.DEBUG if verbose else logging.ERROR)
    logger.propagate = verbose
    world = World(schedule)
    clock.install(world.wall, world.mono)
    try:
        return _run(schedule, world, root, errors)
    finally:
        clock.reset()
        logger.removeHandler(errors)
        logger.setLevel(old[0])
        logger.propagate = old[1]
        shutil.rmtree(root, ignore_errors=True)


def _run(schedule: Schedule, world: World, root: Path, errors: _Errors) -> Result:
    result = Result(schedule)
    db = root / "hsm.db"
    shutil.copyfile(_template_db(), db)
    sweep_dir = root / "sweep"
    sweep_dir.mkdir()
    names = [name for name, _ in schedule.hosts]
    store = SimStore.open_sim(db)
    store.create_sweep(
        sweep_id=SWEEP,
        spec_path=str(root / "sweep.yaml"),
        spec={},
        sweep_dir=str(sweep_dir),
        project_root=str(root),
        sources=names,
        parallel=None,
        command_line="hsm run sweep.yaml",
        params=({"x": n} for n in range(1, schedule.tasks + 1)),
    )
    kills: list[int] = []
    fewer = 0
    engine: list[Engine] = []
    for f in schedule.faults:
        if f.kind == "kill":
            kills.append(int(f.param))
        elif f.kind == "fewer_slots":
            fewer += 1
        elif f.kind == "interrupt":
            world.at(f.t, lambda: engine[-1]._on_signal() if engine else None)
        elif f.kind == "host_fails_task":
            world.hosts[f.host].fails.add(int(f.param))
        elif f.kind == "bad_task":
            world.bad_tasks.add(int(f.param))
        elif f.host and f.kind not in ("freeze", "link", "sshd"):
            world.hosts[f.host].once.append((f.t, f.kind, f.param))
    ctx = SweepContext(
        sweep_id=SWEEP,
        sweep_dir=str(sweep_dir),
        project_root=str(root),
        project_name="sim",
        guard=GUARD,
        wandb_group=SWEEP,
        argv_for=lambda params, task_dir, python: [python, "train.py"],
    )
    options = EngineOptions(max_retries=schedule.max_retries, health_interval=HEALTH_INTERVAL)
    last: RunOutcome | None = None
    for generation in range(1, MAX_CONTROLLERS + 1):
        world.generation = generation
        if generation > 1:
            store = SimStore.open_sim(db)
            _resume(store, names, aborted=last is not None and last.state is SweepState.ABORTED)
        slots = {name: max(1, n - (fewer if generation > 1 else 0)) for name, n in schedule.hosts}
        sources: dict[str, Source] = {
            name: SimSource(world, world.hosts[name], slots=slots[name], generation=generation)
            for name in names
        }
        world.sources = dict(sources)  # type: ignore[arg-type]
        loop = VirtualLoop(world)
        store.commits = 0
        store.kill_at = kills[generation - 1] if generation <= len(kills) else None

        def kill(loop: VirtualLoop = loop, generation: int = generation) -> None:
            loop.kill()
            world.generation = -generation
            world.sources = {}

        store.on_kill = kill
        run = Engine(store=store, sweep_id=SWEEP, ctx=ctx, sources=sources, options=options)
        engine.append(run)
        seen_errors = len(errors.messages)
        killed = False
        try:
            outcome = loop.run_until_complete(run.run())
        except ControllerKilled:
            killed, outcome = True, None
        except (SimHang, SimDeadlock) as exc:
            result.violations.append(f"controller {generation}: {exc}")
            outcome = None
            kill()
            _drain(loop)
        finally:
            loop.close()
            store.close()
            engine.clear()
        killed = killed or store.dead
        result.commits.append(store.commits)
        if not killed and len(errors.messages) > seen_errors:
            result.violations.extend(errors.messages[seen_errors:])
        if result.violations:
            return result
        if killed:
            result.kills += 1
            world.advance_to(world.now + RESTART_DELAY)
            continue
        assert outcome is not None
        result.outcomes.append(outcome)
        last = outcome
        if outcome.state is SweepState.CANCELLED or (
            outcome.state is SweepState.ABORTED
            and (outcome.message or "").startswith("no usable source")
        ):
            continue  # the user resumes it
        break
    world.sources = {}
    world.advance_to(world.now + AFTERMATH)
    final = Store.open(db, create=False)
    try:
        result.violations.extend(invariants.check(world, final, sweep_dir, result.outcomes))
    finally:
        final.close()
    return result


def _drain(loop: VirtualLoop) -> None:
    """Let a stuck controller's tasks unwind (cancelled, the world standing still)."""
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    with contextlib.suppress(BaseException):
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def _resume(store: SimStore, names: list[str], *, aborted: bool) -> None:
    """What ``hsm resume`` does before it builds the engine (and, after an abort, what the
    user does first: re-enable the sources)."""
    if aborted:
        for name in names:
            if not store.source(name).enabled:
                store.set_source_enabled(name, True, reason=None, sweep_id=SWEEP)
    store.record_rerun(SWEEP, retry_failed=False, causes=None, resources={}, sources=None)
    store.set_cancel_requested(SWEEP, False)
    store.set_sweep_state(SWEEP, SweepState.RUNNING, controller_pid=os.getpid())
