"""Smoke tests that prove the test bed is real: SSH, disks, faults, Slurm, clean teardown."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncssh
import pytest

from tests.testbed import Host, SlurmCluster, TestBed, cleanup_stale, pick_free_subnet
from tests.testbed._util import OWNER_ENV, mounts, pid_alive, pids_with_env
from tests.testbed.latency import LatencyProxies

pytestmark = [
    pytest.mark.root,
    pytest.mark.testbed,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces"),
]

MB = 1 << 20


def ssh(
    host: Host, command: str, *options: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    argv = ["ssh", "-F", str(host.ssh_config_path), *options, host.name, command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def timed_ssh(host: Host, command: str = "true") -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    proc = ssh(host, command, "-o", "ConnectTimeout=3", timeout=30)
    return proc, time.monotonic() - start


def df_bytes(host: Host) -> tuple[int, int]:
    """(size, available) of the work disk as ``df -B1`` shows it over SSH."""
    proc = ssh(host, f"df -B1 --output=size,avail {host.work_dir} | tail -1")
    assert proc.returncode == 0, proc.stderr
    size, avail = proc.stdout.split()
    return int(size), int(avail)


async def _asyncssh_run(host: Host, commands: list[str]) -> list[str]:
    async with asyncssh.connect(
        host.ip,
        port=host.port,
        username=host.user,
        client_keys=[str(host.key_path)],
        known_hosts=str(host.known_hosts),
        connect_timeout=10,
    ) as conn:
        results = [await conn.run(command, check=True) for command in commands]
    return [str(result.stdout) for result in results]


def test_openssh_reaches_every_host(testbed_hosts: list[Host]) -> None:
    for host in testbed_hosts:
        proc = ssh(host, "hostname; command -v python3; echo $HOME; ls -A /root | wc -l")
        assert proc.returncode == 0, proc.stderr
        hostname, python, home, entries = proc.stdout.split()
        assert hostname == host.name
        assert python == "/usr/bin/python3"
        assert (home, entries) == ("/root", "0")
        size, avail = df_bytes(host)
        assert 60 * MB <= size <= 68 * MB
        assert avail > 60 * MB


def test_asyncssh_reaches_every_host_with_known_hosts(testbed_hosts: list[Host]) -> None:
    for host in testbed_hosts:
        out = asyncio.run(_asyncssh_run(host, ["hostname", f"df -B1 {host.work_dir}"]))
        assert out[0].strip() == host.name
        assert host.work_dir in out[1]


def test_latency_proxies_delay_each_round_trip_and_keep_the_bytes(
    testbed: TestBed, testbed_hosts: list[Host]
) -> None:
    # Every host behind a proxy that holds each chunk for half of a 200 ms round trip: a
    # command over OpenSSH takes several round trips (key exchange, auth, channel), so at
    # least two of them (a lower bound: a busy machine only makes it slower); the bytes
    # arrive whole, and the host key is still verified.
    host = testbed_hosts[0]
    blob = os.urandom(300_000).hex()
    with LatencyProxies(testbed, 0.2) as proxies:
        began = time.monotonic()
        proc = subprocess.run(
            ["ssh", "-F", str(proxies.ssh_config), host.name, "cat"],
            input=blob,
            capture_output=True,
            text=True,
            timeout=60,
        )
        took = time.monotonic() - began
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == blob
        assert took >= 0.4
        proxies.known_hosts.write_text("")  # no known key: refused
        refused = subprocess.run(
            ["ssh", "-F", str(proxies.ssh_config), host.name, "true"],
            capture_output=True,
            timeout=60,
        )
        assert refused.returncode == 255


def test_host_run_enters_the_namespaces(testbed_hosts: list[Host]) -> None:
    host = testbed_hosts[1]
    proc = host.run(["sh", "-c", f"hostname; ip -4 -o addr show eth0; findmnt -n {host.work_dir}"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == host.name
    assert f"{host.ip}/24" in proc.stdout
    assert f"{host.name}-disk" in proc.stdout
    (host.disk_dir / "probe.txt").write_text("hello")
    assert ssh(host, f"cat {host.work_dir}/probe.txt").stdout == "hello"


def test_unknown_host_key_is_rejected(testbed_hosts: list[Host], tmp_path: Path) -> None:
    host = testbed_hosts[0]
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{host.ip} {other}\n")

    async def connect() -> None:
        async with asyncssh.connect(
            host.ip,
            username=host.user,
            client_keys=[str(host.key_path)],
            known_hosts=str(wrong),
            connect_timeout=10,
        ):
            pass

    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        asyncio.run(connect())
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    proc = ssh(host, "true", "-o", f"UserKnownHostsFile={empty}")
    assert proc.returncode == 255
    assert "Host key verification failed" in proc.stderr


def test_fill_disk(testbed_hosts: list[Host]) -> None:
    host = testbed_hosts[2]
    host.fill_disk()
    assert df_bytes(host)[1] < 64 * 1024
    proc = ssh(host, f"head -c 1048576 /dev/zero > {host.work_dir}/x")
    assert proc.returncode != 0
    assert "No space left on device" in proc.stderr
    host.fill_disk(leave_bytes=10 * MB)
    assert 9 * MB <= df_bytes(host)[1] <= 11 * MB
    host.free_disk()
    assert df_bytes(host)[1] > 60 * MB


def test_cut_link_times_out_and_restore_recovers(testbed_hosts: list[Host]) -> None:
    host = testbed_hosts[0]
    host.cut_link()
    proc, elapsed = timed_ssh(host)
    assert proc.returncode == 255
    assert 2.5 <= elapsed <= 6, elapsed
    host.restore_link()
    proc, elapsed = timed_ssh(host)
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 2


def test_freeze_sshd_blocks_new_connections_only(testbed_hosts: list[Host]) -> None:
    host = testbed_hosts[1]

    async def scenario() -> tuple[float, str]:
        async with asyncssh.connect(
            host.ip,
            username=host.user,
            client_keys=[str(host.key_path)],
            known_hosts=str(host.known_hosts),
        ) as conn:
            host.freeze_sshd()
            try:
                proc, elapsed = await asyncio.to_thread(timed_ssh, host)
                assert proc.returncode == 255
                # The open connection is served by its own sshd process: still fine.
                still = await conn.run("hostname", check=True)
            finally:
                host.thaw_sshd()
        return elapsed, str(still.stdout).strip()

    elapsed, name = asyncio.run(scenario())
    assert 2.5 <= elapsed <= 6, elapsed
    assert name == host.name
    assert timed_ssh(host)[0].returncode == 0


def test_kill_sshd_refuses_at_once(testbed_hosts: list[Host]) -> None:
    host = testbed_hosts[2]
    host.kill_sshd()
    proc, elapsed = timed_ssh(host)
    assert proc.returncode == 255
    assert "refused" in proc.stderr
    assert elapsed < 1.5
    host.start_sshd()
    assert timed_ssh(host)[0].returncode == 0


def test_set_load(testbed_hosts: list[Host]) -> None:
    host = testbed_hosts[0]
    host.set_load(3.5)
    assert ssh(host, "cat /proc/loadavg").stdout.split()[:3] == ["3.50", "3.50", "3.50"]
    host.set_load(0.5, cores=4)
    assert ssh(host, "cat /proc/loadavg").stdout.split()[0] == "2.00"
    assert int(ssh(host, "nproc").stdout) == host.nproc


def test_set_memory_percent(testbed_hosts: list[Host]) -> None:
    host = testbed_hosts[0]
    host.set_memory_percent(80)
    text = ssh(host, "cat /proc/meminfo").stdout
    values = {k: int(v) for k, v in re.findall(r"^(\w+):\s+(\d+)", text, re.MULTILINE)}
    assert values["MemAvailable"] / values["MemTotal"] == pytest.approx(0.2, abs=0.01)
    assert values["MemFree"] == values["MemAvailable"]
    total, available = map(int, ssh(host, "free -k | awk '/^Mem:/ {print $2, $7}'").stdout.split())
    assert available / total == pytest.approx(0.2, abs=0.01)


@pytest.mark.slurm
def test_slurm_local_runs_jobs(slurm_local: SlurmCluster) -> None:
    job = slurm_local.sbatch(["--wrap", "true"])
    assert slurm_local.wait_job(job) == ["COMPLETED"]
    array = slurm_local.sbatch(["--array=1-5%2", "--wrap", "sleep 0.1"])
    assert slurm_local.wait_job(array) == ["COMPLETED"] * 5
    config = slurm_local.run(["scontrol", "show", "config"], check=True).stdout
    assert re.search(r"MaxArraySize\s+=\s+1001", config)
    assert str(slurm_local.jobcomp_path) in config


@pytest.mark.slurm
def test_slurm_job_survives_controller_restart(slurm_local: SlurmCluster) -> None:
    job = slurm_local.sbatch(["--wrap", "sleep 2"])
    slurm_local.restart_controller()
    assert slurm_local.wait_job(job) == ["COMPLETED"]


@pytest.mark.slurm
def test_slurm_on_host_is_a_login_node(testbed: TestBed, slurm_on_host: SlurmCluster) -> None:
    host = testbed.hosts[0]
    proc = ssh(host, f"cd {host.work_dir} && sbatch --parsable --wrap 'hostname'")
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip()
    assert slurm_on_host.wait_job(job) == ["COMPLETED"]
    shown = ssh(host, f"scontrol show job {job}").stdout
    assert "JobState=COMPLETED" in shown
    assert ssh(host, f"cat {host.work_dir}/slurm-{job}.out").stdout.strip() == host.name
    array = ssh(host, "sbatch --parsable --output=/dev/null --array=1-5%2 --wrap true")
    assert array.returncode == 0, array.stderr
    assert slurm_on_host.wait_job(array.stdout.strip()) == ["COMPLETED"] * 5


def _leftovers(prefix: str, base_dir: Path) -> list[str]:
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [line for line in netns.splitlines() if line.startswith(f"{prefix}-")]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found += [line for line in links.splitlines() if f" {prefix}-" in line]
    found += [f"{src} {target}" for src, target, _ in mounts() if prefix in src or prefix in target]
    if base_dir.exists() and str(base_dir) not in found:
        found.append(str(base_dir))
    found += [str(p) for p in Path(tempfile.gettempdir()).glob(f"{prefix}-*")]
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    found += [line for line in ps.splitlines() if f"/{prefix}-" in line]
    tagged = pids_with_env(OWNER_ENV, lambda v: v == prefix or v.startswith(prefix + ":"))
    found += [f"pid {pid}" for pid in tagged if pid_alive(pid)]
    return found


def test_teardown_leaves_nothing() -> None:
    prefix = f"hsmtd{os.getpid()}"
    bed = TestBed(prefix=prefix, subnet=pick_free_subnet())
    try:
        hosts = bed.up(2, disk_size="8m")
        base_dir = bed.base_dir
        slurm = SlurmCluster(prefix=prefix, host=hosts[1]).start()
        slurm_dir = slurm.base_dir
        hosts[0].fill_disk()
        hosts[1].freeze_sshd()
        hosts[0].cut_link()
        stray = hosts[0].run(["sh", "-c", "nohup sleep 600 >/dev/null 2>&1 & echo $!"])
        pids = hosts[0].pids() + hosts[1].pids()
        assert len(pids) >= 8  # holders, sshds, the stray sleep, munged, slurmctld, slurmd
        assert int(stray.stdout) in [p for p in pids if pid_alive(p)]
        slurm.stop()
        bed.down()
        bed.down()  # idempotent
        assert _leftovers(prefix, base_dir) == []
        assert not slurm_dir.exists()
        assert not [pid for pid in pids if pid_alive(pid)]
    finally:
        cleanup_stale(prefix, force=True)


def test_cleanup_stale_after_a_killed_run() -> None:
    prefix = f"hsmtk{os.getpid()}"
    cli = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.testbed",
            "up",
            "--hosts",
            "2",
            "--prefix",
            prefix,
            "--subnet",
            pick_free_subnet(),
            "--slurm",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert cli.stdout is not None
        lines = []
        for line in cli.stdout:
            lines.append(line)
            if line.rstrip() == "}":
                break
        description = json.loads("".join(lines))
        assert [h["name"] for h in description["hosts"]] == [f"{prefix}-h1", f"{prefix}-h2"]
        assert description["slurm"]["host"] == f"{prefix}-h1"
    finally:
        cli.send_signal(signal.SIGKILL)  # a crash: no teardown
        cli.wait()
    base_dir = Path(description["base_dir"])
    assert _leftovers(prefix, base_dir) != []
    removed = cleanup_stale(prefix)
    assert any(item.startswith("netns") for item in removed)
    assert _leftovers(prefix, base_dir) == []
