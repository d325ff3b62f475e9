"""Pieces of the SSH source that need no host: host-key options, the OpenSSH command line,
the spec escaping of the host monitor, and the tar framing of the puller."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from hsm.sources.ssh_pull import _read_archive, _size
from hsm.sources.ssh_scripts import CANCEL, MONITOR, printf_escape
from hsm.sources.transport import (
    NOTHING_TRUSTED,
    REMOTE_COMMAND,
    SshTarget,
    SshTransport,
    remote_stdin,
)


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


def test_a_remote_argv_reaches_bash_whole_and_its_input_follows() -> None:
    """What sshd runs for every remote command, fed what `SshTransport.run` sends: the
    arguments arrive as they are (the quoting is the transport's), then the input."""
    argv = ["printf", "[%s]", "a b", "it's", "$(x) `y`", "new\nline", "", "*"]
    script = "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"
    out = subprocess.run(
        REMOTE_COMMAND.split(),
        input=remote_stdin(argv, None),
        capture_output=True,
        check=True,
    ).stdout
    assert out == b"[a b][it's][$(x) `y`][new\nline][][*]"
    piped = subprocess.run(
        REMOTE_COMMAND.split(),
        input=remote_stdin([sys.executable, "-c", script], b"rest\0of\nit"),
        capture_output=True,
        check=True,
    ).stdout
    assert piped == b"rest\0of\nit"


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


class MonitorProc:
    """The host monitor script, run here: `ask` sends commands and a barrier, and returns the
    events up to its answer."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["bash", "-c", MONITOR, "hsm-monitor", "/nonexistent"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def ask(self, *fields: str) -> list[bytes]:
        proc = self.proc
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"".join(f.encode() + b"\0" for f in (*fields, "P", "9")))
        proc.stdin.flush()
        events: list[bytes] = []
        while events[-2:] != [b"P", b"9"]:
            field = b""
            while (c := proc.stdout.read(1)) != b"\0":
                assert c, f"the monitor ended; events so far: {events}"
                field += c
            events.append(field)
        return events

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=5)


def test_host_monitor_passes_status_bytes_and_tells_a_gone_wrapper(tmp_path: Path) -> None:
    # The wrapper writes a status over the last one in place, so a scan can catch a write half
    # done. The monitor passes the bytes as they are (Python parses them) and keeps watching
    # while the wrapper lives; the pid is checked before the file is read, so the status of a
    # wrapper that is gone is whole, and after it the folder is no longer watched.
    task = tmp_path / "task"
    task.mkdir()
    running, final = status_text("running", "null"), status_text("completed", "2.5")
    half = final[:60] + running[60:]
    (task / "status.json").write_bytes(half)
    wrapper = subprocess.Popen(["sleep", "30"])
    monitor = MonitorProc()
    try:
        # (A folder without a status reports its launch record: none here.)
        watch = ("W", "1", str(task), "1", "", str(wrapper.pid))
        assert monitor.ask(*watch) == [b"S", b"1", half.strip(), b"1", b"P", b"9"]
        (task / "status.json").write_bytes(final)
        wrapper.kill()
        wrapper.wait()
        assert monitor.ask() == [b"S", b"1", final.strip(), b"0", b"P", b"9"]
        (task / "status.json").write_bytes(running)
        assert monitor.ask() == [b"P", b"9"]  # not watched any more
    finally:
        wrapper.kill()
        wrapper.wait()
        monitor.close()


def test_host_monitor_takes_the_pid_from_this_attempts_launch_record(tmp_path: Path) -> None:
    task = tmp_path / "task"
    (task / ".hsm").mkdir(parents=True)
    running = status_text("running", "null")
    wrapper = subprocess.Popen(["sleep", "30"])
    monitor = MonitorProc()
    try:
        (task / ".hsm" / "launch").write_text(f"1 beef {wrapper.pid}\n")
        (task / "status.json").write_bytes(running)
        # Another attempt's record does not name this attempt's wrapper: liveness unknown.
        assert monitor.ask("W", "1", str(task), "1", "cafe", "") == [
            b"S",
            b"1",
            running.strip(),
            b"",
            b"P",
            b"9",
        ]
        assert monitor.ask("W", "1", str(task), "1", "beef", "") == [
            b"S",
            b"1",
            running.strip(),
            b"1",
            b"P",
            b"9",
        ]
    finally:
        wrapper.kill()
        wrapper.wait()
        monitor.close()


def _fake_wrapper(task_dir: Path) -> int:
    """The pid of a process that looks like the job wrapper of ``task_dir`` (its last
    argument) and records the signal it gets. Not a child of this process, like a real
    wrapper (whose end nobody here would reap)."""
    script = "trap 'printf term >\"$1/got\"; exit 0' TERM; while :; do sleep 0.02; done"
    out = subprocess.run(
        ["bash", "-c", 'bash -c "$0" wrapper.sh "$1" </dev/null >/dev/null 2>&1 & echo $!']
        + [script, str(task_dir)],
        capture_output=True,
        check=True,
    )
    pid = int(out.stdout)
    deadline = time.monotonic() + 10  # until it runs bash on its script
    while not _cmdline(pid).endswith(str(task_dir).encode() + b"\0"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return pid


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_cancel_signals_only_the_wrapper_of_the_folder(tmp_path: Path) -> None:
    one, two, three = (tmp_path / n for n in ("one", "two", "three"))
    for d in (one, two, three):
        (d / ".hsm").mkdir(parents=True)
    w1, w2, w3 = _fake_wrapper(one), _fake_wrapper(two), _fake_wrapper(three)
    (two / ".hsm" / "launch").write_text(f"2 beef {w2}\n")
    (three / ".hsm" / "launch").write_text(f"1 beef {w3}\n")
    try:
        args = [
            *(str(one), "1", "", str(w2), ""),  # w2 is not the wrapper of `one`
            *(str(two), "2", "beef", "", ""),  # the pid from the launch record
            *(str(three), "2", "beef", "", ""),  # a record of another attempt
        ]
        done = subprocess.run(["bash", "-c", CANCEL, "hsm-cancel", *args], timeout=20)
        assert done.returncode == 0
        assert (two / "got").read_text() == "term" and not _cmdline(w2)
        assert _cmdline(w1) and _cmdline(w3)
        assert not (one / "got").exists() and not (three / "got").exists()
    finally:
        for pid in (w1, w2, w3):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
