"""Options and helpers shared by the CLI's commands."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from hsm.engine.service import Project, open_project

log = logging.getLogger("hsm.cli")

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Project config file (default: hsm_config.yaml here or in a parent folder).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


def project_from(config_path: Path | None, *, quiet: bool = False) -> Project:
    project = open_project(config_path)
    if not quiet:
        announce_defaults(project)
    return project


def announce_defaults(project: Project) -> None:
    """Say so when no project config was found and the defaults apply."""
    if project.loaded.path is None:
        log.info("no hsm_config.yaml found in %s or above; using the defaults", Path.cwd())
