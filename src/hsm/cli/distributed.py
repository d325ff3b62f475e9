"""``hsm distributed ...``: sources, their health, and the disabled set."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from hsm.cli.common import config_option, json_option, project_from
from hsm.cli.render import out_console, print_json, write_json_line
from hsm.engine.health import DiskStatus, HealthStatus, percent_free
from hsm.engine.listing import list_sources
from hsm.errors import UnknownSourceError
from hsm.sources.registry import known_sources

if TYPE_CHECKING:
    from hsm.engine.healthcheck import SourceHealth


@click.group()
def distributed() -> None:
    """Sources: health, list, enable, disable."""


def _check_names(known: list[str], names: tuple[str, ...]) -> None:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UnknownSourceError(
            f"unknown source {unknown[0]!r}; known sources: {', '.join(known)}"
        )


@distributed.command("list")
@json_option
@config_option
def list_(as_json: bool, config_path: Path | None) -> None:
    """Every source, enabled or disabled, and why."""
    rows = list_sources(project_from(config_path, quiet=True))
    if as_json:
        print_json({"sources": [r.to_json() for r in rows]})
        return
    for r in rows:
        state = "enabled" if r.enabled else f"disabled: {r.disabled_reason}"
        out_console.print(f"{r.name:<16} {r.kind:<6} {state}", markup=False)


@distributed.command()
@click.argument("name")
@config_option
def enable(name: str, config_path: Path | None) -> None:
    """Re-enable NAME: remove it from the disabled set (a running sweep picks it up)."""
    project = project_from(config_path, quiet=True)
    _check_names(known_sources(project.loaded), (name,))
    store = project.open_store(create=True)
    store.set_source_enabled(name, True, reason="enabled by hsm distributed enable")
    click.echo(f"source {name!r} enabled")


@distributed.command()
@click.argument("name")
@click.option("--reason", default="disabled by hsm distributed disable", help="Why.")
@config_option
def disable(name: str, reason: str, config_path: Path | None) -> None:
    """Disable NAME: no new tasks go there (running ones finish)."""
    project = project_from(config_path, quiet=True)
    _check_names(known_sources(project.loaded), (name,))
    store = project.open_store(create=True)
    store.set_source_enabled(name, False, reason=reason)
    click.echo(f"source {name!r} disabled: {reason}")


SPARKS = "▁▂▃▄▅▆▇█"
STATUS_STYLE = {
    HealthStatus.HEALTHY: "green",
    HealthStatus.DEGRADED: "yellow",
    HealthStatus.UNHEALTHY: "red",
}
DISK_STYLE = {DiskStatus.HEALTHY: "green", DiskStatus.WARNING: "yellow", DiskStatus.CRITICAL: "red"}


def sparkline(values: list[int]) -> str:
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = hi - lo
    return "".join(
        SPARKS[0 if span == 0 else int((v - lo) / span * (len(SPARKS) - 1))] for v in values
    )


def health_table(rows: list[SourceHealth]) -> Table:
    table = Table(title=f"source health — {time.strftime('%Y-%m-%d %H:%M:%S')}")
    for col in ("Source", "Status", "Disk Space", "System", "Failure Rate", "Disk trend", "Notes"):
        table.add_column(col)
    for r in rows:
        s, v = r.sample, r.verdict
        status = f"[{STATUS_STYLE[v.status]}]{v.status.value}[/]"
        if not r.source.enabled:
            status += "\n[red]disabled[/]"
        if s.free_bytes is not None and s.total_bytes is not None and v.disk_status:
            disk = (
                f"{s.free_bytes / 1e9:.1f} GB free "
                f"({percent_free(s.free_bytes, s.total_bytes):.0f}%)\n"
                f"[{DISK_STYLE[v.disk_status]}]{v.disk_status.value}[/]"
            )
        else:
            disk = "-"
        system = "-"
        if s.load1 is not None:
            system = f"load {s.load1:.2f} / {s.cores} cores"
            if s.memory_percent is not None:
                system += f"\nmemory {s.memory_percent:.0f}%"
        rate = f"{r.failure_rate:.0%} ({r.failed}/{r.finished})" if r.finished else "-"
        notes = [escape(x) for x in v.reasons]
        if not r.source.enabled and r.source.disabled_reason:
            notes.append(escape(f"disabled: {r.source.disabled_reason}"))
        if r.consecutive_failures:
            notes.append(f"{r.consecutive_failures} failed check(s) in a row")
        if r.running:
            notes.append(f"{r.running} task(s) running")
        table.add_row(r.name, status, disk, system, rate, sparkline(r.trend), "\n".join(notes))
    return table


@distributed.command()
@click.argument("names", nargs=-1)
@click.option("--all", "all_sources", is_flag=True, help="Every source (the default).")
@click.option("--watch", is_flag=True, help="Redraw every --refresh seconds until Ctrl-C.")
@click.option(
    "--refresh",
    type=click.FloatRange(min=0.2),
    default=10.0,
    show_default=True,
    help="Seconds between redraws with --watch.",
)
@json_option
@config_option
def health(
    names: tuple[str, ...],
    all_sources: bool,
    watch: bool,
    refresh: float,
    as_json: bool,
    config_path: Path | None,
) -> None:
    """Probe sources now: disk, load, memory, failure rate and overall status.

    Exits 1 when any source asked for is unhealthy, so it can gate a sweep.
    """
    from hsm.engine.healthcheck import check_health

    project = project_from(config_path, quiet=True)
    known = known_sources(project.loaded)
    _check_names(known, names)
    chosen = list(dict.fromkeys(names)) if names and not all_sources else known

    if not watch:
        rows = check_health(project, chosen)
        if as_json:
            print_json({"sources": [r.to_json() for r in rows]})
        else:
            out_console.print(health_table(rows))
        sys.exit(1 if any(r.unhealthy for r in rows) else 0)
    try:
        if as_json:
            while True:
                rows = check_health(project, chosen)
                write_json_line({"time": time.time(), "sources": [r.to_json() for r in rows]})
                time.sleep(refresh)
        with Live(
            health_table(check_health(project, chosen)),
            console=out_console,
            auto_refresh=False,
            screen=False,
        ) as live:
            while True:
                time.sleep(refresh)
                live.update(health_table(check_health(project, chosen)), refresh=True)
    except KeyboardInterrupt:
        sys.exit(0)
