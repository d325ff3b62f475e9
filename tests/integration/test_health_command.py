"""``hsm distributed health`` against healthy, degraded, critical-disk and unreachable hosts."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import time
from pathlib import Path

from tests.hsmcli import HSM, hsm, hsm_env
from tests.integration.ssh_support import FAILSAFE_HEALTH, bed_project
from tests.testbed import Host


def test_health_table_json_and_exit_code(tmp_path: Path, testbed_hosts: list[Host]) -> None:
    h1, h2, h3 = testbed_hosts
    # This machine's real load is not the test's to choose (a loaded CI box): a high limit.
    root = bed_project(
        tmp_path,
        testbed_hosts,
        include_local=True,
        extra={"health": {**FAILSAFE_HEALTH, "max_load_per_core": 10}},
    )
    healthy = hsm("distributed", "health", "--all", "--json", cwd=root, timeout=60)
    assert healthy.returncode == 0, healthy
    rows = {r["name"]: r for r in healthy.json()["sources"]}
    assert set(rows) == {"local", "h1", "h2", "h3"}
    assert all(r["status"] == "healthy" and r["reachable"] for r in rows.values()), rows
    disk = rows["h1"]["disk"]
    assert disk["path"] == h1.work_dir and disk["status"] == "healthy"
    assert 50e6 < disk["total_bytes"] < 80e6 and 0 < disk["free_bytes"] <= disk["total_bytes"]
    assert rows["h1"]["load"]["cores"] >= 1 and rows["h1"]["memory_percent"] is not None

    h1.set_load(100.0)  # overload: degraded
    h2.fill_disk(leave_bytes=1_000_000)  # critical
    h3.cut_link()  # unreachable
    started = time.monotonic()
    result = hsm("distributed", "health", "--all", "--json", cwd=root, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result
    rows = {r["name"]: r for r in result.json()["sources"]}
    assert rows["h1"]["status"] == "degraded"
    assert any("overload" in reason for reason in rows["h1"]["reasons"])
    assert rows["h2"]["status"] == "unhealthy" and rows["h2"]["disk"]["status"] == "critical"
    assert rows["h3"]["status"] == "unhealthy" and rows["h3"]["reachable"] is False
    assert rows["local"]["status"] == "healthy"
    # Probed at once: the dead host costs its own timeout, not the sum of all.
    assert elapsed < 14, elapsed

    table = hsm("distributed", "health", "h1", "h2", "h3", cwd=root, timeout=60)
    assert table.returncode == 1
    for text in (
        "Disk Space",
        "System",
        "Failure Rate",
        "Status",
        "degraded",
        "unhealthy",
        "critical",
        "unreachable",
    ):
        assert text in table.stdout, table.stdout
    only_h1 = hsm("distributed", "health", "h1", "--json", cwd=root, timeout=60)
    assert only_h1.returncode == 0  # degraded is not unhealthy
    assert [r["name"] for r in only_h1.json()["sources"]] == ["h1"]

    unknown = hsm("distributed", "health", "nope", cwd=root)
    assert unknown.returncode == 2
    assert "unknown source 'nope'" in unknown.stderr and "h1" in unknown.stderr


def test_watch_redraws_until_ctrl_c(tmp_path: Path, testbed_hosts: list[Host]) -> None:
    root = bed_project(tmp_path, testbed_hosts[:1])
    master, slave = pty.openpty()
    env = hsm_env({"COLUMNS": "160", "LINES": "40", "TERM": "xterm"})
    proc = subprocess.Popen(
        [*HSM, "distributed", "health", "--all", "--watch", "--refresh", "0.5"],
        cwd=root,
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(re.findall(rb"source health", seen)) < 3:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
        assert len(re.findall(rb"source health", seen)) >= 3, seen[-2000:]
        assert b"h1" in seen and b"healthy" in seen
        proc.send_signal(signal.SIGINT)
        # Keep reading: a full terminal buffer would block its last writes, and its exit.
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    os.read(master, 65536)
                except OSError:
                    break
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
