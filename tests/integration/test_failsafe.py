"""The failsafe on the real SSH test bed: failure rate, broken scripts, health checks, disk,
lost hosts, overload, re-enable and resume."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hsm.states import AttemptState
from tests.hsmcli import (
    attempts,
    hsm,
    hsm_background,
    latest_sweep,
    open_store,
    outputs,
    status_json,
    sweep_log,
    wait_for,
)
from tests.integration.ssh_support import bed_project, script_sweep
from tests.testbed import Host

# Fails on a host that carries /srv/hsm/FAIL_HERE; otherwise sleeps a little and succeeds.
FLAKY_HOST = """
import os, sys, time
time.sleep(0.2)
if os.path.exists("/srv/hsm/FAIL_HERE"):
    print("this host is broken", file=sys.stderr)
    sys.exit(1)
"""


def test_failing_host_is_disabled_by_failure_rate(
    tmp_path: Path, testbed_hosts: list[Host]
) -> None:
    root = bed_project(tmp_path, testbed_hosts)
    testbed_hosts[0].run(["touch", "/srv/hsm/FAIL_HERE"])
    sweep = script_sweep(root, FLAKY_HOST, 24)
    result = hsm("run", sweep, "--distributed", "--json", cwd=root, timeout=180)
    assert result.returncode == 0, result
    data = result.json()
    assert data["counts"]["completed"] == 24
    line = re.search(
        r"ERROR Disabling source 'h1' due to high failure rate: "
        r"(\d+)/(\d+) \((\d+)%\) >= 40%",
        result.stderr,
    )
    assert line, result.stderr
    failed, finished, pct = map(int, line.groups())
    assert finished >= 5 and failed / finished >= 0.4 and pct == round(100 * failed / finished)
    assert data["sources"]["h1"]["enabled"] is False
    assert "high failure rate" in data["sources"]["h1"]["disabled_reason"]
    assert data["sources"]["h2"]["enabled"] and data["sources"]["h3"]["enabled"]
    assert data["sources"]["h2"]["failed"] == 0 and data["sources"]["h3"]["failed"] == 0
    listed = hsm("distributed", "list", "--json", cwd=root).json()["sources"]
    assert [s["enabled"] for s in listed if s["name"] == "h1"] == [False]
    # Re-enable: the disabled set shrinks, and it is logged and persisted.
    assert hsm("distributed", "enable", "h1", cwd=root).returncode == 0
    listed = hsm("distributed", "list", "--json", cwd=root).json()["sources"]
    assert [s["enabled"] for s in listed if s["name"] == "h1"] == [True]


def test_script_failing_everywhere_stops_early(tmp_path: Path, testbed_hosts: list[Host]) -> None:
    root = bed_project(tmp_path, testbed_hosts)
    sweep = script_sweep(
        root,
        "import sys\nprint('NameError: name lr is not defined', file=sys.stderr)\nsys.exit(2)\n",
        40,
    )
    started = time.monotonic()
    result = hsm("run", sweep, "--distributed", cwd=root, timeout=120)
    assert result.returncode == 3, result
    assert "the script itself fails" in result.stderr
    assert "NameError: name lr is not defined" in result.stderr
    assert "Disabling source" not in result.stderr
    data = status_json(root)
    assert data["state"] == "aborted"
    assert data["counts"]["pending"] > 0  # it stopped early instead of running all 40
    assert all(s["enabled"] for s in data["sources"].values())
    assert time.monotonic() - started < 60


# Sleeps, then writes which attempt of which task it is into result.txt in its task folder.
RECORDS_ITS_ATTEMPT = """
import os, time
time.sleep(1.5)
with open(os.path.join(os.environ["HSM_TASK_DIR"], "result.txt"), "w") as f:
    f.write(f"{os.environ['HSM_TASK_NUMBER']} {os.environ['HSM_ATTEMPT']}\\n")
