"""The ``hsm`` command. Parses, calls the library, renders; errors are caught in one place."""

from __future__ import annotations

import logging
import os
import shlex
import sys
import traceback
from importlib import resources
from pathlib import Path

import click

from hsm import __version__
from hsm.cli.common import (
    announce_defaults,
    config_option,
    json_option,
    project_from,
)
from hsm.cli.distributed import distributed
from hsm.cli.render import (
    ProgressView,
    err_console,
    fmt_time,
    out_console,
    print_json,
    print_summary_json,
    rerun_lines,
    setup_console_logging,
    sources_table,
    summary_table,
)
from hsm.cli.report import report
from hsm.cli.results import results
from hsm.engine.codeversion import describe as describe_code
from hsm.engine.listing import list_sweeps, sweep_or_latest
from hsm.engine.preview import job_scripts
from hsm.engine.resume import Rerun, resume_run
from hsm.engine.run import RunOutcome
from hsm.engine.service import (
    Project,
    check_sweep_name,
    controller_alive,
    plan_run,
    preview_argv,
    request_cancel,
    start_run,
)
from hsm.engine.summary import summarize
from hsm.errors import ConfigError, ExitCode, HsmError, StateError
from hsm.spec.overrides import parse_causes
from hsm.states import SweepState, TaskStatus

log = logging.getLogger("hsm.cli")

LARGE_SWEEP = 1_000_000


class ClosedPipeError(Exception):
    """stdout was closed by its reader (``hsm ... | head``): not a failure of hsm."""


