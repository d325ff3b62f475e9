"""Chaos: a distributed sweep of 200 short tasks over this machine, 3 SSH test-bed hosts and the
test-bed Slurm cluster, with faults injected at seeded random moments:

- h2's disk is filled while a task runs there (the disk guard kills it, h2 is flagged critical);
- h1's link is cut, then restored a few seconds later;
- h1 is frozen whole (SIGSTOP of every process on it: sshd, wrappers, tasks) for longer
  than it takes to lose its tasks, which then run elsewhere; when it thaws, its old attempts
  end after their replacements, and must not reach the task folders;
- the second resume starts while h1 is frozen again;
- h3 fails 60 % of its tasks (a marker file on h3 and the hash of the task number decide);
- the controller is SIGKILLed twice, and resumed each time with ``hsm resume ID``;
- slurmctld is restarted once.

Every task must end with exactly one completed result, and the state database, the files on
disk and ``hsm status --json`` must agree. Replay a failure with ``HSM_CHAOS_SEED=<seed>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from hsm.states import AttemptState
from tests.hsmcli import Background, attempts, tasks, wait_for
from tests.integration.cluster_support import cancel_leftovers
from tests.integration.ssh_support import FAILSAFE_DISK, FAILSAFE_HEALTH
from tests.testbed import Host, SlurmCluster, TestBed

pytestmark = [pytest.mark.root, pytest.mark.testbed, pytest.mark.slurm, pytest.mark.timeout(300)]

N = 200
SWEEP_ID = "chaos"
FLAKY_FILE = "/srv/hsm/FLAKY"
FAIL_PERCENT = 60

# Sleeps a little; fails on a host that carries FLAKY_FILE for 60 % of the task numbers (by
# hash); appends one line per finished attempt to `marker` and writes `result.json`.
TASK = f"""
import hashlib, json, os, sys, time
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
i = int(args["i"])
d = os.environ["HSM_TASK_DIR"]
time.sleep(float(args["sleep"]))
flaky = os.path.exists({FLAKY_FILE!r})
fails = flaky and int(hashlib.sha256(str(i).encode()).hexdigest(), 16) % 100 < {FAIL_PERCENT}
with open(os.path.join(d, "marker"), "a") as f:
    f.write(f"done {{os.environ['HSM_ATTEMPT']}} {{os.environ['HSM_SOURCE']}}\\n")
if fails:
    sys.exit(1)
with open(os.path.join(d, "result.json"), "w") as f:
    json.dump({{"i": i, "attempt": int(os.environ["HSM_ATTEMPT"]),
               "source": os.environ["HSM_SOURCE"]}}, f)