"""


def assert_completed_exactly_once(root: Path, data: dict[str, Any]) -> None:
    """Every task of the sweep has exactly one completed attempt in the state, and the files
    its task folder holds were written by that attempt."""
    rows = attempts(root, data["sweep_id"])
    completed = Counter(a.number for a in rows if a.state is AttemptState.COMPLETED)
    numbers = [t["number"] for t in data["tasks"]]
    assert {n: completed[n] for n in numbers} == dict.fromkeys(numbers, 1), rows
    for task in data["tasks"]:
        [winner] = [
            a for a in rows if a.number == task["number"] and a.state is AttemptState.COMPLETED
        ]
        folder = Path(task["task_dir"])
        status = json.loads((folder / "status.json").read_text())
        assert (status["status"], status["attempt"], status["nonce"]) == (
            "completed",
            winner.attempt,
            winner.nonce,
        ), (task, winner)
        assert (folder / "result.txt").read_text() == f"{task['number']} {winner.attempt}\n"


def test_unreachable_hosts_are_disabled_and_work_moves(
    tmp_path: Path, testbed_hosts: list[Host]
) -> None:
    root = bed_project(tmp_path, testbed_hosts)
    sweep = script_sweep(root, RECORDS_ITS_ATTEMPT, 18)
    h1, h2, _ = testbed_hosts
    with hsm_background("run", sweep, "--distributed", cwd=root) as proc:
        wait_for(
            lambda: (root / "runs").exists() and list((root / "runs").glob("*/hsm.log")),
            what="the sweep to start",
        )
        log_path = next((root / "runs").glob("*/hsm.log"))
        wait_for(lambda: "Health check passed for h1" in log_path.read_text(), timeout=30)
        h1.cut_link()
        h2.freeze_sshd(sessions=True)
        assert proc.wait(timeout=150) == 0, outputs(root)
    _, err = outputs(root)
    for name in ("h1", "h2"):
        assert (
            f"ERROR Disabling source '{name}' due to 3 consecutive health check failures" in err
        ), err
    data = status_json(root)
    assert data["counts"]["completed"] == 18
    assert not data["sources"]["h1"]["enabled"] and not data["sources"]["h2"]["enabled"]
    assert all(t["status"] == "completed" for t in data["tasks"])
    assert_completed_exactly_once(root, data)


def sweep_state(root: Path) -> str | None:
    sweep_id = latest_sweep(root)
    if sweep_id is None:
        return None
    with open_store(root) as store:
        return store.sweep(sweep_id).state.value


def diagnostics(root: Path) -> str:
    """Where a sweep stands: its tasks by status and cause, its attempts by source and state,
    and the end of the controller's output."""
    lines = []
    sweep_id = latest_sweep(root)
    if sweep_id is not None:
        with open_store(root) as store:
            lines.append(f"sweep state: {store.sweep(sweep_id).state}")
            tasks = Counter((t.status.value, t.cause) for t in store.tasks(sweep_id))
            lines.append(f"tasks: {sorted(tasks.items(), key=repr)}")
            tried = Counter((a.source, a.state.value, a.cause) for a in store.attempts(sweep_id))
            lines.append(f"attempts: {sorted(tried.items(), key=repr)}")
            sources = [
                (r.name, r.enabled, r.disabled_reason, r.last_status)
                for r in store.enabled_states().values()
            ]
            lines.append(f"sources: {sources}")
    out, err = outputs(root)
    lines.append("--- stderr (end)\n" + "\n".join(err.splitlines()[-40:]))
    return "\n".join(lines)