class HsmGroup(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # click turns a closed pipe into exit 1; it is no failure, so it leaves here.
            raise ClosedPipeError from None


@click.group(cls=HsmGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hsm")
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """hsm: run parameter sweeps on this machine, SSH hosts and clusters, and keep going."""
    setup_console_logging(verbose)


# -- init -------------------------------------------------------------------------------
@cli.command()
@click.argument("directory", type=click.Path(path_type=Path), default=Path("."))
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def init(directory: Path, force: bool) -> None:
    """Scaffold hsm_config.yaml, sweeps/sweep.yaml and an example train.py in DIRECTORY."""
    templates = resources.files("hsm.cli") / "templates"
    files = {"hsm_config.yaml": "hsm_config.yaml", "sweeps/sweep.yaml": "sweep.yaml"}
    if not (directory / "train.py").exists():
        files["train.py"] = "train.py"
    existing = [p for p in files if (directory / p).exists()]
    if existing and not force:
        raise ConfigError(f"{directory / existing[0]}: exists already; use --force to overwrite")
    for target, template in files.items():
        path = directory / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text((templates / template).read_text())
        click.echo(f"wrote {path}")
    cd = "" if directory == Path(".") else f"cd {shlex.quote(str(directory))} && "
    click.echo(f"next: {cd}hsm run sweeps/sweep.yaml")


# -- run --------------------------------------------------------------------------------
@cli.command()
@click.argument("sweep_file", type=click.Path(path_type=Path))
@click.option("--distributed", is_flag=True, help="Use every enabled source.")
@click.option(
    "--source", "sources", multiple=True, metavar="NAME", help="Run on this source (repeatable)."
)
@click.option("--parallel", type=int, default=None, help="Parallel tasks on this machine.")
@click.option("--name", default=None, help="Sweep ID (default: date-time-random).")
@click.option("--dry-run", is_flag=True, help="Print the argv of every task; run nothing.")
@click.option("--count-only", is_flag=True, help="Print the number of tasks; run nothing.")
@click.option("--yes", is_flag=True, help=f"Allow sweeps of more than {LARGE_SWEEP} tasks.")
@json_option
@config_option
def run(
    sweep_file: Path,
    distributed: bool,
    sources: tuple[str, ...],
    parallel: int | None,
    name: str | None,
    dry_run: bool,
    count_only: bool,
    yes: bool,
    as_json: bool,
    config_path: Path | None,
) -> None:
    """Run the sweep in SWEEP_FILE (on this machine unless --source/--distributed)."""
    if distributed and sources:
        raise ConfigError("--distributed and --source: use one or the other")
    check_sweep_name(name)
    project = project_from(config_path, quiet=True)
    if not sweep_file.exists():
        raise ConfigError(f"{sweep_file}: no such sweep file")
    plan = plan_run(
        project, sweep_file, sources=sources, distributed=distributed, parallel=parallel
    )
    if count_only:
        print_json({"total": plan.total}) if as_json else click.echo(plan.total)
        return
    if plan.total > LARGE_SWEEP and not yes:
        raise ConfigError(
            f"{sweep_file}: sweep: {plan.total} tasks is more than {LARGE_SWEEP};"
            " check the grid, or pass --yes to run it"
        )
    if dry_run:
        argvs = list(preview_argv(plan, project=project, sweep_id=name))
        scripts = job_scripts(project, plan, name or "SWEEP_ID")
        if as_json:
            extra = (
                {
                    "job_scripts": {
                        n: {"path": str(p), "script": p.read_text()} for n, p in scripts.items()
                    }
                }
                if scripts
                else {}
            )
            print_json({"total": plan.total, "sources": plan.sources, "argv": argvs, **extra})
        else:
            for number, argv in enumerate(argvs, start=1):
                click.echo(f"[{number}] {shlex.join(argv)}")
            for source, path in scripts.items():
                click.echo(f"# the job script of source {source} (a copy is in {path}):")
                click.echo(path.read_text(), nl=False)
        return
    announce_defaults(project)
    command_line = shlex.join(["hsm", *sys.argv[1:]])
    view = ProgressView(live=not as_json)

    with view.active():
        outcome = start_run(
            project, plan, name=name, command_line=command_line, on_progress=view.update
        )
    _finish(project, outcome, as_json)


def _finish(project: Project, outcome: RunOutcome, as_json: bool) -> None:
    store = project.open_store()
    summary = summarize(store, outcome.sweep_id)
    if as_json:
        print_summary_json(summary, store)
    else:
        err_console.print(summary_table(summary))
    if outcome.message:
        err_console.print(outcome.message, markup=False)
    sys.exit(outcome.exit_code)


# -- status / list ----------------------------------------------------------------------
@cli.command()
@click.argument("sweep_id", required=False)
@json_option
@config_option
def status(sweep_id: str | None, as_json: bool, config_path: Path | None) -> None:
    """Show one sweep (the latest if no ID is given)."""
    project = project_from(config_path, quiet=True)
    sweep_id = sweep_or_latest(project, sweep_id)
    store = project.open_store()
    summary = summarize(store, sweep_id)
    if as_json:
        print_summary_json(summary, store)
        return
    sweep = summary.sweep
    console = out_console
    console.print(summary_table(summary))
    console.print(sources_table(summary))
    if summary.causes:
        console.print(
            "causes: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.causes.items())),
            markup=False,
        )
    if summary.failed_causes:
        console.print(
            "failed: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.failed_causes.items())),
            markup=False,
        )
    for line in rerun_lines(summary):
        console.print(line, markup=False)
    console.print(
        f"folder: {sweep.sweep_dir}\ncode: {describe_code(sweep.code_version)}\n"
        f"started: {fmt_time(sweep.created)}  finished: {fmt_time(sweep.finished)}",
        markup=False,
    )
    if sweep.abort_reason:
        console.print(sweep.abort_reason, markup=False)
    if sweep.state is SweepState.RUNNING and not controller_alive(sweep):
        console.print(
            f"no hsm process drives this sweep now (it was stopped or killed);"
            f" continue it with: hsm resume {sweep.id}",
            markup=False,
        )
    console.print(f"report: hsm report {sweep.id}", markup=False)


@cli.command("list")
@json_option
@config_option
def list_(as_json: bool, config_path: Path | None) -> None:
    """List recent sweeps."""
    rows = list_sweeps(project_from(config_path, quiet=True))
    if as_json:
        print_json({"sweeps": [r.to_json() for r in rows]})
        return
    if not rows:
        click.echo("no sweeps yet")
        return
    for r in rows:
        click.echo(
            f"{r.sweep.id}  {r.sweep.state.value:<9}  {fmt_time(r.sweep.created)}  "
            f"{r.counts[TaskStatus.COMPLETED]}/{r.total} completed, "
            f"{r.counts[TaskStatus.FAILED]} failed"
        )


# -- resume / cancel --------------------------------------------------------------------
@cli.command()
@click.argument("sweep_id")
@click.option("--retry-failed", is_flag=True, help="Run the failed tasks again.")
@click.option(
    "--cause",
    "causes",
    multiple=True,
    metavar="CAUSE[,CAUSE...]",
    help="With --retry-failed: rerun only the failures of these causes (e.g. timeout,disk_kill).",
)
@click.option(
    "--walltime",
    default=None,
    metavar="HH:MM:SS",
    help="Change the walltime of the tasks run from now on.",
)
@click.option("--mem", default=None, metavar="SIZE", help="Change the memory (e.g. 32G).")
@click.option("--cpus", type=click.IntRange(min=1), default=None, help="Change the CPUs.")
@click.option("--gpus", type=click.IntRange(min=0), default=None, help="Change the GPUs.")
@click.option(
    "--source",
    "sources",
    multiple=True,
    metavar="NAME",
    help="Run the rest of the sweep on this source (repeatable).",
)
@json_option
@config_option
def resume(
    sweep_id: str,
    retry_failed: bool,
    causes: tuple[str, ...],
    walltime: str | None,
    mem: str | None,
    cpus: int | None,
    gpus: int | None,
    sources: tuple[str, ...],
    as_json: bool,
    config_path: Path | None,
) -> None:
    """Continue a sweep: reattach running tasks, run what is left."""
    project = project_from(config_path, quiet=True)
    rerun = Rerun(
        retry_failed=retry_failed,
        causes=parse_causes(causes),
        resources={"walltime": walltime, "mem": mem, "cpus": cpus, "gpus": gpus},
        sources=sources,
    )
    if not project.has_state():
        raise StateError(f"unknown sweep ID {sweep_id!r}: no sweep has run in {project.root} yet")
    view = ProgressView(live=not as_json)
    with view.active():
        outcome = resume_run(project, sweep_id, rerun=rerun, on_progress=view.update)
    _finish(project, outcome, as_json)


@cli.command()
@click.argument("sweep_id", required=False)
@config_option
def cancel(sweep_id: str | None, config_path: Path | None) -> None:
    """Stop a running sweep (the latest if no ID is given): kill its tasks everywhere and
    record them as cancelled."""
    project = project_from(config_path, quiet=True)
    sweep = request_cancel(project, sweep_or_latest(project, sweep_id))
    click.echo(f"sweep {sweep.id}: {sweep.state.value}")


cli.add_command(distributed)
cli.add_command(report)
cli.add_command(results)


def debug_log_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hsm" / "debug.log"


def usage_message(exc: click.ClickException) -> str:
    """A usage error on one line, with where to find help."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        message += f" (see: {ctx.command_path} --help)"
    return message


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that nothing more fails on the closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main() -> None:
    """Entry point: run the CLI; a reader that closes stdout early (``| head``) is no error:
    exit 0 quietly, or with the command's own code if it had finished."""
    code: int | str | None = 0
    try:
        _main()
    except SystemExit as exc:
        code = exc.code
    except ClosedPipeError:
        _silence_stdout()
        sys.exit(0)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
    sys.exit(code)


def _main() -> None:
    """The one place where errors become messages and exit codes."""
    try:
        cli.main(prog_name="hsm", standalone_mode=False)
    except HsmError as exc:
        err_console.print(f"hsm: error: {exc.message}", markup=False, highlight=False)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(ExitCode.INTERRUPTED)
    except click.ClickException as exc:
        err_console.print(f"hsm: error: {usage_message(exc)}", markup=False, highlight=False)
        sys.exit(ExitCode.BAD_INPUT)
    except KeyboardInterrupt:
        sys.exit(ExitCode.INTERRUPTED)
    except (SystemExit, ClosedPipeError):
        raise
    except Exception as exc:  # noqa: BLE001 - the traceback goes to the debug log only
        path = debug_log_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.write(traceback.format_exc())
        except OSError:
            pass
        err_console.print(f"hsm: internal error: {exc!r}; details in {path}", markup=False)
        sys.exit(ExitCode.INTERNAL)
