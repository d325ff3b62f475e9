"""The SSH transport and probe on the test bed: one connection, at most 5 channels in flight,
refused channel opens retried, dead connections noticed by keepalive, one-round-trip probes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from hsm.sources.ssh import SshSource
from hsm.sources.transport import MAX_CHANNELS, SshTarget, SshTransport
from tests.testbed import Host

pytestmark = [pytest.mark.root, pytest.mark.testbed]

SSHD = "'( sport = :22 )'"  # the connections to sshd, for ss


def target(host: Host, **kwargs: object) -> SshTarget:
    return SshTarget(source="t", host=host.name, ssh_config=str(host.ssh_config_path), **kwargs)  # type: ignore[arg-type]


def test_one_connection_and_bounded_channels(testbed_hosts: list[Host]) -> None:
    host = testbed_hosts[0]

    async def scenario() -> tuple[list[str], float, int]:
        transport = SshTransport(target(host))
        try:
            start = time.monotonic()
            # Each command records how many of them run at that moment.
            script = (
                "mkdir -p /srv/hsm/inflight; : > /srv/hsm/inflight/$1; sleep 0.3; "
                "ls /srv/hsm/inflight | wc -l; rm /srv/hsm/inflight/$1"
            )
            results = await asyncio.gather(
                *(transport.run_script(script, [str(i)], name="t") for i in range(15))
            )
            elapsed = time.monotonic() - start
            peers = (
                await transport.run(["sh", "-c", f"ss -tnH state established {SSHD} | wc -l"])
            ).stdout
        finally:
            await transport.close()
        return [r.stdout.strip() for r in results], elapsed, int(peers)

    outputs, elapsed, connections = asyncio.run(scenario())
    assert max(int(o) for o in outputs) <= MAX_CHANNELS == 5
    assert elapsed >= 3 * 0.3  # 15 commands, 5 at a time
    assert connections == 1  # every command went over the same connection


def test_refused_channel_opens_are_retried(
    testbed_hosts: list[Host], caplog: pytest.LogCaptureFixture
) -> None:
    host = testbed_hosts[1]

    async def scenario() -> list[str]:
        # Beyond sshd's MaxSessions (10): some opens are refused and must be retried.
        transport = SshTransport(target(host), max_channels=40)
        try:
            results = await asyncio.gather(
                *(transport.run_script("sleep 0.5; echo $1", [str(i)], name="t") for i in range(30))
            )
        finally:
            await transport.close()
        return [r.stdout.strip() for r in results]

    with caplog.at_level(logging.DEBUG, logger="hsm.sources.transport"):
        outputs = asyncio.run(scenario())
    assert outputs == [str(i) for i in range(30)]
    assert any("channel open refused" in r.message for r in caplog.records)


def test_keepalive_notices_a_dead_link_within_five_seconds(testbed_hosts: list[Host]) -> None:
    host = testbed_hosts[2]

    async def scenario() -> float:
        transport = SshTransport(target(host))
        lost = asyncio.Event()
        transport.on_lost = lambda exc: lost.set()
        try:
            await transport.connect()
            host.cut_link()
            start = time.monotonic()
            await asyncio.wait_for(lost.wait(), timeout=15)
            return time.monotonic() - start
        finally:
            host.restore_link()
            await transport.close()

    assert asyncio.run(scenario()) <= 5.0


def test_probe_reads_disk_load_cores_memory_in_one_round_trip(testbed_hosts: list[Host]) -> None:
    host = testbed_hosts[0]
    host.set_load(1.5, cores=host.nproc)
    host.set_memory_percent(70)
    transport = SshTransport(target(host))
    source = SshSource(
        "h1", transport=transport, slots=1, remote_root="/srv/hsm/root", python="python3", setup=[]
    )
    calls = []
    run = transport.run

    async def counting_run(argv: Sequence[str], **kwargs: object) -> object:
        calls.append(argv)
        return await run(argv, **kwargs)  # type: ignore[arg-type]

    transport.run = counting_run  # type: ignore[method-assign,assignment]

    async def scenario() -> object:
        try:
            return await source.probe()
        finally:
            await source.close()

    sample = asyncio.run(scenario())
    assert len(calls) == 1
    assert sample.reachable and sample.error is None  # type: ignore[attr-defined]
    assert sample.load1 == pytest.approx(1.5 * host.nproc)  # type: ignore[attr-defined]
    assert sample.cores == host.nproc  # type: ignore[attr-defined]
    assert sample.memory_percent == pytest.approx(70, abs=0.5)  # type: ignore[attr-defined]
    total = sample.total_bytes  # type: ignore[attr-defined]
    assert 60 << 20 <= total <= 68 << 20  # the host's 64 MB work disk (root not created yet)
    assert 0 < sample.free_bytes <= total  # type: ignore[attr-defined]
    assert not Path(host.disk_dir, "root").exists()  # probing creates nothing


def test_probe_of_an_unreachable_host(testbed_hosts: list[Host]) -> None:
    host = testbed_hosts[1]
    host.kill_sshd()
    source = SshSource(
        "h2",
        transport=SshTransport(target(host)),
        slots=1,
        remote_root="/srv/hsm/root",
        python="python3",
        setup=[],
    )

    async def scenario() -> object:
        try:
            return await source.probe()
        finally:
            await source.close()

    sample = asyncio.run(scenario())
    assert not sample.reachable  # type: ignore[attr-defined]
    assert "connection refused" in sample.error  # type: ignore[attr-defined]
