"""Resuming a stored sweep: what to rerun, with which resources and on which sources."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hsm.engine.codeversion import warn_if_changed
from hsm.engine.run import ProgressFn, RunOutcome
from hsm.engine.service import (
    Project,
    _drive,
    _event_loop,
    available_sources,
    check_gpus,
    controller_lock,
    current_sources,
    disabled_reason,
    drop_disabled,
    hsm_folders,
    preflight_sources,
    stored_spec,
)
from hsm.errors import ConfigError, ExitCode, SweepAborted
from hsm.sources.registry import build_sources, known_sources, resolve_names
from hsm.spec.overrides import apply_resources, check_resources
from hsm.spec.sweep import SweepSpec, sweep_from_data
from hsm.state import Store, SweepRow
from hsm.states import ACTIVE_ATTEMPT, AttemptState, SweepState, TaskStatus


@dataclass(frozen=True)
class Rerun:
    """What ``hsm resume`` is asked to change (nothing, by default)."""

    retry_failed: bool = False
    causes: list[str] | None = None  # only failures with these causes (None: every one)
    resources: Mapping[str, Any] = field(default_factory=dict)  # walltime, mem, cpus, gpus
    sources: Sequence[str] = ()  # move the sweep to these sources


@dataclass(frozen=True)
class ResumePlan:
    sweep: SweepRow
    spec: SweepSpec
    sources: list[str]
    resources: dict[str, Any]  # the checked changes, as stored
    finished: RunOutcome | None  # set when there is nothing to resume


def plan_resume(project: Project, store: Store, sweep_id: str, rerun: Rerun) -> ResumePlan:
    """Check a resume before anything is written: bad values are exit 2."""
    if rerun.causes is not None and not rerun.retry_failed:
        raise ConfigError("--cause: chooses which failures to rerun, so it needs --retry-failed")
    sweep = store.sweep(sweep_id)
    reruns = store.reruns(sweep.id)
    spec = stored_spec(sweep, reruns)
    resources = check_resources(spec.resources, rerun.resources)
    if resources:
        spec = sweep_from_data(
            apply_resources(sweep.spec, [*(r.resources for r in reruns), resources]),
            Path(sweep.spec_path),
            None,
        )
    if rerun.sources:
        names = resolve_names(project.loaded, names=rerun.sources, distributed=False)
        names = drop_disabled(project, names, explicit=True)
    else:
        names = current_sources(sweep, reruns)
    check_gpus(
        project,
        Path(sweep.spec_path),
        spec,
        [n for n in names if n in available_sources(project, store, sweep, [n], settle=False)],
    )
    finished = _finished(store, sweep, rerun)
    if finished is None and not available_sources(project, store, sweep, names, settle=False):
        raise SweepAborted(
            f"no source of sweep {sweep.id} can be used: {_why_not(project, store, names)}."
            f" Re-enable one with: hsm distributed enable NAME, or move the sweep with:"
            f" hsm resume {sweep.id} --source NAME"
        )
    return ResumePlan(sweep, spec, names, resources, finished)


def _why_not(project: Project, store: Store, names: Sequence[str]) -> str:
    known = set(known_sources(project.loaded))
    states = store.enabled_states()
    parts = []
    for name in names:
        if name not in known:
            parts.append(f"{name} (no longer in {project.loaded.path or 'the config'})")
        else:
            parts.append(f"{name} (disabled: {disabled_reason(project, states, name)})")
    return ", ".join(parts)


def _finished(store: Store, sweep: SweepRow, rerun: Rerun) -> RunOutcome | None:
    """The outcome of a sweep that has ended and that the resume would not change."""
    if sweep.state not in (SweepState.COMPLETED, SweepState.FAILED):
        return None
    counts = store.task_counts(sweep.id)
    if counts[TaskStatus.PENDING] or counts[TaskStatus.RUNNING] or counts[TaskStatus.CANCELLED]:
        return None
    # Attempts lost on a host that was away may still run there: a resume checks them (and
    # stops them), so the sweep is driven again.
    if any(
        a.state is AttemptState.LOST and a.handle or a.state in ACTIVE_ATTEMPT
        for a in store.attempts(sweep.id)
    ):
        return None
    failed = store.failed_causes(sweep.id)
    if rerun.retry_failed and any(rerun.causes is None or c in rerun.causes for c in failed):
        return None
    done = f"sweep {sweep.id} has finished ({sweep.state.value}): nothing to resume"
    if failed and rerun.retry_failed:
        done += (
            f"; no failed task has the cause {', '.join(rerun.causes or [])} (the"
            f" failures: {', '.join(f'{k} {v}' for k, v in sorted(failed.items()))})"
        )
    elif failed:
        done += f"; rerun its failed tasks with: hsm resume {sweep.id} --retry-failed"
    code = ExitCode.OK if sweep.state is SweepState.COMPLETED else ExitCode.TASKS_FAILED
    return RunOutcome(sweep.id, sweep.state, code, done)


def resume_run(
    project: Project,
    sweep_id: str,
    *,
    rerun: Rerun | None = None,
    on_progress: ProgressFn | None = None,
) -> RunOutcome:
    """Continue a sweep: reattach what runs, run what is left (and, as asked, the failed
    tasks again, with changed resources or on other sources). A sweep that has finished
    and is not asked to rerun anything is left as it is."""
    rerun = rerun or Rerun()
    store = project.open_store(create=False)
    plan = plan_resume(project, store, sweep_id, rerun)
    if plan.finished is not None:
        return plan.finished
    sweep = plan.sweep
    warn_if_changed(sweep.code_version, project.root, hsm_folders(project), sweep.id)
    with controller_lock(Path(sweep.sweep_dir)):
        names = available_sources(project, store, sweep, plan.sources, settle=True)
    sources = build_sources(
        project.loaded, names, parallel=sweep.parallel, resources=plan.spec.resources
    )
    explicit_alone = len(rerun.sources) == 1
    with _event_loop(sources) as runner:
        sources = preflight_sources(project, sources, runner, explicit_alone=explicit_alone)
        with controller_lock(Path(sweep.sweep_dir)):
            store.record_rerun(
                sweep.id,
                retry_failed=rerun.retry_failed,
                causes=rerun.causes,
                resources=plan.resources,
                sources=list(rerun.sources) or None,
            )
            store.set_cancel_requested(sweep.id, False)
            store.set_sweep_state(sweep.id, SweepState.RUNNING, controller_pid=os.getpid())
        return _drive(
            project,
            store,
            sweep,
            sources,
            on_progress,
            spec=plan.spec,
            runner=runner,
            previous=sweep,
            explicit_alone=explicit_alone,
        )
