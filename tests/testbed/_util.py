"""Small process and /proc helpers shared by the test-bed modules."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

#: Environment variable put on every daemon the test bed starts, so leftovers of a crashed run
#: can be found by scanning ``/proc/*/environ``.
OWNER_ENV = "HSM_TESTBED_OWNER"

#: PATH used for commands run inside a host (same as sshd's default for root on Debian).
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Marker file in every folder the test bed creates; ``cleanup_stale`` only removes those.
MARKER = ".hsm-testbed"


class TestBedError(RuntimeError):
    """A test-bed step failed; the message names the command and its output."""

    __test__ = False


def run(
    argv: list[str],
    *,
    timeout: float = 30.0,
    check: bool = True,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` and capture text output; raise :class:`TestBedError` when ``check`` fails."""
    proc = subprocess.run(
        argv,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(env) if env is not None else None,
        check=False,
    )
    if check and proc.returncode != 0:
        raise TestBedError(
            f"command failed (exit {proc.returncode}): {argv!r}\n"
            f"stdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}"
        )
    return proc


def wait_until(
    predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.01
) -> None:
    """Poll ``predicate`` until it is true; raise :class:`TestBedError` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise TestBedError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


def all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def ns_id(path: str) -> tuple[int, int] | None:
    """(device, inode) of a namespace file such as ``/proc/PID/ns/net`` or ``/run/netns/X``."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def pids_in_netns(netns_file: str) -> list[int]:
    """Pids of all processes whose network namespace is the one bound at ``netns_file``."""
    target = ns_id(netns_file)
    if target is None:
        return []
    return [pid for pid in all_pids() if ns_id(f"/proc/{pid}/ns/net") == target]


def pids_with_env(name: str, match: Callable[[str], bool]) -> list[int]:
    """Pids of processes whose environment sets ``name`` to a value for which ``match`` is true."""
    key = f"{name}=".encode()
    found: list[int] = []
    me = os.getpid()
    for pid in all_pids():
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                entries = fh.read().split(b"\0")
        except OSError:
            continue
        for entry in entries:
            if entry.startswith(key) and match(entry[len(key) :].decode(errors="replace")):
                found.append(pid)
                break
    return found


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    # Field 3 (after the parenthesised command) is the state letter.
    state = stat.rsplit(b")", 1)[-1].split()[0]
    return state not in (b"Z", b"X")


def kill_pids(pids: Iterable[int], *, timeout: float = 5.0) -> None:
    """SIGKILL ``pids`` (stopped ones included) and wait until they are gone or zombies."""
    pids = [pid for pid in pids if pid != os.getpid()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.005)


def terminate(proc: subprocess.Popen[bytes] | None, *, timeout: float = 5.0) -> None:
    """Stop a child politely (SIGTERM, then SIGCONT in case it is stopped), SIGKILL on timeout."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGCONT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def mounts() -> list[tuple[str, str, str]]:
    """(source, mount point, fs type) of every mount in this mount namespace."""
    result: list[tuple[str, str, str]] = []
    with open("/proc/self/mounts") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) >= 3:
                # /proc/mounts escapes blanks as octal; undo the common ones.
                target = fields[1].replace("\\040", " ").replace("\\011", "\t")
                result.append((fields[0], target, fields[2]))
    return result


def hold_name(name: str) -> socket.socket | None:
    """Bind an abstract unix socket as a machine-wide lock that dies with this process.

    Returns the socket (keep it open to hold the lock) or None if another process holds it.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind("\0hsm-testbed/" + name)
    except OSError:
        sock.close()
        return None
    return sock


def listening(pid: int, port: int) -> bool:
    """True if something listens on TCP ``port`` in the network namespace of ``pid``."""
    want = f":{port:04X}"
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[1].endswith(want) and fields[3] == "0A":
                return True
    return False
