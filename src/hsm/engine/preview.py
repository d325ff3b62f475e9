"""``hsm run --dry-run`` on a cluster: the job script that would be submitted.

Rendered offline, with the paths as configured (``~`` in ``remote_root`` is resolved by
the host at run time). A copy goes to ``<output_dir>/.dry-run/<sweep id>/<source>.sh``;
nothing goes to the state database, and no sweep folder is made (a sweep ID never
starts with ``.``, so that folder is never a sweep's).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hsm.engine.service import Plan, Project, guard_settings
from hsm.sources.base import SweepContext
from hsm.sources.registry import build_sources
from hsm.spec.expand import count_tasks
from hsm.spec.render import task_argv

DRY_RUN_DIR = ".dry-run"


def job_scripts(project: Project, plan: Plan, sweep_id: str) -> dict[str, Path]:
    """For each cluster source of the plan: its rendered job script, written to the
    dry-run folder. Returns {source: path of the copy}."""
    from hsm.sources.queue import QueueSource

    queues = [
        n
        for n in plan.sources
        if n != "local" and project.loaded.config.distributed.remotes[n].type in ("slurm", "pbs")
    ]
    if not queues:
        return {}
    spec = plan.spec
    sweep_dir = project.output_dir / sweep_id

    def argv_for(params: Mapping[str, Any], task_dir: str | None, python: str) -> list[str]:
        return task_argv(spec, params, python=python, task_dir=task_dir, sweep_id=sweep_id)

    ctx = SweepContext(
        sweep_id=sweep_id,
        sweep_dir=str(sweep_dir),
        project_root=str(project.root),
        project_name=project.root.name or "project",
        guard=guard_settings(project.loaded),
        wandb_group=sweep_id,
        argv_for=argv_for,
        gpus_per_task=spec.resources.gpus,
        resources=spec.resources,
    )
    sources = build_sources(
        project.loaded, queues, parallel=plan.parallel, resources=spec.resources
    )
    numbers = list(range(1, count_tasks(spec) + 1))
    out: dict[str, Path] = {}
    folder = project.output_dir / DRY_RUN_DIR / sweep_id
    for name, source in sources.items():
        if not isinstance(source, QueueSource):
            continue
        text = source.preview_script(ctx, numbers)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.sh"
        path.write_text(text, encoding="utf-8")
        out[name] = path
    return out
