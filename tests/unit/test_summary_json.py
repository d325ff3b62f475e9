"""The JSON object of a sweep, written task by task, is the same text as json.dumps."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from hsm.cli.render import write_summary_json
from hsm.engine.summary import summarize
from hsm.state import Store


@pytest.mark.parametrize("tasks", [0, 1, 3])
def test_streamed_json_is_the_same_text(tmp_path: Path, tasks: int) -> None:
    store = Store.open(tmp_path / "hsm.db")
    params = [{"a": i, "b": 'x "y" \u00e9 \n', "c": [1, {"d": None}]} for i in range(tasks)]
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
    summary = summarize(store, "s")
    out = io.StringIO()
    write_summary_json(summary, store, out)
    expected = json.dumps(summary.to_json(store), indent=2, ensure_ascii=False) + "\n"
    assert out.getvalue() == expected
    assert [t["params"] for t in json.loads(out.getvalue())["tasks"]] == params