def test_disk_exhaustion_kills_flags_and_moves_work(
    tmp_path: Path, testbed_hosts: list[Host]
) -> None:
    root = bed_project(tmp_path, testbed_hosts)
    sweep = script_sweep(root, "import time\ntime.sleep(2.0)\n", 14)
    h2 = testbed_hosts[1]
    with hsm_background("run", sweep, "--distributed", cwd=root) as proc:
        wait_for(
            lambda: list(h2.disk_dir.glob("*/sweeps/*/*/task_*/status.json")),
            what="a task running on h2",
            timeout=60,
        )
        h2.fill_disk(leave_bytes=2_000_000)
        # Wait on the sweep's state, not on a fixed time; on a timeout, say where it was.
        wait_for(
            lambda: proc.poll() is not None or sweep_state(root) not in (None, "running"),
            what="the sweep to end",
            timeout=240,
            interval=0.5,
            on_timeout=lambda: diagnostics(root),
        )
        assert proc.wait(timeout=60) == 0, outputs(root)
    _, err = outputs(root)
    assert re.search(
        r"CRITICAL CRITICAL: h2 has critical disk space shortage: "
        r"Critical: \d+\.\dGB \(\d+%\) free",
        err,
    ), err
    data = status_json(root)
    assert data["counts"]["completed"] == 14
    killed = [t for t in data["tasks"] if t["attempts"] > 1]
    assert killed, "a task on h2 should have been killed by the disk guard and retried"
    log = sweep_log(root, data["sweep_id"])
    assert "disk_kill" in log or "disk_precheck" in log
    # After the critical check, h2 got no new task.
    critical_at = log.index("CRITICAL: h2 has critical disk space shortage")
    assert "started on h2" not in log[critical_at:]


def test_overloaded_host_is_degraded_and_works_at_half_its_slots(
    tmp_path: Path, testbed_hosts: list[Host]
) -> None:
    root = bed_project(tmp_path, testbed_hosts, slots=4)
    h1 = testbed_hosts[0]
    h1.set_load(50.0)
    sweep = script_sweep(root, "import time\ntime.sleep(0.5)\n", 24)
    result = hsm("run", sweep, "--distributed", "--json", cwd=root, timeout=120)
    assert result.returncode == 0, result
    assert re.search(
        r"Source h1 is degraded: System overload: load [\d.]+ per core > 2", result.stderr
    ), result.stderr
    data = result.json()
    assert data["sources"]["h1"]["submitted"] > 0  # it keeps working ...
    assert data["sources"]["h1"]["enabled"] is True  # degraded is not disabled
    assert data["counts"]["completed"] == 24
    # ... on at most 2 of its 4 slots at a time (from the wrappers' own start/end times).
    spans = []
    for task in data["tasks"]:
        if task["source"] == "h1":
            status = json.loads((Path(task["task_dir"]) / "status.json").read_text())
            spans.append((status["started"], status["finished"]))
    most = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert most <= 2, spans


def test_a_sweep_that_cannot_start_anywhere_says_why_at_once(
    tmp_path: Path, testbed_hosts: list[Host]
) -> None:
    root = bed_project(tmp_path, testbed_hosts[:2], extra={"health": {"disk_critical_free": "1GB"}})
    sweep = script_sweep(root, "pass\n", 4)
    result = hsm("run", sweep, "--distributed", "--json", cwd=root, timeout=60)
    assert result.returncode == 3, result
    assert re.search(
        r"no source can take a task: h1: critical disk space shortage: "
        r"Critical: [\d.]+GB \(\d+%\) free \(health.disk_critical_free: 1GB",
        result.stderr,
    ), result.stderr
    assert result.json()["counts"]["pending"] == 4


def cut_both_after_a_task(root: Path, sweep: Path, hosts: list[Host]) -> str:
    """Run the sweep, cut every host's link once a task has finished, expect exit 3; returns
    what hsm printed on stderr."""
    with hsm_background("run", sweep, "--distributed", cwd=root) as proc:
        wait_for(
            lambda: (
                list((root / "runs").glob("*/tasks/task_*/status.json"))
                if (root / "runs").exists()
                else None
            ),
            what="a finished task",
            timeout=40,
        )
        for host in hosts:
            host.cut_link()
        assert proc.wait(timeout=90) == 3, outputs(root)
    return outputs(root)[1]


