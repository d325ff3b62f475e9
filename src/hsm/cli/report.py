"""``hsm report ID [-o FILE]``: one self-contained HTML file about a sweep."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import click

from hsm.cli.common import config_option, project_from
from hsm.engine.listing import sweep_or_latest
from hsm.errors import StateError

REPORT_FILE = "report.html"


@click.command()
@click.argument("sweep_id", required=False)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, allow_dash=True),
    default=None,
    help=f"Write the report here ('-' for stdout; default: <sweep folder>/{REPORT_FILE}).",
)
@config_option
def report(sweep_id: str | None, output: Path | None, config_path: Path | None) -> None:
    """Write an HTML report of SWEEP_ID (the latest if none is given): timeline, source
    health, failures, metrics.

    The file needs no network: open it anywhere, or attach it to a message. It works
    while the sweep runs (it shows the state so far).
    """
    from hsm.report.data import build_report
    from hsm.report.render import render_html

    project = project_from(config_path, quiet=True)
    sweep_id = sweep_or_latest(project, sweep_id)
    store = project.open_store()
    try:
        model = build_report(
            store,
            sweep_id,
            health=project.loaded.config.health,
            metrics_file=project.loaded.config.results.metrics_file,
        )
    finally:
        store.close()
    page = render_html(model)
    if output is not None and str(output) == "-":
        sys.stdout.write(page)
        sys.stdout.flush()
        return
    path = output if output is not None else Path(model.sweep.sweep_dir) / REPORT_FILE
    write_atomically(path, page)
    click.echo(f"wrote {path}")


def write_atomically(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (a reader never sees half a report)."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    except OSError as exc:
        raise StateError(f"{path}: cannot write the report: {exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StateError(f"{path}: cannot write the report: {exc}") from None
