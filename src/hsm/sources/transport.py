"""SSH transport: one asyncssh connection per host, bounded channels, and rsync over OpenSSH.

Host keys are always verified against known_hosts. The OpenSSH config (aliases with
HostName, User, Port, IdentityFile, ProxyJump) is honoured by both asyncssh and rsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from hsm.errors import HsmError, SourceUnavailableError
from hsm.sources.process import CommandError, CommandResult, run_local

log = logging.getLogger(__name__)

MAX_CHANNELS = 5  # sshd's MaxSessions is 10; stay well below it
CHANNEL_RETRIES = 8


@dataclass(frozen=True)
class SshTarget:
    """Where and how to connect. Explicit fields override the OpenSSH config alias."""

    source: str
    host: str
    port: int | None = None
    user: str | None = None
    ssh_key: str | None = None
    known_hosts: str | None = None
    ssh_config: str | None = None
    connect_timeout: float = 3.0
    keepalive_interval: float = 1.0
    keepalive_count_max: int = 3

    def label(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{user}{self.host}{port}"

    def config_file(self) -> str | None:
        if self.ssh_config is None:
            return None
        path = os.path.expanduser(self.ssh_config)
        return path if os.path.exists(path) else None


class RemoteError(HsmError):
    """A remote command failed or the host could not be reached mid-sweep."""


@dataclass(frozen=True)
class RemoteResult:
    command: str
    exit_status: int
    stdout: str
    stderr: str

    def check(self, what: str) -> RemoteResult:
        if self.exit_status != 0:
            tail = "\n".join(self.stderr.strip().splitlines()[-5:])
            raise RemoteError(f"{what} failed (exit {self.exit_status})"
                              + (f": {tail}" if tail else ""))
        return self


class SshTransport:
    def __init__(self, target: SshTarget, *, max_channels: int = MAX_CHANNELS) -> None:
        self.target = target
        self._conn: asyncssh.SSHClientConnection | None = None
        self._lock = asyncio.Lock()
        self._channels = asyncio.Semaphore(max_channels)
        self._control_dir: str | None = None

    # -- connection ----------------------------------------------------------------------
    def _options(self) -> dict[str, Any]:
        t = self.target
        opts: dict[str, Any] = {
            "connect_timeout": t.connect_timeout,
            "login_timeout": max(t.connect_timeout, 5.0),
            "keepalive_interval": t.keepalive_interval,
            "keepalive_count_max": t.keepalive_count_max,
        }
        config = t.config_file()
        opts["config"] = [config] if config else []
        if t.port is not None:
            opts["port"] = t.port
        if t.user is not None:
            opts["username"] = t.user
        if t.ssh_key is not None:
            opts["client_keys"] = [os.path.expanduser(t.ssh_key)]
        if t.known_hosts is not None:
            opts["known_hosts"] = os.path.expanduser(t.known_hosts)
        return opts

    async def connect(self) -> asyncssh.SSHClientConnection:
        async with self._lock:
            if self._conn is not None and not self._is_closed(self._conn):
                return self._conn
            self._conn = await self._open()
            return self._conn

    @staticmethod
    def _is_closed(conn: asyncssh.SSHClientConnection) -> bool:
        transport = getattr(conn, "_transport", None)
        return transport is None or transport.is_closing()

    async def _open(self) -> asyncssh.SSHClientConnection:
        t = self.target
        where = f"source {t.source!r} ({t.label()})"
        try:
            return await asyncio.wait_for(
                asyncssh.connect(t.host, **self._options()),
                timeout=t.connect_timeout + 10)
        except asyncssh.HostKeyNotVerifiable as exc:
            known = t.known_hosts or "~/.ssh/known_hosts"
            port = t.port or 22
            raise SourceUnavailableError(
                f"{where}: the host key is not trusted ({exc.reason}). hsm never accepts an "
                f"unknown host key. If you trust this host, add its key with: ssh-keyscan -p "
                f"{port} {shlex.quote(t.host)} >> {known}  (then compare the fingerprint with "
                "the host's administrator)") from None
        except asyncssh.KeyImportError as exc:
            raise SourceUnavailableError(
                f"{where}: cannot use the key {t.ssh_key or '(from the ssh config)'}: {exc}. "
                "A key with a passphrase must be loaded into ssh-agent first: ssh-add KEYFILE"
            ) from None
        except asyncssh.PermissionDenied as exc:
            raise SourceUnavailableError(
                f"{where}: authentication failed ({exc.reason}); check user, ssh_key, and that "
                "ssh-agent holds the key") from None
        except (OSError, TimeoutError, asyncssh.Error) as exc:
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            raise SourceUnavailableError(f"{where}: cannot connect: {reason}") from None

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(TimeoutError, OSError, asyncssh.Error):
                await asyncio.wait_for(conn.wait_closed(), timeout=2)
        if self._control_dir is not None:
            await self._stop_master()

    def drop(self) -> None:
        """Forget a connection that is known to be dead (next call reconnects)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()

    # -- commands ------------------------------------------------------------------------
    async def run(self, command: str, *, input: bytes | str | None = None,
                  timeout: float | None = 60.0) -> RemoteResult:
        """Run one shell command line (built with shlex.quote by the caller)."""
        conn = await self.connect()
        for attempt in range(CHANNEL_RETRIES):
            async with self._channels:
                try:
                    proc = await conn.run(command, input=input, timeout=timeout, check=False,
                                          encoding=None)
                except asyncssh.ChannelOpenError as exc:
                    if attempt == CHANNEL_RETRIES - 1:
                        raise RemoteError(f"source {self.target.source!r}: cannot open a "
                                          f"channel: {exc.reason}") from None
                    await asyncio.sleep(0.05 * (attempt + 1))
                    continue
                except asyncssh.ProcessError as exc:  # timeout raises TimeoutError subclass
                    raise RemoteError(f"source {self.target.source!r}: {exc}") from None
                except (OSError, asyncssh.Error) as exc:
                    self.drop()
                    raise RemoteError(f"source {self.target.source!r}: connection lost: "
                                      f"{exc}") from None
            return RemoteResult(command, proc.exit_status if proc.exit_status is not None
                                else -1, _text(proc.stdout), _text(proc.stderr))
        raise AssertionError("unreachable")

    async def run_argv(self, argv: Sequence[str], **kwargs: Any) -> RemoteResult:
        return await self.run(shlex.join(argv), **kwargs)

    # -- OpenSSH for rsync ---------------------------------------------------------------
    def ssh_argv(self) -> list[str]:
        """An OpenSSH command with the same host, port, user, key and known_hosts."""
        t = self.target
        argv = ["ssh"]
        config = t.config_file()
        if config:
            argv += ["-F", config]
        if t.port is not None:
            argv += ["-p", str(t.port)]
        if t.user is not None:
            argv += ["-l", t.user]
        if t.ssh_key is not None:
            argv += ["-i", os.path.expanduser(t.ssh_key)]
        if t.known_hosts is not None:
            argv += ["-o", f"UserKnownHostsFile={os.path.expanduser(t.known_hosts)}"]
        argv += ["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                 "-o", f"ConnectTimeout={int(max(1, t.connect_timeout))}",
                 "-o", f"ServerAliveInterval={int(max(1, t.keepalive_interval))}",
                 "-o", f"ServerAliveCountMax={t.keepalive_count_max}"]
        if self._control_dir is None:
            self._control_dir = tempfile.mkdtemp(prefix="hsm-ssh-")
        argv += ["-o", "ControlMaster=auto", "-o",
                 f"ControlPath={self._control_dir}/%C", "-o", "ControlPersist=60"]
        return argv

    def rsync_remote(self, path: str) -> str:
        """``host:path`` for rsync (``--protect-args`` keeps the path away from the shell)."""
        return f"{self.target.host}:{path}"

    async def rsync(self, args: Sequence[str], *, what: str,
                    timeout: float = 600.0) -> CommandResult:
        ssh = " ".join(shlex.quote(a) for a in self.ssh_argv())
        argv = ["rsync", "--protect-args", "-e", ssh, *args]
        result = await run_local(argv, timeout=timeout)
        if result.returncode != 0:
            raise CommandError(result, f"{what} for source {self.target.source!r}")
        return result

    async def _stop_master(self) -> None:
        control_dir, self._control_dir = self._control_dir, None
        if control_dir is None:
            return
        for sock in Path(control_dir).glob("*"):
            with contextlib.suppress(OSError, TimeoutError):
                await run_local(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x"],
                                timeout=5)
        try:
            for p in Path(control_dir).glob("*"):
                p.unlink(missing_ok=True)
            os.rmdir(control_dir)
        except OSError:
            pass


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data
