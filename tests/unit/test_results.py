"""Results as a table: where metrics come from, --where and --sort."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hsm.engine.results import ResultRow, parse_where, sort_rows
from hsm.errors import ConfigError
from hsm.report.files import last_json_line, task_metrics


def test_metrics_json_then_the_last_json_line_of_stdout(tmp_path: Path) -> None:
    (tmp_path / "stdout.log").write_text(
        'epoch 1\n{"loss": 2}\n{"loss": 1, "m": {"f1": 0.5}}\n{not json}\n[1, 2]\ndone\n'
    )
    assert task_metrics(tmp_path) == {"loss": 1, "m.f1": 0.5}
    (tmp_path / "metrics.json").write_text(json.dumps({"loss": 0.1}))
    assert task_metrics(tmp_path) == {"loss": 0.1}
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "scores.json").write_text('{"acc": 0.9}')
    assert task_metrics(tmp_path, "eval/scores.json") == {"acc": 0.9}
    # A configured file that is missing falls back to stdout, not to metrics.json.
    assert task_metrics(tmp_path, "missing.json") == {"loss": 1, "m.f1": 0.5}


def test_no_metrics_anywhere(tmp_path: Path) -> None:
    assert task_metrics(tmp_path) is None
    (tmp_path / "stdout.log").write_bytes(b"\xff\xfe no json\n")
    assert last_json_line(tmp_path / "stdout.log") is None


COLUMNS = ["number", "status", "cause", "source", "duration", "lr", "name", "loss"]


def row(number: int, **values: object) -> dict[str, object]:
    return {"number": number, **values}


@pytest.mark.parametrize(
    ("expr", "matches"),
    [
        ("lr>0.001", [2, 3]),
        ("lr >= 0.001", [1, 2, 3]),
        ("lr<=0.001", [1]),
        ("name=big one", [2]),
        ("name!=big one", [1, 3, 4]),
        ("status=completed", [1, 2]),
        ("cause=null", [1, 2, 3, 4]),
        ("loss==1", [3]),
    ],
)
def test_where(expr: str, matches: list[int]) -> None:
    rows = [
        row(1, lr=0.001, name="small", status="completed", cause=None),
        row(2, lr=0.01, name="big one", status="completed", cause=None),
        row(3, lr=0.1, status="failed", loss=1.0, cause=None),
        row(4, lr="n/a", status="running", cause=None),
    ]
    test = parse_where(expr, COLUMNS)
    assert [r["number"] for r in rows if test(r)] == matches


@pytest.mark.parametrize(
    ("expr", "part"),
    [
        ("lr", "expected KEY=VALUE"),
        ("lr>", "expected KEY=VALUE"),
        ("=3", "expected"),
        ("lrr>1", "did you mean 'lr'"),
        ("name>abc", "needs a number"),
    ],
)
def test_bad_where(expr: str, part: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_where(expr, COLUMNS)
    assert part in info.value.message and expr in info.value.message


def test_sort_puts_missing_values_last_both_ways() -> None:
    rows = [
        ResultRow(
            number=n,
            status="completed",
            cause=None,
            source="local",
            duration=None,
            metrics={} if loss is None else {"loss": loss},
        )
        for n, loss in [(1, 3.0), (2, None), (3, 1.0), (4, float("nan")), (5, 2)]
    ]
    assert [r.number for r in sort_rows(rows, "loss", COLUMNS)] == [3, 5, 1, 2, 4]
    assert [r.number for r in sort_rows(rows, "-loss", COLUMNS)] == [1, 5, 3, 2, 4]
    with pytest.raises(ConfigError):
        sort_rows(rows, "los", COLUMNS)