def test_no_source_left_exits_3_then_reenable_and_resume(
    tmp_path: Path, testbed_hosts: list[Host]
) -> None:
    root = bed_project(tmp_path, testbed_hosts[:2])
    sweep = script_sweep(root, "import time\ntime.sleep(1.0)\n", 12)
    h1, h2 = testbed_hosts[:2]
    err = cut_both_after_a_task(root, sweep, [h1, h2])
    assert "no usable source is left" in err
    assert "h1: disabled" in err and "h2: disabled" in err
    assert "hsm distributed enable" in err and "hsm resume" in err
    data = status_json(root)
    assert data["state"] == "aborted"
    h1.restore_link()
    h2.restore_link()
    for name in ("h1", "h2"):
        assert hsm("distributed", "enable", name, cwd=root).returncode == 0
    resumed = hsm("resume", data["sweep_id"], "--json", cwd=root, timeout=120)
    assert resumed.returncode == 0, resumed
    assert resumed.json()["counts"]["completed"] == 12


def listed_enabled(root: Path, name: str) -> bool:
    """Whether ``hsm distributed list`` shows the source as enabled."""
    listed = hsm("distributed", "list", "--json", cwd=root)
    assert listed.returncode == 0, listed
    [enabled] = [s["enabled"] for s in listed.json()["sources"] if s["name"] == name]
    assert isinstance(enabled, bool)
    return enabled


def test_disable_and_enable_take_effect_in_a_running_sweep(
    tmp_path: Path, testbed_hosts: list[Host]
) -> None:
    root = bed_project(tmp_path, testbed_hosts[:2], slots=1)
    sweep = script_sweep(root, "import time\ntime.sleep(0.5)\n", 30)

    def begun_on(name: str) -> int:
        sweep_id = latest_sweep(root)
        return sum(a.source == name for a in attempts(root, sweep_id)) if sweep_id else 0

    def logged(text: str) -> bool:
        return any(text in log.read_text() for log in root.glob("runs/*/hsm.log"))

    with hsm_background("run", sweep, "--distributed", cwd=root) as proc:
        wait_for(lambda: begun_on("h2") > 0, what="a task on h2", timeout=60)
        disabled = hsm("distributed", "disable", "h2", "--reason", "maintenance", cwd=root)
        assert disabled.returncode == 0, disabled
        assert not listed_enabled(root, "h2")
        # Once the sweep has seen it, h2 gets no new attempt while h1 goes on working.
        wait_for(lambda: logged("Source h2 disabled: maintenance"), what="the disable", timeout=30)
        on_h2, on_h1 = begun_on("h2"), begun_on("h1")
        wait_for(lambda: begun_on("h1") >= on_h1 + 3, what="h1 working alone", timeout=60)
        assert begun_on("h2") == on_h2
        enabled = hsm("distributed", "enable", "h2", cwd=root)
        assert enabled.returncode == 0, enabled
        assert listed_enabled(root, "h2")
        # The running sweep takes h2 back and gives it work again.
        wait_for(lambda: logged("Source h2 re-enabled"), what="the enable", timeout=30)
        wait_for(lambda: begun_on("h2") > on_h2, what="a new task on h2", timeout=60)
        assert proc.wait(timeout=120) == 0, outputs(root)
    _, err = outputs(root)
    assert "Source h2 disabled: maintenance" in err
    data = status_json(root)
    assert data["counts"]["completed"] == 30
    assert data["sources"]["h2"]["enabled"] is True
    last_on_h2 = max(
        (a for a in attempts(root, data["sweep_id"]) if a.source == "h2"), key=lambda a: a.id
    )
    assert last_on_h2.state is AttemptState.COMPLETED


def test_a_sweep_that_can_start_nothing_gives_up_after_stall_timeout(
    tmp_path: Path, testbed_hosts: list[Host]
) -> None:
    root = bed_project(
        tmp_path,
        testbed_hosts[:2],
        slots=1,
        distributed={
            "auto_disable_unhealthy_sources": False,
            "health_check_failure_threshold": 100,
            "stall_timeout": 3,
        },
    )
    sweep = script_sweep(root, "import time\ntime.sleep(0.3)\n", 8)
    err = cut_both_after_a_task(root, sweep, testbed_hosts[:2])
    assert "waiting: no source takes work now" in err, err
    assert re.search(
        r"nothing could start for \d+ s \(distributed.stall_timeout\): "
        r"h1: unreachable",
        err,
    ), err
    assert status_json(root)["state"] == "aborted"
