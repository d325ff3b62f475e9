"""The typed rows of hsm list, hsm distributed list and hsm distributed health: read from
the config and a real state file."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from hsm.engine.health import HealthStatus, classify
from hsm.engine.healthcheck import check_health
from hsm.engine.listing import (
    CONFIG_DISABLED,
    SourceListing,
    list_sources,
    list_sweeps,
    source_listing,
    sweep_or_latest,
)
from hsm.engine.service import Project, open_project
from hsm.errors import ExitCode, StateError
from hsm.sources.base import HealthSample
from hsm.states import SweepState, TaskStatus
from tests.hsmcli import TEST_CONFIG, make_project

# Three remotes (never reached: nothing here probes them), one off in the config.
REMOTES = """\
  remotes:
    gpu-box:
      host: gpu-box.example
    retired:
      host: retired.example
      enabled: false
    cluster:
      type: slurm
      host: login.example
"""


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return open_project(None, cwd=make_project(tmp_path, config=TEST_CONFIG + REMOTES))


def test_sources_without_state_are_as_the_config_says(project: Project) -> None:
    assert not project.has_state()
    assert list_sources(project) == [
        SourceListing("local", "local", True, None, None),
        SourceListing("gpu-box", "ssh", True, None, None),
        SourceListing("retired", "ssh", False, CONFIG_DISABLED, None),
        SourceListing("cluster", "slurm", True, None, None),
    ]
    assert not project.has_state()  # listing writes nothing


def test_the_disabled_set_comes_before_the_config(project: Project) -> None:
    before = time.time()
    store = project.open_store(create=True)
    store.set_source_enabled("gpu-box", False, reason="disk swap")
    store.set_source_enabled("retired", False, reason="broken fan")
    store.set_source_enabled("cluster", False, reason="maintenance")
    store.set_source_enabled("cluster", True, reason="back")
    store.close()
    after = time.time()
    rows = {r.name: r for r in list_sources(project)}
    for name, reason in (("gpu-box", "disk swap"), ("retired", "broken fan")):
        row = rows[name]
        assert (row.enabled, row.disabled_reason) == (False, reason)
        assert row.disabled_at is not None and before <= row.disabled_at <= after
    assert rows["cluster"] == SourceListing("cluster", "slurm", True, None, None)
    assert rows["local"].enabled
    assert rows["gpu-box"].to_json() == {
        "name": "gpu-box",
        "type": "ssh",
        "enabled": False,
        "disabled_reason": "disk swap",
        "disabled_at": rows["gpu-box"].disabled_at,
    }


def test_a_source_enabled_again_in_the_state_stays_off_by_the_config(project: Project) -> None:
    store = project.open_store(create=True)
    store.set_source_enabled("retired", False, reason="broken fan")
    store.set_source_enabled("retired", True, reason="fixed")
    row = store.source("retired")
    store.close()
    assert source_listing(project, "retired", row) == SourceListing(
        "retired", "ssh", False, CONFIG_DISABLED, None
    )


def test_health_rows_carry_the_same_listing(project: Project) -> None:
    store = project.open_store(create=True)
    store.set_source_enabled("local", False, reason="cooling")
    store.close()
    [row] = check_health(project, ["local"])
    assert row.name == "local"
    assert row.source == list_sources(project)[0]
    assert row.source.disabled_reason == "cooling"
    # No disk or load limit to cross here (the config's limits are 0 and 1000).
    assert row.verdict.status is not HealthStatus.UNHEALTHY and not row.unhealthy
    data = row.to_json()
    assert (data["name"], data["enabled"], data["disabled_reason"]) == ("local", False, "cooling")
    assert data["status"] == row.verdict.status.value

    gone = replace(
        row, verdict=classify(HealthSample(reachable=False), project.loaded.config.health)
    )
    assert gone.unhealthy and gone.to_json()["status"] == "unhealthy"


def record(project: Project, *sweeps: tuple[str, int]) -> None:
    """Record sweeps (ID, number of tasks) in the state, oldest first."""
    store = project.open_store(create=True)
    for sweep_id, tasks in sweeps:
        store.create_sweep(
            sweep_id=sweep_id,
            spec_path="s.yaml",
            spec={},
            sweep_dir=str(project.output_dir / sweep_id),
            project_root=str(project.root),
            sources=["local"],
            parallel=None,
            command_line="hsm run",
            params=[{"a": i} for i in range(tasks)],
        )
    store.close()


def test_sweeps_newest_first_with_every_status_counted(project: Project) -> None:
    assert list_sweeps(project) == []
    record(project, ("old", 2), ("new", 3))
    store = project.open_store()
    store.set_sweep_state("old", SweepState.COMPLETED)
    store.close()
    rows = list_sweeps(project)
    assert [r.sweep.id for r in rows] == ["new", "old"]
    assert rows[0].counts == {**dict.fromkeys(TaskStatus, 0), TaskStatus.PENDING: 3}
    assert rows[0].total == 3
    data = rows[1].to_json()
    assert data == {
        "sweep_id": "old",
        "state": "completed",
        "created": rows[1].sweep.created,
        "total": 2,
        "counts": {"pending": 2, "running": 0, "completed": 0, "failed": 0, "cancelled": 0},
        "sweep_dir": str(project.output_dir / "old"),
    }
    assert list(data["counts"]) == [s.value for s in TaskStatus]
    assert [r.sweep.id for r in list_sweeps(project, limit=1)] == ["new"]


def test_the_sweep_a_command_is_about(project: Project) -> None:
    for sweep_id, words in ((None, "start one with: hsm run"), ("nope", "unknown sweep ID 'nope'")):
        with pytest.raises(StateError, match=words) as raised:
            sweep_or_latest(project, sweep_id)
        assert raised.value.exit_code == ExitCode.BAD_INPUT
    project.open_store(create=True).close()  # a state file without sweeps
    with pytest.raises(StateError, match="no sweep has run"):
        sweep_or_latest(project, None)
    record(project, ("old", 1), ("new", 1))
    assert sweep_or_latest(project, None) == "new"
    assert sweep_or_latest(project, "old") == "old"
