"""The JSON object of a sweep, written task by task, is the same text as json.dumps."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from hsm.cli.render import write_summary_json
from hsm.engine.summary import summarize
from hsm.state import Store


def sweep_of(tmp_path: Path, params: list[dict[str, object]]) -> Store:
    store = Store.open(tmp_path / "hsm.db")
    store.create_sweep(
        sweep_id="s",
        spec_path="s.yaml",
        spec={},
        sweep_dir=str(tmp_path),
        project_root=str(tmp_path),
        sources=["local"],
        parallel=None,
        command_line="hsm run",
        params=params,
    )
    return store


@pytest.mark.parametrize("tasks", [0, 1, 3])
def test_streamed_json_is_the_same_text(tmp_path: Path, tasks: int) -> None:
    params = [{"a": i, "b": 'x "y" \u00e9 \n', "c": [1, {"d": None}]} for i in range(tasks)]
    store = sweep_of(tmp_path, params)
    summary = summarize(store, "s")
    out = io.StringIO()
    write_summary_json(summary, store, out)
    expected = (
        json.dumps({"hsm_json": 1, **summary.to_json(store)}, indent=2, ensure_ascii=False) + "\n"
    )
    assert out.getvalue() == expected
    assert [t["params"] for t in json.loads(out.getvalue())["tasks"]] == params


def test_non_finite_task_values_are_strict_json(tmp_path: Path) -> None:
    params: list[dict[str, object]] = [{"a": float("nan")}, {"a": float("inf")}, {"a": 1.5}]
    store = sweep_of(tmp_path, params)
    out = io.StringIO()
    write_summary_json(summarize(store, "s"), store, out)
    data = json.loads(out.getvalue(), parse_constant=pytest.fail)
    assert [t["params"]["a"] for t in data["tasks"]] == ["NaN", "Infinity", 1.5]


class Recorder(io.StringIO):
    """Counts the tasks each write holds, to see that text leaves before the last task
    is read."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[int] = []

    def write(self, text: str) -> int:
        self.writes.append(text.count('"number"'))
        return super().write(text)


def test_tasks_are_written_while_they_are_read(tmp_path: Path) -> None:
    params: list[dict[str, object]] = [{"a": "x" * 200, "i": i} for i in range(2000)]
    store = sweep_of(tmp_path, params)
    out = Recorder()
    write_summary_json(summarize(store, "s"), store, out)
    assert len(out.writes) > 1 and out.writes[0] < 2000
    assert sum(out.writes) == 2000
    assert [t["params"]["i"] for t in json.loads(out.getvalue())["tasks"]] == list(range(2000))
