"""Pieces of the SSH source that need no host: host-key options, the OpenSSH command line,
the spec escaping of the host monitor, and the tar framing of the puller."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from hsm.sources.ssh_pull import _read_archive, _size
from hsm.sources.ssh_scripts import MONITOR, printf_escape
from hsm.sources.transport import NOTHING_TRUSTED, SshTarget, SshTransport


def options(tmp_path: Path, config: str, **target: object) -> dict[str, object]:
    path = tmp_path / "ssh_config"
    path.write_text(config)
    transport = SshTransport(SshTarget(source="s", host="blossom", ssh_config=str(path), **target))  # type: ignore[arg-type]
    return asyncio.run(transport._options())


def test_known_hosts_none_in_the_config_trusts_nothing(tmp_path: Path) -> None:
    # "UserKnownHostsFile none" would make asyncssh skip host key checks: never let it.
    opts = options(
        tmp_path, "Host blossom\n  UserKnownHostsFile none\n  GlobalKnownHostsFile none\n"
    )
    assert opts["known_hosts"] == NOTHING_TRUSTED


def test_known_hosts_from_the_config_then_explicit(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.write_text("")
    other = tmp_path / "other"
    other.write_text("")
    opts = options(
        tmp_path,
        f"Host blossom\n  UserKnownHostsFile {mine} {tmp_path}/gone\n"
        "  GlobalKnownHostsFile /dev/null/x\n",
    )
    assert opts["known_hosts"] == [str(mine)]  # only files that exist
    opts = options(tmp_path, f"Host blossom\n  UserKnownHostsFile {mine}\n", known_hosts=str(other))
    assert opts["known_hosts"] == [str(other)]
    missing = options(tmp_path, "", known_hosts=str(tmp_path / "missing"))
    assert missing["known_hosts"] == NOTHING_TRUSTED


def test_openssh_command_matches_the_target(tmp_path: Path) -> None:
    target = SshTarget(
        source="s",
        host="blossom",
        port=2222,
        user="ann",
        ssh_key="~/k",
        known_hosts="/kh",
        ssh_config=None,
        keepalive_interval=0,
    )
    argv = SshTransport(target).ssh_argv()
    assert argv[:3] == ["ssh", "-F", "/dev/null"]  # no config: none at all, not the default
    joined = " ".join(argv)
    for part in (
        "-p 2222",
        "-l ann",
        f"-i {os.path.expanduser('~/k')}",
        "UserKnownHostsFile=/kh",
        "GlobalKnownHostsFile=/dev/null",
        "StrictHostKeyChecking=yes",
        "BatchMode=yes",
        "ServerAliveInterval=0",
    ):
        assert part in joined, part
    assert target.lost_after == 3.25


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"plain",
        b"a\0b\0\0",
        b"back\\slash\\",
        b"%s %b \\c \\x41 \\0101",
        "日本 🎉".encode(),
        bytes(range(256)),
        b"\n\t\r'\"$(x)`y`",
    ],
)
def test_printf_escape_round_trips_through_bash(data: bytes) -> None:
    out = subprocess.run(
        ["bash", "-c", 'printf "%b" "$1"', "x", printf_escape(data)],
        capture_output=True,
        check=True,
    ).stdout
    assert out == data


class Stream:
    """An asyncssh-like reader over bytes, returning small pieces."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def read(self, n: int = -1) -> bytes:
        n = min(n, 700)
        chunk, self.data = self.data[:n], self.data[n:]
        return chunk

    async def readexactly(self, n: int) -> bytes:
        if len(self.data) < n:
            raise asyncio.IncompleteReadError(self.data, n)
        chunk, self.data = self.data[:n], self.data[n:]
        return chunk


def gnu_tar(folder: Path, *names: str) -> bytes:
    return subprocess.run(
        ["tar", "-C", str(folder), "-b1", "-cf", "-", *names], capture_output=True, check=True
    ).stdout


def test_tar_framing_finds_the_end_of_each_archive(tmp_path: Path) -> None:
    task = tmp_path / "task_0001"
    deep = task / ("long-name-" * 12) / "sub"
    deep.mkdir(parents=True)
    (deep / ("file-" * 30)).write_bytes(os.urandom(5000))
    (task / "empty").write_bytes(b"")
    (task / "exactly").write_bytes(b"x" * 1024)
    (task / "link").symlink_to("exactly")
    first, second = gnu_tar(tmp_path, "task_0001"), gnu_tar(tmp_path, "task_0001/empty")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("ünïcode/" + "p" * 150)
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    third = buf.getvalue().rstrip(b"\0")
    third += bytes((-len(third)) % 512) + bytes(1024)  # exactly two zero blocks at the end
    stream = Stream(first + b"HSMPULL000\n" + second + b"HSMPULL001\n" + third)

    async def read_all() -> list[bytes]:
        out = []
        for trailer in (b"HSMPULL000\n", b"HSMPULL001\n", b""):
            archive = io.BytesIO()
            await _read_archive(stream, archive)  # type: ignore[arg-type]
            out.append(archive.getvalue())
            assert await stream.readexactly(len(trailer)) == trailer
        return out

    got = asyncio.run(read_all())
    assert got == [first, second, third]
    assert stream.data == b""
    with tarfile.open(fileobj=io.BytesIO(got[0])) as tar:
        assert any(m.name.endswith("file-" * 30) for m in tar.getmembers())


def test_tar_sizes() -> None:
    assert _size(b"00000001750\0") == 1000
    assert _size(b"\0" * 12) == 0
    assert _size(bytes([0x80]) + (12 << 30).to_bytes(11, "big")) == 12 << 30


def status_text(state: str, finished: str) -> bytes:
    body = (
        f'{{"version": 1, "attempt": 1, "status": "{state}", "cause": null, '
        f'"exit_code": null, "pid": {os.getpid()}, "pgid": null, "host": "h", '
        f'"started": 1.5, "finished": {finished}}}'
    )
    return (body + " " * (1023 - len(body)) + "\n").encode()


def test_host_monitor_reads_a_half_written_status_again(tmp_path: Path) -> None:
    # The wrapper writes a status over the last one in place: a scan that catches the write
    # half done must not report it (it would end the watch with a status that is no status).
    task = tmp_path / "task"
    task.mkdir()
    running, final = status_text("running", "null"), status_text("completed", "2.5")
    (task / "status.json").write_bytes(final[:60] + running[60:])
    proc = subprocess.Popen(
        ["bash", "-c", MONITOR, "hsm-monitor", "/nonexistent"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None

    def ask(*fields: str) -> list[bytes]:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"".join(f.encode() + b"\0" for f in fields))
        proc.stdin.flush()
        events: list[bytes] = []
        while events[-2:] != [b"P", b"9"]:
            field = b""
            while (c := proc.stdout.read(1)) != b"\0":
                field += c
            events.append(field)
        return events

    try:
        # (A folder without a whole status reports its launch record: none here.)
        assert ask("W", "1", str(task), "1", "P", "9") == [b"R", b"1", b"", b"P", b"9"]
        (task / "status.json").write_bytes(final)
        assert ask("P", "9") == [b"S", b"1", final.rstrip(), b"1", b"P", b"9"]
    finally:
        proc.stdin.close()
        proc.wait(timeout=5)
