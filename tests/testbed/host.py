"""One SSH host of a test bed, with fault injection (see ``hosts.py`` for the layout).

``freeze_sshd()`` stops only the listening sshd (SIGSTOP): new connections are accepted by the
kernel but never get a banner, so clients time out (``ConnectTimeout=3`` fails after 3 s), while
sessions that are already open keep working. ``freeze_sshd(sessions=True)`` also stops every
session process of that sshd, so open connections hang as well.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ._util import (
    HOST_PATH,
    OWNER_ENV,
    TestBedError,
    listening,
    pids_in_netns,
    run,
    terminate,
    wait_until,
)

if TYPE_CHECKING:
    from .hosts import TestBed

__all__ = ["Host"]

FILLER_NAME = ".hsm-testbed-filler"
NORMAL_LOAD = 0.05


class Host:
    """One SSH host of a :class:`TestBed`. Reach it by ``ip`` (port 22) or by ``name`` through
    ``ssh -F ssh_config_path``; use :meth:`run` for commands inside the host without SSH."""

    def __init__(self, bed: TestBed, index: int) -> None:
        self.index = index
        self.name = f"{bed.prefix}-h{index}"
        self.ip = f"{bed.subnet}.{10 + index}"
        self.port = 22
        self.user = "root"
        self.key_path: Path = bed.key_path
        self.known_hosts: Path = bed.known_hosts
        self.ssh_config_path: Path = bed.ssh_config_path
        self.work_dir: str = bed.work_dir
        #: Per-host folder in the root namespace (config, logs, fake /proc files).
        self.dir: Path = bed.base_dir / self.name
        #: The work disk as seen from the root namespace (same tmpfs as ``work_dir`` inside).
        self.disk_dir: Path = self.dir / "disk"
        self.disk_bytes = 0
        self.netns = self.name
        self.netns_file = f"/run/netns/{self.name}"
        self.veth = f"{bed.prefix}-{index}"
        self.host_key: Path = self.dir / "ssh_host_ed25519_key"
        self.sshd_config: Path = self.dir / "sshd_config"
        self.sshd_log: Path = self.dir / "sshd.log"
        self.loadavg_path: Path = self.dir / "loadavg"
        self.meminfo_path: Path = self.dir / "meminfo"
        #: Real core count; ``nproc`` on the host reports the same (it cannot be faked).
        self.nproc: int = os.cpu_count() or 1
        self._owner = bed.prefix
        self._holder: subprocess.Popen[bytes] | None = None
        self._sshd: subprocess.Popen[bytes] | None = None
        self._frozen: set[int] = set()

    def __repr__(self) -> str:
        return f"Host({self.name!r}, ip={self.ip!r})"

    def sshd_config_text(self) -> str:
        """Contents of this host's sshd_config."""
        return "\n".join(
            [
                "Port 22",
                "ListenAddress 0.0.0.0",
                f"HostKey {self.host_key}",
                f"PidFile {self.dir / 'sshd.pid'}",
                f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "UsePAM no",
                "StrictModes no",
                "MaxSessions 10",
                "MaxStartups 200:30:400",
                "UseDNS no",
                "PrintMotd no",
                "PrintLastLog no",
                "AcceptEnv LANG LC_*",
                "Subsystem sftp internal-sftp",
                "LogLevel VERBOSE",
                "",
            ]
        )

    # -- entering the host ---------------------------------------------------------------

    @property
    def holder_pid(self) -> int:
        if self._holder is None or self._holder.poll() is not None:
            raise TestBedError(f"{self.name} is not running")
        return self._holder.pid

    def nsenter_argv(self, argv: list[str]) -> list[str]:
        """``argv`` prefixed so that it runs in the host's net + mount + UTS namespaces."""
        return ["nsenter", f"--target={self.holder_pid}", "--net", "--mount", "--uts", "--", *argv]

    def host_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {"PATH": HOST_PATH, "HOME": "/root", "USER": "root", "LANG": "C.UTF-8"}
        env[OWNER_ENV] = self._owner
        if extra:
            env.update(extra)
        return env

    def run(
        self,
        argv: list[str],
        timeout: float = 30.0,
        *,
        check: bool = False,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the host (no SSH), capturing text output."""
        return run(
            self.nsenter_argv(argv),
            timeout=timeout,
            check=check,
            input=input,
            env=self.host_env(env),
        )

    def popen(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str] | None = None,
        stdout: Any = subprocess.DEVNULL,
        stderr: Any = subprocess.DEVNULL,
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process inside the host (its own session, cwd ``/``)."""
        return subprocess.Popen(
            self.nsenter_argv(argv),
            env=self.host_env(env),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            cwd="/",
            start_new_session=True,
        )

    def path(self, inside: str) -> Path:
        """Path in the root namespace that shows ``inside`` as the host sees it."""
        return Path(f"/proc/{self.holder_pid}/root") / inside.lstrip("/")

    def pids(self) -> list[int]:
        """Every process in the host's network namespace (holder, sshd, sessions, jobs)."""
        return pids_in_netns(self.netns_file)

    # -- sshd ----------------------------------------------------------------------------

    @property
    def sshd_pid(self) -> int | None:
        if self._sshd is None or self._sshd.poll() is not None:
            return None
        return self._sshd.pid

    def start_sshd(self, timeout: float = 10.0) -> None:
        """Start the host's sshd (no-op if it runs) and wait until it listens on port 22."""
        self._launch_sshd()
        self.wait_sshd(timeout)

    def _launch_sshd(self) -> None:
        if self.sshd_pid is not None:
            return
        self._frozen.clear()
        self._sshd = self.popen(
            ["/usr/sbin/sshd", "-D", "-f", str(self.sshd_config), "-E", str(self.sshd_log)]
        )

    def wait_sshd(self, timeout: float = 10.0) -> None:
        proc = self._sshd
        if proc is None:
            raise TestBedError(f"{self.name}: sshd was not started")
        holder = self.holder_pid
        wait_until(
            lambda: proc.poll() is not None or listening(holder, self.port),
            timeout=timeout,
            what=f"sshd on {self.name}",
        )
        if proc.poll() is not None:
            tail = self.sshd_log.read_text(errors="replace")[-2000:]
            raise TestBedError(f"sshd on {self.name} exited ({proc.returncode}):\n{tail}")

    def kill_sshd(self) -> None:
        """Stop the listening sshd (SIGTERM): new connections are refused at once.

        Sessions that are already open keep running, as with a real ``systemctl stop ssh``.
        """
        terminate(self._sshd)
        self._sshd = None
        self._frozen.clear()

    def _session_pids(self) -> list[int]:
        listener = self.sshd_pid
        found = []
        for pid in self.pids():
            if pid == listener:
                continue
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if comm.startswith("sshd"):
                found.append(pid)
        return found

    def freeze_sshd(self, sessions: bool = False) -> None:
        """SIGSTOP the listening sshd: new connections get no banner and time out.

        With ``sessions=True`` also stop the sshd processes of open sessions, so that open
        connections hang too (keepalives go unanswered).
        """
        listener = self.sshd_pid
        if listener is None:
            raise TestBedError(f"{self.name}: sshd is not running")
        targets = [listener, *(self._session_pids() if sessions else [])]
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
            self._frozen.add(pid)

    def freeze(self) -> None:
        """SIGSTOP every process of the host (sshd, sessions, job wrappers, tasks), as a host
        that hangs: connections time out, and its tasks make no progress until thawed."""
        for pid in self.pids():
            if pid == self.holder_pid:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
            self._frozen.add(pid)

    def thaw_sshd(self) -> None:
        """SIGCONT everything :meth:`freeze_sshd` or :meth:`freeze` stopped."""
        for pid in sorted(self._frozen):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self._frozen.clear()

    # -- network -------------------------------------------------------------------------

    def cut_link(self) -> None:
        """Set the host's veth down: packets to and from the host are dropped silently."""
        run(["ip", "link", "set", "dev", self.veth, "down"])

    def restore_link(self) -> None:
        run(["ip", "link", "set", "dev", self.veth, "up"])

    def link_up(self) -> bool:
        try:
            flags = int(Path(f"/sys/class/net/{self.veth}/flags").read_text(), 16)
        except OSError:
            return False
        return bool(flags & 0x1)

    # -- disk ----------------------------------------------------------------------------

    def disk_free(self) -> int:
        st = os.statvfs(self.disk_dir)
        return st.f_bavail * st.f_frsize

    def fill_disk(self, leave_bytes: int = 0) -> None:
        """Write a filler file on the work disk so that about ``leave_bytes`` stay free."""
        filler = self.disk_dir / FILLER_NAME
        free = self.disk_free()
        if filler.exists():
            free += filler.stat().st_size
        target = max(free - leave_bytes, 0)
        with open(filler, "wb", buffering=0) as fh:
            try:
                if target:
                    os.posix_fallocate(fh.fileno(), 0, target)
            except OSError:
                fh.truncate(0)
                _write_until_full(fh, target)
            if leave_bytes == 0:
                fh.seek(0, os.SEEK_END)
                _write_until_full(fh, None)

    def free_disk(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.disk_dir / FILLER_NAME).unlink()

    def clear_work_dir(self) -> None:
        """Remove everything on the work disk."""
        for entry in self.disk_dir.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()

    # -- fake load and memory ------------------------------------------------------------

    def set_load(
        self,
        load1: float,
        cores: int | None = None,
        *,
        load5: float | None = None,
        load15: float | None = None,
    ) -> None:
        """Rewrite the host's ``/proc/loadavg`` in place.

        ``load1`` is written as is; if ``cores`` is given, ``load1`` (and ``load5``/``load15``)
        are per-core fractions and the file gets ``load * cores`` (e.g. ``set_load(0.9,
        cores=host.nproc)`` means 90 % busy). ``nproc`` on the host always shows the real core
        count. ``os.getloadavg()`` does not read this file; ``cat /proc/loadavg`` does.
        """
        scale = cores if cores is not None else 1
        values = [load1, load1 if load5 is None else load5, load1 if load15 is None else load15]
        text = " ".join(f"{value * scale:.2f}" for value in values)
        _rewrite(self.loadavg_path, f"{text} 1/100 {self.holder_pid}\n")

    def set_memory_percent(self, percent: float) -> None:
        """Rewrite the host's ``/proc/meminfo`` in place so that ``percent`` % of memory is used.

        MemTotal stays the real total; MemFree = MemAvailable = total * (1 - percent / 100);
        Buffers, Cached and SReclaimable are 0 so that ``free`` agrees.
        """
        if not 0 <= percent <= 100:
            raise ValueError("percent must be within 0..100")
        _rewrite(self.meminfo_path, _fake_meminfo(real_meminfo(), percent))

    def reset_load_memory(self) -> None:
        self.set_load(NORMAL_LOAD)
        _rewrite(self.meminfo_path, real_meminfo())

    def set_login_shell(self, shell: str | None) -> None:
        """Make ``shell`` (e.g. ``/usr/bin/tcsh``) root's login shell on this host only: a
        copy of /etc/passwd bound over it in the host's mount namespace. None: the machine's
        own again. sshd reads it for each new session."""
        mounted = self.run(["mountpoint", "-q", "/etc/passwd"]).returncode == 0
        if mounted:
            self.run(["umount", "/etc/passwd"], check=True)
        if shell is None:
            return
        if not Path(shell).exists():
            raise FileNotFoundError(f"{shell} is not installed (scripts/install-testbed-packages)")
        lines = []
        for line in Path("/etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == "root":
                fields[-1] = shell
            lines.append(":".join(fields))
        copy = self.dir / "passwd"
        copy.write_text("\n".join(lines) + "\n")
        copy.chmod(0o644)
        self.run(["mount", "--bind", str(copy), "/etc/passwd"], check=True)

    def reset(self, *, clear_work_dir: bool = True) -> None:
        """Undo every fault: thaw and (re)start sshd, link up, disk freed, normal load/memory,
        the machine's own login shell, root's home (bound over /root) empty again: a shell
        like fish leaves its files there."""
        self.set_login_shell(None)
        for entry in (self.dir / "home").iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        self.thaw_sshd()
        if not self.link_up():
            self.restore_link()
        self.start_sshd()
        self.free_disk()
        if clear_work_dir:
            self.clear_work_dir()
        self.reset_load_memory()


def _write_until_full(fh: BinaryIO, limit: int | None) -> None:
    """Append zeros to an unbuffered file until ``limit`` bytes or the disk is full."""
    written = 0
    chunk = b"\0" * (1 << 16)
    while limit is None or written < limit:
        size = len(chunk) if limit is None else min(len(chunk), limit - written)
        try:
            count = fh.write(chunk[:size])
        except OSError:
            return
        if not count:
            return
        written += count


def _rewrite(path: Path, text: str) -> None:
    """Rewrite ``path`` in place (same inode), as the bind mounts over /proc need."""
    with open(path, "w") as fh:
        fh.write(text)


def real_meminfo() -> str:
    return Path("/proc/meminfo").read_text()


def _fake_meminfo(real: str, percent: float) -> str:
    total_kb = 0
    for line in real.splitlines():
        if line.startswith("MemTotal:"):
            total_kb = int(line.split()[1])
    available_kb = int(total_kb * (1 - percent / 100))
    replace = {
        "MemFree": available_kb,
        "MemAvailable": available_kb,
        "Buffers": 0,
        "Cached": 0,
        "SReclaimable": 0,
        "Shmem": 0,
    }
    out = []
    for line in real.splitlines():
        key = line.split(":", 1)[0]
        if key in replace:
            line = f"{key + ':':<16}{replace[key]:>8} kB"
        out.append(line)
    return "\n".join(out) + "\n"
