"""``hsm distributed ...``: sources, their health, and the disabled set."""

from __future__ import annotations

from pathlib import Path

import click

from hsm.cli.common import config_option, json_option, project_from
from hsm.cli.render import out_console, print_json
from hsm.errors import UnknownSourceError
from hsm.sources.registry import known_sources


@click.group()
def distributed() -> None:
    """Sources: health, list, enable, disable."""


def _check_names(known: list[str], names: tuple[str, ...]) -> None:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UnknownSourceError(
            f"unknown source {unknown[0]!r}; known sources: {', '.join(known)}")


@distributed.command("list")
@json_option
@config_option
def list_sources(as_json: bool, config_path: Path | None) -> None:
    """Every source, enabled or disabled, and why."""
    project = project_from(config_path, quiet=True)
    names = known_sources(project.loaded)
    store = project.open_store(create=True) if project.has_state() else None
    rows = []
    for name in names:
        row = store.source(name) if store else None
        configured = True if name == "local" else \
            project.loaded.config.distributed.remotes[name].enabled
        enabled = configured and (row.enabled if row else True)
        reason = row.disabled_reason if row and not row.enabled else (
            None if configured else "enabled: false in the config")
        kind = "local" if name == "local" else \
            project.loaded.config.distributed.remotes[name].type
        rows.append({"name": name, "type": kind, "enabled": enabled, "disabled_reason": reason,
                     "disabled_at": row.disabled_at if row and not row.enabled else None})
    if as_json:
        print_json({"sources": rows})
        return
    for r in rows:
        state = "enabled" if r["enabled"] else f"disabled: {r['disabled_reason']}"
        out_console.print(f"{r['name']:<16} {r['type']:<6} {state}", markup=False)


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
