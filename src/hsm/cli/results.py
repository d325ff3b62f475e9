"""``hsm results [ID]``: the table of parameters against metrics, one row per task."""

from __future__ import annotations

import csv
import importlib
import io
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from hsm.cli.common import config_option, project_from
from hsm.cli.render import dumps, json_text, out_console
from hsm.cli.report import write_atomically
from hsm.engine.listing import project_results
from hsm.engine.results import ResultTable
from hsm.errors import ConfigError, StateError

FORMATS = ("table", "csv", "json", "parquet")


@click.command()
@click.argument("sweep_id", required=False)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    help="Output format (parquet needs pyarrow and -o).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Write to this file instead of standard output.",
)
@click.option("--sort", default=None, metavar="KEY", help="Sort by a column; -KEY: descending.")
@click.option(
    "--where",
    multiple=True,
    metavar="EXPR",
    help="Keep rows matching KEY=V, KEY!=V, KEY>N, KEY<N, KEY>=N, KEY<=N "
    "(repeatable; all must hold).",
)
@config_option
def results(
    sweep_id: str | None,
    fmt: str,
    output: Path | None,
    sort: str | None,
    where: tuple[str, ...],
    config_path: Path | None,
) -> None:
    """One row per task of SWEEP_ID (default: the latest sweep): number, status, cause,
    source, duration, the parameters and the metrics. Works while the sweep runs."""
    if fmt == "parquet" and output is None:
        raise ConfigError("--format parquet: give the file to write with -o FILE")
    project = project_from(config_path, quiet=True)
    table = project_results(project, sweep_id, where=where, sort=sort)
    if fmt == "parquet":
        assert output is not None
        write_parquet(table, output)
    elif fmt == "table" and output is None and sys.stdout.isatty():
        out_console.print(rich_table(table))  # a terminal: its width, long values folded
    else:
        text = {"csv": to_csv, "json": to_json, "table": to_text}[fmt](table)
        if output is None:
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            write_atomically(output, text)
    if output is not None:
        click.echo(f"wrote {output}", err=True)


def cell(value: Any, column: str = "") -> str:
    if value is None:
        return "" if column != "duration" else "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.2f}" if column == "duration" else f"{value:.6g}"
    return str(value)


def rich_table(table: ResultTable) -> Table:
    out = Table(title=f"results of {table.sweep_id} ({len(table.rows)} tasks)")
    for column in table.columns:
        out.add_column(
            column,
            justify="right" if column in ("number", "duration") else "left",
            overflow="fold",
            min_width=min(len(column), 12),
        )
    for record in table.records():
        out.add_row(*(cell(record.get(c), c) for c in table.columns))
    return out


def to_text(table: ResultTable) -> str:
    buffer = io.StringIO()
    from rich.console import Console

    Console(file=buffer, width=10_000, no_color=True).print(rich_table(table))
    return buffer.getvalue()


def to_csv(table: ResultTable) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.columns)
    for record in table.records():
        writer.writerow([_csv_cell(record.get(c)) for c in table.columns])
    return buffer.getvalue()


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return dumps(value)
    return str(value)


def to_json(table: ResultTable) -> str:
    return json_text(
        {"sweep_id": table.sweep_id, "columns": table.columns, "rows": table.records()}
    )


def write_parquet(table: ResultTable, path: Path) -> None:
    try:
        pa = importlib.import_module("pyarrow")
        pq = importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise ConfigError(
            "--format parquet needs pyarrow: pip install 'hsm[parquet]' (or use --format csv)"
        ) from None
    columns: dict[str, list[Any]] = {c: [] for c in table.columns}
    for record in table.records():
        for c in table.columns:
            columns[c].append(_parquet_cell(record.get(c)))
    try:
        pq.write_table(pa.table(columns), str(path))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # A column mixing types (e.g. a metric that is a number here and a string there).
        as_text = {
            c: [None if v is None else _csv_cell(v) for v in vs] for c, vs in columns.items()
        }
        pq.write_table(pa.table(as_text), str(path))
    except OSError as exc:
        raise StateError(f"{path}: cannot write: {exc}") from None


def _parquet_cell(value: Any) -> Any:
    return dumps(value) if isinstance(value, (list, dict)) else value
