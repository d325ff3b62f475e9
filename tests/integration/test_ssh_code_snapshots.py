"""Each sweep runs its own code: two sweeps of one project on one SSH host, with the code
changed between them while the first one still has tasks queued and running."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import yaml

from tests.hsmcli import Background, hsm, wait_for
from tests.integration.ssh_support import make_project, remote, remote_path
from tests.testbed import Host

TASK = r"""
import json, os, sys, time
args = dict(a.split("=", 1) for a in sys.argv[1:])
version = open("VERSION").read().strip()  # read from the code folder the task runs in
with open(os.path.join(os.environ["HSM_TASK_DIR"], "version.json"), "w") as f:
    json.dump({"version": version, "cwd": os.getcwd()}, f)
gate = args.get("gate", "")
if gate:
    open(gate + ".started", "w").close()
    while not os.path.exists(gate):
        time.sleep(0.05)
"""


def status(root: Path, sweep_id: str) -> dict[str, object]:
    result = hsm("status", sweep_id, "--json", cwd=root)
    assert result.returncode == 0, result
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_two_sweeps_each_run_their_own_code(tmp_path: Path, testbed_hosts: list[Host]) -> None:
    host = testbed_hosts[0]
    root = make_project(
        tmp_path / "proj", [host], remotes={"h1": remote(host, max_parallel_jobs=1)}
    )
    (root / "task.py").write_text(TASK)
    (root / "VERSION").write_text("one\n")
    gate = f"/srv/hsm/gate-{secrets.token_hex(4)}"  # host disks outlive a test: a new name
    (root / "a.yaml").write_text(
        yaml.safe_dump(
            {"script": "task.py", "sweep": {"grid": {"i": [1, 2, 3]}}, "defaults": {"gate": gate}}
        )
    )
    (root / "b.yaml").write_text(
        yaml.safe_dump({"script": "task.py", "sweep": {"grid": {"i": [1, 2]}}})
    )

    with Background("run", "a.yaml", "--source", "h1", "--name", "a", "--json", cwd=root) as first:
        # Sweep a: task 1 runs (held at its gate), tasks 2 and 3 wait for the slot.
        wait_for(
            lambda: remote_path(host, gate + ".started").exists(),
            timeout=60,
            what="sweep a's first task to start",
        )
        (root / "VERSION").write_text("two\n")
        second = hsm("run", "b.yaml", "--source", "h1", "--name", "b", "--json", cwd=root)
        assert second.returncode == 0, second
        remote_path(host, gate).touch()
        result = first.wait(timeout=120)
    assert result.returncode == 0, result

    for sweep_id, expected in (("a", "one"), ("b", "two")):
        data = status(root, sweep_id)
        tasks = data["tasks"]
        assert isinstance(tasks, list) and tasks
        for task in tasks:
            seen = json.loads((Path(task["task_dir"]) / "version.json").read_text())
            assert seen["version"] == expected, (sweep_id, task["number"], seen)
            assert seen["cwd"].endswith(f"/sweeps/{sweep_id}/h1/code"), seen
        version = data["code_version"]
        assert isinstance(version, dict) and set(version) == {"hash"}, version
    assert status(root, "a")["code_version"] != status(root, "b")["code_version"]
    text = hsm("status", "a", cwd=root)
    assert "code: content " in text.stdout, text
    # Both sweeps completed: their snapshots went with their remote folders.
    assert not any(remote_path(host, "/srv/hsm/root/proj/sweeps").iterdir())