"""


def fails_on_flaky(i: int) -> bool:
    return int(hashlib.sha256(str(i).encode()).hexdigest(), 16) % 100 < FAIL_PERCENT


@dataclass
class Fault:
    name: str
    at: int  # fires once this many tasks have completed
    action: Callable[[], str]
    done: str = ""


@dataclass
class Chaos:
    root: Path
    hosts: list[Host]
    slurm: SlurmCluster
    seed: int
    controller: Background | None = None
    # Undo actions of timed faults: (when, what to do, what to log).
    undo: list[tuple[float, Callable[[], None], str]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def completed(self) -> int:
        try:
            return sum(t.status.value == "completed" for t in tasks(self.root, SWEEP_ID))
        except Exception:  # the database does not exist yet
            return 0


@pytest.fixture
def slurm(testbed: TestBed, slurm_local: SlurmCluster, tmp_path: Path) -> Iterator[SlurmCluster]:
    yield slurm_local
    cancel_leftovers(slurm_local, tmp_path)


def project(root: Path, hosts: list[Host]) -> Path:
    remotes: dict[str, Any] = {
        f"h{i + 1}": {"host": h.name, "remote_root": h.work_dir, "max_parallel_jobs": 2}
        for i, h in enumerate(hosts)
    }
    if os.environ.get("HSM_CHAOS_SLURM", "1") != "0":  # 0: leave the cluster out (diagnosis)
        remotes["cluster"] = {"type": "slurm", "host": "local", "max_parallel_jobs": 4}
    config = {
        "ssh_config": str(hosts[0].ssh_config_path),
        "local": {"max_parallel_jobs": 2},
        "disk": dict(FAILSAFE_DISK),
        "health": {**FAILSAFE_HEALTH, "max_load_per_core": 1000},
        "distributed": {
            "include_local": True,
            "health_check_interval": 1,
            "max_retries": 4,
            "remotes": remotes,
        },
    }
    root.mkdir(parents=True)
    (root / "hsm_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (root / "task.py").write_text(TASK)
    rng_sleep = random.Random(7)
    spec = {
        "script": "task.py",
        "sweep": {
            "paired": [
                {
                    "i": list(range(1, N + 1)),
                    "sleep": [round(rng_sleep.uniform(0.3, 1.2), 2) for _ in range(N)],
                }
            ]
        },
    }
    (root / "sweep.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return root


def test_chaos(tmp_path: Path, testbed_hosts: list[Host], slurm: SlurmCluster) -> None:
    seed = int(os.environ.get("HSM_CHAOS_SEED", "20240601"))
    print(f"chaos seed: {seed} (replay with HSM_CHAOS_SEED={seed})")
    rng = random.Random(seed)
    h1, h2, h3 = testbed_hosts
    root = project(tmp_path / "proj", testbed_hosts)
    assert not Path(FLAKY_FILE).exists()  # only h3 is flaky, not this machine
    h3.run(["touch", FLAKY_FILE])
    env = slurm.env()
    chaos = Chaos(root, testbed_hosts, slurm, seed)
    faults_seen: list[str] = []

    def fill_h2() -> str:
        def running_on_h2() -> bool:
            return any(
                a.source == "h2" and a.state == AttemptState.RUNNING
                for a in attempts(root, SWEEP_ID)
            )

        try:
            wait_for(running_on_h2, timeout=60, what="a task running on h2", interval=0.02)
        except AssertionError:
            held: dict[str, int] = {}
            for a in attempts(root, SWEEP_ID):
                if a.state in (AttemptState.RUNNING, AttemptState.LAUNCHING):
                    held[a.source] = held.get(a.source, 0) + 1
            raise AssertionError(
                f"no task ran on h2 for 60 s; unfinished attempts per source: {held}"
            ) from None
        h2.fill_disk(leave_bytes=2_000_000)
        return "h2 disk filled"

    def later(seconds: float, action: Callable[[], None], label: str) -> None:
        chaos.undo.append((time.monotonic() + seconds, action, label))

    def cut_h1() -> str:
        h1.cut_link()
        later(rng.uniform(4.0, 8.0), h1.restore_link, "h1 link restored")
        return "h1 link cut"

    def freeze_h1() -> str:
        h1.freeze()
        later(rng.uniform(7.0, 10.0), h1.thaw_sshd, "h1 thawed")
        return "h1 frozen"

    def kill_controller() -> str:
        assert chaos.controller is not None
        chaos.controller.kill()
        chaos.controller = Background("resume", SWEEP_ID, "--json", cwd=root, env=env)
        return "controller SIGKILLed and resumed"

    def kill_while_frozen() -> str:
        h1.freeze()
        later(rng.uniform(5.0, 8.0), h1.thaw_sshd, "h1 thawed")
        return kill_controller() + " while h1 is frozen"

    def restart_slurm() -> str:
        slurm.restart_controller()
        return "slurmctld restarted"

    faults = [
        Fault("disk", rng.randint(10, 40), fill_h2),
        Fault("link", rng.randint(20, 70), cut_h1),
        Fault("kill1", rng.randint(50, 90), kill_controller),
        Fault("slurm", rng.randint(60, 120), restart_slurm),
        Fault("freeze", rng.randint(75, 105), freeze_h1),
        Fault("kill2", rng.randint(125, 150), kill_while_frozen),
    ]
    print("chaos schedule: " + ", ".join(f"{f.name}@{f.at}" for f in faults))
    started = time.monotonic()
    try:
        chaos.controller = Background(
            "run",
            "sweep.yaml",
            "--distributed",
            "--name",
            SWEEP_ID,
            "--json",
            cwd=root,
            env=env,
        )
        while True:
            now = time.monotonic()
            assert now - started < 240, f"the sweep did not finish; faults: {faults_seen}"
            for entry in [u for u in chaos.undo if now >= u[0]]:
                chaos.undo.remove(entry)
                entry[1]()
                faults_seen.append(entry[2])
            done = chaos.completed()
            for fault in faults:
                if not fault.done and done >= fault.at:
                    fault.done = fault.action()
                    faults_seen.append(f"{fault.done} at {done}")
            if (
                chaos.controller.proc.poll() is not None
                and all(f.done for f in faults)
                and not chaos.undo
            ):
                break
            if chaos.controller.proc.poll() is not None:
                break
            time.sleep(0.1)
        result = chaos.controller.wait(timeout=120)
    finally:
        if chaos.controller is not None:
            chaos.controller.kill()
        h1.restore_link()
        h1.thaw_sshd()
        h2.free_disk()
        h3.run(["rm", "-f", FLAKY_FILE])
    pending = [f.name for f in faults if not f.done]
    assert not pending, f"the sweep ended before faults {pending}: {faults_seen}\n{result}"
    assert result.returncode == 0, result
    elapsed = time.monotonic() - started

    # hsm status --json, the state database and the files on disk agree.
    data = result.json()
    status = json.loads(
        Background("status", SWEEP_ID, "--json", cwd=root, env=env).wait(timeout=60).stdout
    )
    assert status["state"] == "completed"
    assert status["counts"] == {
        "completed": N,
        "failed": 0,
        "pending": 0,
        "running": 0,
        "cancelled": 0,
    }, status["counts"]
    assert data["counts"] == status["counts"]
    rows = {t.number: t for t in tasks(root, SWEEP_ID)}
    by_task: dict[int, list[Any]] = {}
    for a in attempts(root, SWEEP_ID):
        by_task.setdefault(a.number, []).append(a)
    lost = duplicated = 0
    problems: list[str] = []  # every disagreement, reported together
    for entry in status["tasks"]:
        number = entry["number"]
        row = rows[number]
        if not entry["status"] == row.status.value == "completed":
            problems.append(f"task {number}: status {entry['status']} / {row.status.value}")
        if not entry["attempts"] == row.attempts == len(by_task[number]):
            problems.append(
                f"task {number}: attempts {entry['attempts']} / {row.attempts} / "
                f"{len(by_task[number])} rows"
            )
        completed = [a for a in by_task[number] if a.state == AttemptState.COMPLETED]
        duplicated += len(completed) > 1
        lost += not completed
        if len(completed) != 1:
            problems.append(f"task {number}: {len(completed)} completed attempts")
            continue
        (winner,) = completed
        if not entry["source"] == row.source == winner.source:
            problems.append(
                f"task {number}: source {entry['source']} / {row.source} / {winner.source}"
            )
        task_dir = Path(entry["task_dir"])
        assert task_dir.is_relative_to(root / "runs" / SWEEP_ID / "tasks")
        result_file = task_dir / "result.json"
        if not result_file.exists():
            problems.append(f"task {number}: no result file")
            continue
        record = json.loads(result_file.read_text())
        wanted = {"i": number, "attempt": winner.attempt, "source": winner.source}
        if record != wanted:
            problems.append(
                f"task {number}: result file {record}, state database {wanted}: "
                + ", ".join(
                    f"{a.attempt}/{a.source}/{a.state.value}/{a.cause}" for a in by_task[number]
                )
            )
        # One marker line per attempt that was allowed to finish; none ran twice.
        lines = (task_dir / "marker").read_text().splitlines()
        seen = [(int(line.split()[1]), line.split()[2]) for line in lines]
        if len(seen) != len(set(seen)):
            problems.append(f"task {number}: an attempt finished twice: {lines}")
        if (winner.attempt, winner.source) not in seen:
            problems.append(
                f"task {number}: no marker line of the completed attempt "
                f"{winner.attempt} on {winner.source}: {lines}"
            )
        recorded = {(a.attempt, a.source) for a in by_task[number]}
        if not set(seen) <= recorded:
            problems.append(f"task {number}: marker lines {lines} not in the state database")
        if winner.source == "h3" and fails_on_flaky(number):
            problems.append(f"task {number}: completed on h3, where it always fails")
    assert not problems, "\n".join(problems)
    assert lost == 0 and duplicated == 0

    # The faults were seen, with the exact messages.
    log = (root / "runs" / SWEEP_ID / "hsm.log").read_text()
    assert re.search(
        r"Disabling source 'h3' due to high failure rate: \d+/\d+ \(\d+%\) >= 40%", log
    ), log[-5000:]
    assert "CRITICAL: h2 has critical disk space shortage" in log, log[-5000:]
    assert status["sources"]["h3"]["enabled"] is False
    assert "high failure rate" in status["sources"]["h3"]["disabled_reason"]
    assert status["sources"]["h3"]["failed"] >= 1
    print(
        f"chaos: {N}/{N} completed once, {lost} lost, {duplicated} duplicated, "
        f"faults: {'; '.join(faults_seen)} (seed {seed}, {elapsed:.0f} s)"
    )
