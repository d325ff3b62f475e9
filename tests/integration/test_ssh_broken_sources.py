"""One broken source never stops the others: a host whose setup line fails is left out (and
disabled, with the reason) while the sweep goes on elsewhere; named alone it is exit 2 with
nothing written. A disabled source, or one removed from the config, never blocks a resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.hsmcli import Background, attempts, hsm, tasks, wait_for
from tests.integration.ssh_support import make_project, marks, remote
from tests.testbed import Host

pytestmark = [pytest.mark.root, pytest.mark.testbed, pytest.mark.timeout(240)]

BROKEN_SETUP = ["source /nonexistent/activate"]


def two_hosts(
    tmp_path: Path, hosts: list[Host], *, broken: bool, n: int = 4, sleep: float = 0.2
) -> Path:
    h1, h2 = hosts[:2]
    return make_project(
        tmp_path / "p",
        hosts,
        n=n,
        sleep=sleep,
        remotes={"h1": remote(h1, setup=BROKEN_SETUP if broken else []), "h2": remote(h2)},
    )


def set_remotes(root: Path, change: dict[str, object]) -> None:
    path = root / "hsm_config.yaml"
    data = yaml.safe_load(path.read_text())
    remotes = data["distributed"]["remotes"]
    for name, value in change.items():
        if value is None:
            del remotes[name]
        else:
            remotes[name] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_a_failing_setup_line_leaves_its_host_out_and_the_sweep_goes_on(
    tmp_path: Path, testbed_hosts: list[Host]
) -> None:
    root = two_hosts(tmp_path, testbed_hosts, broken=True)
    result = hsm("run", "sweep.yaml", "--distributed", "--json", cwd=root)
    assert result.returncode == 0, result
    data = json.loads(result.stdout)
    assert data["state"] == "completed"
    assert {t["source"] for t in data["tasks"]} == {"h2"}
    h1 = data["sources"]["h1"]
    assert h1["enabled"] is False and "setup line" in h1["disabled_reason"], h1
    assert "/nonexistent/activate" in h1["disabled_reason"]
    assert "going on with the other sources" in result.stderr
    listed = hsm("distributed", "list", "--json", cwd=root)
    by_name = {s["name"]: s for s in json.loads(listed.stdout)["sources"]}
    assert by_name["h1"]["enabled"] is False
    assert not marks(testbed_hosts[:1])  # nothing ran on h1


def test_the_broken_host_named_alone_is_exit_2_and_nothing_is_recorded(
    tmp_path: Path, testbed_hosts: list[Host]
) -> None:
    root = two_hosts(tmp_path, testbed_hosts, broken=True)
    result = hsm("run", "sweep.yaml", "--source", "h1", "--name", "alone", cwd=root)
    assert result.returncode == 2, result
    assert result.stderr.count("hsm: error:") == 1, result
    assert "setup line" in result.stderr and "/nonexistent/activate" in result.stderr
    assert not (root / "runs" / "alone").exists()
    listed = hsm("list", "--json", cwd=root)
    assert json.loads(listed.stdout)["sweeps"] == []  # not recorded, so not "aborted"
    status = hsm("distributed", "list", "--json", cwd=root)
    by_name = {s["name"]: s for s in json.loads(status.stdout)["sources"]}
    assert by_name["h1"]["enabled"] is True  # the user's one choice is not disabled


def test_resume_after_disabling_or_removing_a_source(
    tmp_path: Path, testbed_hosts: list[Host]
) -> None:
    h1, h2 = testbed_hosts[:2]
    root = two_hosts(tmp_path, testbed_hosts, broken=False, n=4, sleep=30)
    # Kill the controller while tasks run on both hosts.
    with Background("run", "sweep.yaml", "--distributed", "--name", "mixed", cwd=root) as bg:
        wait_for(
            lambda: (
                (root / ".hsm" / "hsm.db").exists()
                and {a.source for a in attempts(root, "mixed") if a.state == "running"}
                == {"h1", "h2"}
            ),
            timeout=60,
            what="tasks running on h1 and h2",
        )
        bg.kill()
    on_h1 = sorted(
        a.number for a in attempts(root, "mixed") if a.source == "h1" and a.state == "running"
    )
    # Disabled: the tasks that run on h1 are collected there; new ones go to h2 only.
    assert hsm("distributed", "disable", "h1", cwd=root).returncode == 0
    for path in (h1.disk_dir / "marks").glob("task_*"):
        path.unlink()
    # Removed from the config: its tasks go back to the queue and run on h2.
    set_remotes(root, {"h1": None})
    result = hsm("resume", "mixed", "--json", cwd=root, timeout=200)
    assert result.returncode == 0, result
    data = json.loads(result.stdout)
    assert data["state"] == "completed"
    by_number = {t["number"]: t for t in data["tasks"]}
    for number in on_h1:
        assert by_number[number]["source"] == "h2", by_number[number]
    assert "source h1 is no longer in" in result.stderr
    lost = [a for a in attempts(root, "mixed") if a.source == "h1"]
    assert lost and all(a.state == "lost" and a.handle for a in lost)
    assert [t.status for t in tasks(root, "mixed")] == ["completed"] * 4
    assert {h for _, _, h in [m for ms in marks([h2]).values() for m in ms]} == {h2.name}


def test_retry_failed_after_disabling_the_source(tmp_path: Path, testbed_hosts: list[Host]) -> None:
    root = two_hosts(tmp_path, testbed_hosts, broken=False, n=2)
    sweep = yaml.safe_load((root / "sweep.yaml").read_text())
    sweep["sweep"] = {"paired": [{"i": [1, 2], "exit": [0, 3]}]}
    (root / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    first = hsm("run", "sweep.yaml", "--distributed", "--name", "f", cwd=root)
    assert first.returncode == 1, first
    assert hsm("distributed", "disable", "h1", cwd=root).returncode == 0
    again = hsm("resume", "f", "--retry-failed", "--json", cwd=root)
    assert again.returncode == 1, again  # the task fails again, on h2 alone: not exit 2
    rerun = [a for a in attempts(root, "f") if a.number == 2][-1]
    assert rerun.source == "h2"
    # With enabled: false in the config it is the same.
    set_remotes(root, {"h1": {**remote(testbed_hosts[0]), "enabled": False}})
    assert hsm("distributed", "enable", "h1", cwd=root).returncode == 0
    third = hsm("resume", "f", "--retry-failed", cwd=root)
    assert third.returncode == 1, third
    assert [a.source for a in attempts(root, "f") if a.number == 2][-1] == "h2"
    assert "source h1 is disabled (enabled: false" in third.stderr
    # Named alone and disabled: exit 2.
    assert hsm("distributed", "disable", "h1", cwd=root).returncode == 0
    named = hsm("resume", "f", "--retry-failed", "--source", "h1", cwd=root)
    assert named.returncode == 2, named
    assert "hsm distributed enable h1" in named.stderr
