"""The host monitor's protocol: the bash side fed split and garbled writes, the Python reader
fed garbage, and launches the host never acknowledges."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from hsm.sources.ssh_monitor import UNCONFIRMED, HostMonitor
from hsm.sources.ssh_scripts import MONITOR
from hsm.sources.transport import ConnectionLost


def status_bytes(nonce: str) -> bytes:
    body = (
        f'{{"version": 2, "attempt": 1, "nonce": "{nonce}", "status": "completed", '
        f'"cause": null, "exit_code": 0, "pid": {os.getpid()}, "pgid": null, '
        f'"host": "h", "started": 1.5, "finished": 2.5}}'
    )
    return (body + " " * (1023 - len(body)) + "\n").encode()


def wait_for_file(path: Path) -> None:
    deadline = time.monotonic() + 10
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"no {path}"
        time.sleep(0.01)


def read_until_pong(stdout: Any, token: bytes) -> list[bytes]:
    events: list[bytes] = []
    while events[-2:] != [b"P", token]:
        field = b""
        while (c := stdout.read(1)) != b"\0":
            assert c, f"the monitor ended; events so far: {events}"
            field += c
        events.append(field)
    return events


def test_monitor_survives_split_writes_and_garbage(tmp_path: Path) -> None:
    task = tmp_path / "task"
    task.mkdir()
    final = status_bytes("ab12")
    (task / "status.json").write_bytes(final)
    proc = subprocess.Popen(
        ["bash", "-c", MONITOR, "hsm-monitor", "/nonexistent"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        # Garbage first (an unknown type, a non-numeric id), then a watch written a few bytes
        # at a time with pauses longer than the monitor's 5 ms scan: no field may shift.
        proc.stdin.write(b"Z\0W\0x1\0/\0" + b"1\0\0\0")
        proc.stdin.flush()
        pid = str(os.getpid()).encode()
        record = b"W\x003\0" + str(task).encode() + b"\x001\0ab12\0" + pid + b"\0P\x007\0"
        for i in range(0, len(record), 3):
            proc.stdin.write(record[i : i + 3])
            proc.stdin.flush()
            time.sleep(0.01)
        events = read_until_pong(proc.stdout, b"7")
        assert events == [b"S", b"3", final.rstrip(), b"1", b"P", b"7"]
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=5) == 0


class _Stream:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def read(self, n: int) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


class _Proc:
    def __init__(self, chunks: list[bytes]) -> None:
        self.stdout = _Stream(chunks)


@pytest.mark.parametrize(
    "chunks",
    [
        [b"S\0notanumber\0{}\x001\0"],
        [b"A\0" + b"\xff" * 10 + b"\0x\0", b"E\0-3\0msg\0"],
        [b"\0\0\0garbage\0", b"V\x001"],  # ends mid-record
        [os.urandom(4096) for _ in range(8)],
    ],
)
def test_reader_survives_malformed_records(chunks: list[bytes]) -> None:
    changes: list[tuple[int, ...]] = []
    monitor = HostMonitor(None, "w", lambda ids: changes.append(tuple(ids)))  # type: ignore[arg-type]
    good = b"S\x005\0" + status_bytes("") + b"\x001\0"
    asyncio.run(monitor._read(_Proc([*chunks, b"\0" * 8, b"Z\0", good])))  # type: ignore[arg-type]
    assert monitor.seen[5].alive
    assert (5,) in changes


def listening_monitor() -> tuple[HostMonitor, list[bytes]]:
    """A monitor whose host side is a list: what it sends is appended to it."""
    monitor = HostMonitor(None, "w", lambda ids: None)  # type: ignore[arg-type]
    sent: list[bytes] = []

    class Stdin:
        def write(self, data: bytes) -> None:
            sent.append(data)

    class Proc:
        stdin = Stdin()

    monitor._proc = Proc()  # type: ignore[assignment]
    return monitor, sent


def test_unacknowledged_launch_is_unconfirmed() -> None:
    async def main() -> list[Any]:
        monitor, sent = listening_monitor()
        task = asyncio.ensure_future(
            monitor.launch([(1, "/a", 1, "", b"spec"), (2, "/b", 1, "ab", b"spec")], timeout=0.2)
        )
        while not sent:
            await asyncio.sleep(0)
        monitor._event([b"A", b"1", b"4242"])
        result = await task
        assert not monitor._acks
        return result

    assert asyncio.run(main()) == [4242, UNCONFIRMED]


def test_a_late_answer_to_an_earlier_launch_does_not_answer_a_later_one() -> None:
    async def main() -> list[Any]:
        monitor, sent = listening_monitor()
        first = await monitor.launch([(7, "/a", 1, "aa", b"spec")], timeout=0.05)
        assert first == [UNCONFIRMED]
        second = asyncio.ensure_future(monitor.launch([(7, "/a", 2, "bb", b"spec")], timeout=5))
        while len(sent) < 2:
            await asyncio.sleep(0)
        seqs = [data.split(b"\0")[2] for data in sent]
        assert seqs[0] != seqs[1]
        monitor._event([b"A", seqs[0], b"111"])  # the host got the first one after all
        await asyncio.sleep(0.01)
        assert not second.done()
        monitor._event([b"A", seqs[1], b"222"])
        return await second

    assert asyncio.run(main()) == [222]


def test_launch_on_a_stopped_monitor_raises_connection_lost() -> None:
    async def main() -> None:
        monitor = HostMonitor(None, "w", lambda ids: None)  # type: ignore[arg-type]
        with pytest.raises(ConnectionLost):
            await monitor.launch([(1, "/a", 1, "", b"spec")])
        assert not monitor._acks

    asyncio.run(main())


def test_monitor_records_the_launch_before_the_wrapper(tmp_path: Path) -> None:
    task = tmp_path / "task"
    wrapper = tmp_path / "wrapper.sh"
    wrapper.write_text('printf %s $$ >"$1/started"\n')
    proc = subprocess.Popen(
        ["bash", "-c", MONITOR, "hsm-monitor", str(wrapper)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(
            b"L\x002\x0041\0" + str(task).encode() + b"\x003\0beef\0sp\\x00ec\0" + b"P\x001\0"
        )
        proc.stdin.flush()
        events = read_until_pong(proc.stdout, b"1")
        assert events[:2] == [b"A", b"41"] and events[2].isdigit()  # the request's number
        pid = events[2].decode()
        assert (task / ".hsm" / "launch").read_text() == f"3 beef {pid}\n"
        # The pid it reports is the wrapper's own (started detached, without a fork between).
        wait_for_file(task / "started")
        assert (task / "started").read_text() == pid
        assert (task / ".hsm" / "spec").read_bytes() == b"sp\0ec"
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=5) == 0


def test_a_failed_supervisor_leaves_the_source_unreachable() -> None:
    from hsm.sources.ssh import SshSource

    async def main() -> SshSource:
        source = SshSource.__new__(SshSource)
        source.name, source.reachable, source.lost_after = "h1", True, 5.0
        source._down_since, source._down_reason = None, ""
        source.wake = asyncio.Event()

        async def broken() -> None:
            raise ValueError("invalid literal for int() with base 10: 'x'")

        source._keep_up = broken  # type: ignore[method-assign]
        await source._supervise()  # returns: the failure is recorded, not raised
        assert source.wake.is_set()
        return source

    source = asyncio.run(main())
    assert source.reachable is False
    assert "supervisor failed" in source._down_reason


def test_monitor_reports_the_launch_record_of_a_folder_without_status(tmp_path: Path) -> None:
    got, never = tmp_path / "got", tmp_path / "never"
    (got / ".hsm").mkdir(parents=True)
    (got / ".hsm" / "launch").write_text("2 beef\n")
    proc = subprocess.Popen(
        ["bash", "-c", MONITOR, "hsm-monitor", "/nonexistent"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(
            b"W\x001\0"
            + str(got).encode()
            + b"\x002\0beef\0\0W\x002\0"
            + str(never).encode()
            + b"\x001\0\0\0P\x005\0"
        )
        proc.stdin.flush()
        events = read_until_pong(proc.stdout, b"5")
        assert events == [b"R", b"1", b"2 beef", b"R", b"2", b"", b"P", b"5"]
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=5) == 0
