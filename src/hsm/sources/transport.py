"""SSH transport: one asyncssh connection per host, bounded channels, tar pulls, rsync pushes.

Host keys are always verified: against ``known_hosts`` when it is configured, else against
the files the OpenSSH config names (``UserKnownHostsFile``, ``GlobalKnownHostsFile``), else
``~/.ssh/known_hosts``. A missing file trusts nothing; nothing is ever accepted silently.
The OpenSSH config (aliases with HostName, User, Port, IdentityFile, ProxyJump) is read by
asyncssh and by the ``ssh`` that rsync runs, and the explicit fields override it for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import socket
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from hsm.backoff import Backoff, Sleep, retry
from hsm.errors import HsmError, SourceUnavailableError
from hsm.sources.process import CommandError, CommandResult, run_local
from hsm.sources.untar import safe_extractall

log = logging.getLogger(__name__)

MAX_CHANNELS = 5  # sshd's MaxSessions is 10 and refused opens at 7-10 in flight
CHANNEL_RETRIES = 8
RSYNC_TRIES = 3  # a push broken by the network is tried again after 1 s, then 2 s
RSYNC_TRANSIENT = frozenset({10, 12, 30, 35, 255})  # socket, protocol, timeouts; ssh
SPOOL_IN_MEMORY = 16 << 20  # pulled results beyond this go to a temporary file
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
AGENT_TIMEOUT = 2.0  # seconds an ssh-agent has to list its keys before it is skipped
NOTHING_TRUSTED: tuple[list[Any], list[Any], list[Any]] = ([], [], [])


@dataclass(frozen=True)
class SshTarget:
    """Where and how to connect. Explicit fields override the OpenSSH config alias."""

    source: str
    host: str
    port: int | None = None
    user: str | None = None
    ssh_key: str | None = None
    known_hosts: str | None = None
    ssh_config: str | None = None  # an existing file, or None: no OpenSSH config at all
    connect_timeout: float = 3.0
    keepalive_interval: float = 1.0
    keepalive_count_max: int = 3

    def label(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{user}{self.host}{port}"

    @property
    def silence_limit(self) -> float:
        """How long a dead connection can go unnoticed (keepalive interval x count)."""
        return self.keepalive_interval * self.keepalive_count_max

    @property
    def lost_after(self) -> float:
        """Seconds after the host went silent when its running tasks count as lost: a
        quarter of a second more than a dead connection or a failed connect takes to notice
        (3.25 s with the defaults). Erring early costs nothing worse than a rerun: an
        attempt taken as lost that turns out to run is fenced (stopped, or its late result
        recorded and not used)."""
        return max(self.silence_limit, self.connect_timeout) + 0.25


class RemoteError(HsmError):
    """A remote command could not be run (no channel, connection lost, timeout)."""


class ConnectionLost(RemoteError):
    """The connection to the host broke or could not be made."""


class ConnectError(SourceUnavailableError):
    """The host cannot be used. ``unreachable`` is True for network failures (refused,
    timed out), which may pass; False for auth and host-key failures, which will not."""

    def __init__(self, message: str, *, unreachable: bool) -> None:
        super().__init__(message)
        self.unreachable = unreachable


def check_remote(result: CommandResult, what: str) -> CommandResult:
    """``result`` of a remote command, or RemoteError when it failed (its exit status and
    the tail of its stderr)."""
    if result.returncode != 0:
        tail = result.stderr_tail()
        raise RemoteError(
            f"{what} failed (exit {result.returncode})" + (f": {tail}" if tail else "")
        )
    return result


class _Client(asyncssh.SSHClient):
    def __init__(self, on_lost: Callable[[Exception | None], None]) -> None:
        self._on_lost = on_lost

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost(exc)


# What sshd hands to the remote user's login shell, for every command hsm runs there: no
# newline, no quoting, nothing that bash, sh, zsh, tcsh/csh and fish read differently.
REMOTE_COMMAND = "bash -s"


def remote_stdin(argv: Sequence[str], input: bytes | None) -> bytes:
    """The stdin of `REMOTE_COMMAND` for one command: one ``exec ARGV`` line, quoted here
    (``shlex.join``), which bash parses whole before it runs it, then the command's own input
    (bash reads a pipe byte by byte, so the command gets every byte after that line)."""
    line = shlex.join(argv).encode("utf-8", "surrogateescape")
    return b"exec " + line + b"\n" + (input or b"")


class SshTransport:
    """One connection to one host, shared by every command of a source."""

    def __init__(self, target: SshTarget, *, max_channels: int = MAX_CHANNELS) -> None:
        self.target = target
        self.max_channels = max_channels
        self._conn: asyncssh.SSHClientConnection | None = None
        self._lock = asyncio.Lock()
        self._channels = asyncio.Semaphore(max_channels)
        self._openssh: dict[str, list[str]] | None = None
        self.on_lost: Callable[[Exception | None], None] | None = None
        self.lost_reason: str = ""
        self._agent: tuple[str | None] | None = None  # (usable agent socket or None,), cached
        self.agent_problem = ""  # why the ssh-agent was skipped, for the error messages

    # -- OpenSSH's view of the target ------------------------------------------------------
    async def openssh(self) -> dict[str, list[str]]:
        """``ssh -G``: the options OpenSSH resolves for this target (cached)."""
        if self._openssh is None:
            argv = [*self._ssh_base(), "-G", self.target.host]
            result = await run_local(argv, timeout=10)
            options: dict[str, list[str]] = {}
            for line in result.stdout.splitlines():
                key, _, value = line.partition(" ")
                options.setdefault(key.lower(), []).extend(value.split())
            self._openssh = options
        return self._openssh

    def _ssh_base(self) -> list[str]:
        t = self.target
        argv = ["ssh", "-F", t.ssh_config or "/dev/null"]
        if t.port is not None:
            argv += ["-p", str(t.port)]
        if t.user is not None:
            argv += ["-l", t.user]
        if t.ssh_key is not None:
            argv += ["-i", os.path.expanduser(t.ssh_key)]
        if t.known_hosts is not None:
            argv += [
                "-o",
                f"UserKnownHostsFile={os.path.expanduser(t.known_hosts)}",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
            ]
        return argv

    async def known_hosts_files(self) -> list[str]:
        """The known_hosts files that exist, in the order OpenSSH reads them."""
        if self.target.known_hosts is not None:
            names = [self.target.known_hosts]
        else:
            options = await self.openssh()
            names = options.get("userknownhostsfile", []) + options.get("globalknownhostsfile", [])
        files = [os.path.expanduser(n) for n in names if n.lower() != "none"]
        return [f for f in files if os.path.isfile(f)]

    # -- connection ----------------------------------------------------------------------
    async def _options(self) -> dict[str, Any]:
        t = self.target
        known = await self.known_hosts_files()
        opts: dict[str, Any] = {
            "config": [t.ssh_config] if t.ssh_config else [],
            "connect_timeout": t.connect_timeout,
            "keepalive_interval": t.keepalive_interval,
            "keepalive_count_max": t.keepalive_count_max,
            # Never None: None would switch host key checking off.
            "known_hosts": known or NOTHING_TRUSTED,
            # A key that needs a passphrase is skipped: ssh-agent may hold it.
            "ignore_encrypted": True,
            # AES-GCM first: with AES instructions it costs half the CPU of ChaCha20 here.
            "encryption_algs": list(
                dict.fromkeys(
                    [
                        *PREFERRED_CIPHERS,
                        *(a.decode() for a in asyncssh.encryption.get_default_encryption_algs()),
                    ]
                )
            ),
        }
        if t.port is not None:
            opts["port"] = t.port
        if t.user is not None:
            opts["username"] = t.user
        if t.ssh_key is not None:
            opts["client_keys"] = [os.path.expanduser(t.ssh_key)]
        opts["agent_path"] = await self.agent()
        return opts

    async def agent(self) -> str | None:
        """The ssh-agent socket to use: OpenSSH's ``IdentityAgent`` (``none``: no agent),
        else ``SSH_AUTH_SOCK``. An agent that does not list its keys within AGENT_TIMEOUT
        (it accepts but never answers) is skipped, so the key files are still tried; the
        reason goes into ``agent_problem``."""
        if self._agent is None:
            options = await self.openssh()
            value = (options.get("identityagent") or ["SSH_AUTH_SOCK"])[0]
            if value.lower() == "none":
                path = None
            else:
                name = value[1:] if value.startswith("$") else value
                if name == "SSH_AUTH_SOCK" or value.startswith("$"):
                    value = os.environ.get(name, "")
                path = os.path.expanduser(value) if value else None
            if path is not None and not await _agent_answers(path):
                self.agent_problem = (
                    f"the ssh-agent at {path} (SSH_AUTH_SOCK) accepts connections but did not "
                    f"answer within {AGENT_TIMEOUT:g} s, so it was skipped; restart it "
                    '(eval "$(ssh-agent)" && ssh-add KEY), or unset SSH_AUTH_SOCK, or set '
                    "'IdentityAgent none' for this host in the ssh config"
                )
                log.warning("source %s: %s", self.target.source, self.agent_problem)
                path = None
            self._agent = (path,)
        return self._agent[0]

    @property
    def connected(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.is_closed()

    async def connect(self) -> asyncssh.SSHClientConnection:
        async with self._lock:
            conn = self._conn
            if conn is not None and not conn.is_closed():
                return conn
            self._conn = await self._open()
            return self._conn

    def _lost(self, conn: asyncssh.SSHClientConnection | None, exc: Exception | None) -> None:
        if conn is None or conn is not self._conn:
            return
        self.lost_reason = str(exc) if exc else "closed by the host"
        if self.on_lost is not None:
            self.on_lost(exc)

    async def _open(self) -> asyncssh.SSHClientConnection:
        t = self.target
        where = f"source {t.source!r} ({t.label()})"
        box: list[asyncssh.SSHClientConnection] = []
        try:
            conn, _ = await asyncio.wait_for(
                asyncssh.create_connection(
                    lambda: _Client(lambda exc: self._lost(box[0] if box else None, exc)),
                    t.host,
                    **(await self._options()),
                ),
                timeout=t.connect_timeout + 10,
            )
            box.append(conn)
            return conn
        except asyncssh.HostKeyNotVerifiable as exc:
            raise ConnectError(
                await self._host_key_message(where, exc.reason), unreachable=False
            ) from None
        except asyncssh.PermissionDenied as exc:
            raise ConnectError(
                await self._auth_message(where, exc.reason), unreachable=False
            ) from None
        except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
            raise ConnectError(
                f"{where}: cannot use the key {t.ssh_key}: {exc}", unreachable=False
            ) from None
        except FileNotFoundError as exc:
            raise ConnectError(
                f"{where}: {exc.strerror}: {exc.filename}", unreachable=False
            ) from None
        except (OSError, TimeoutError, asyncssh.Error) as exc:
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            if isinstance(exc, TimeoutError):
                reason = f"no answer within {t.connect_timeout:g} s (connect_timeout)"
                if self.agent_problem:
                    reason += f"; also, {self.agent_problem}"
            elif isinstance(exc, ConnectionRefusedError):
                reason = "connection refused (is sshd running there, on that port?)"
            elif isinstance(exc, socket.gaierror):
                reason = f"unknown host name {t.host!r} (not an alias in the ssh config either)"
            raise ConnectError(f"{where}: cannot connect: {reason}", unreachable=True) from None

    async def _host_key_message(self, where: str, reason: str) -> str:
        options = await self.openssh()
        hostname = options.get("hostname", [self.target.host])[0]
        port = options.get("port", ["22"])[0]
        known = await self.known_hosts_files()
        target = (
            os.path.expanduser(self.target.known_hosts)
            if self.target.known_hosts
            else (
                known[0]
                if known
                else os.path.expanduser(
                    options.get("userknownhostsfile", ["~/.ssh/known_hosts"])[0]
                )
            )
        )
        scan = shlex.join(["ssh-keyscan", "-p", port, hostname])
        return (
            f"{where}: the host key of {hostname} port {port} is not trusted ({reason}); "
            f"checked: {', '.join(known) or 'no known_hosts file exists'}. hsm never "
            f"accepts an unknown host key. If you trust this host, add its key: "
            f"{scan} >> {shlex.quote(target)}  and compare the fingerprint "
            f"(ssh-keygen -lf {shlex.quote(target)}) with the one the host's administrator "
            "gives you. If the key changed, remove the old line first: ssh-keygen -R "
            f"{shlex.quote(hostname)} -f {shlex.quote(target)}"
        )

    async def _auth_message(self, where: str, reason: str) -> str:
        options = await self.openssh()
        user = options.get("user", ["?"])[0]
        keys = [self.target.ssh_key] if self.target.ssh_key else options.get("identityfile", [])
        locked = [k for k in keys if _needs_passphrase(os.path.expanduser(k))]
        agent = os.environ.get("SSH_AUTH_SOCK")
        message = f"{where}: authentication as {user!r} failed ({reason})."
        if locked:
            names = ", ".join(locked)
            if not agent:
                return (
                    f"{message} The key {names} needs a passphrase and no ssh-agent is "
                    "running (SSH_AUTH_SOCK is not set); hsm never asks for passphrases. "
                    f'Start one and load the key: eval "$(ssh-agent)" && ssh-add {names}'
                )
            return (
                f"{message} The key {names} needs a passphrase and the ssh-agent at "
                f"{agent} does not hold it (or the host refuses it). Load it with: "
                f"ssh-add {names}"
            )
        tried = ", ".join(keys) if keys else "no key file"
        if self.agent_problem:
            return (
                f"{message} Tried: {tried}; {self.agent_problem}. Check user, ssh_key, "
                "and the host's authorized_keys."
            )
        return (
            f"{message} Tried: {tried}{' and the ssh-agent' if agent else ''}. Check "
            "user, ssh_key, and the host's authorized_keys."
        )

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(TimeoutError, OSError, asyncssh.Error):
                await asyncio.wait_for(conn.wait_closed(), timeout=2)

    def drop(self) -> None:
        """Forget a connection that is known to be dead (the next call reconnects)."""
        conn = self._conn
        if conn is not None:
            conn.abort()

    # -- commands ------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def channel(self) -> Any:
        """A channel slot: at most ``max_channels`` in flight on this connection."""
        async with self._channels:
            yield await self.connect()

    async def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float | None = 60.0
    ) -> CommandResult:
        """Run one command (an argv list, quoted here), whatever the remote user's login
        shell (see `remote_stdin`)."""
        for attempt in range(CHANNEL_RETRIES):
            async with self.channel() as conn:
                try:
                    proc = await conn.run(
                        REMOTE_COMMAND,
                        input=remote_stdin(argv, input),
                        timeout=timeout,
                        check=False,
                        encoding=None,
                    )
                except asyncssh.ChannelOpenError as exc:
                    if attempt == CHANNEL_RETRIES - 1:
                        raise RemoteError(
                            f"source {self.target.source!r}: cannot open a channel: {exc.reason}"
                        ) from None
                    log.debug(
                        "channel open refused on %s (%s); retrying", self.target.source, exc.reason
                    )
                    await asyncio.sleep(0.05 * (attempt + 1))
                    continue
                except asyncssh.ProcessError as exc:  # includes the timeout
                    raise RemoteError(f"source {self.target.source!r}: {exc}") from None
                except (OSError, asyncssh.Error) as exc:
                    raise ConnectionLost(
                        f"source {self.target.source!r}: connection lost: {exc}"
                    ) from None
            status = proc.exit_status if proc.exit_status is not None else -1
            return CommandResult(tuple(argv), status, _text(proc.stdout), _text(proc.stderr))
        raise AssertionError("unreachable")

    async def run_script(
        self,
        script: str,
        args: Sequence[str],
        *,
        name: str,
        input: bytes | None = None,
        timeout: float | None = 60.0,
    ) -> CommandResult:
        """``bash -c SCRIPT NAME ARGS...``: user values only ever arrive as arguments."""
        return await self.run(["bash", "-c", script, name, *args], input=input, timeout=timeout)

    async def open_process(
        self, conn: asyncssh.SSHClientConnection, argv: Sequence[str]
    ) -> asyncssh.SSHClientProcess[bytes]:
        """Start a remote process on a channel the caller holds (see ``channel``): like
        `run`, ``argv`` reaches bash on stdin, and what the caller writes follows it."""
        for attempt in range(CHANNEL_RETRIES):
            try:
                proc: asyncssh.SSHClientProcess[bytes] = await conn.create_process(
                    REMOTE_COMMAND, encoding=None
                )
                proc.stdin.write(remote_stdin(argv, None))
                return proc
            except asyncssh.ChannelOpenError as exc:
                if attempt == CHANNEL_RETRIES - 1:
                    raise RemoteError(
                        f"source {self.target.source!r}: cannot open a channel: {exc.reason}"
                    ) from None
                await asyncio.sleep(0.05 * (attempt + 1))
            except (OSError, asyncssh.Error) as exc:
                raise ConnectionLost(f"source {self.target.source!r}: {exc}") from None
        raise AssertionError("unreachable")

    async def pull(
        self, remote_dir: str, names: Sequence[str], local_dir: Path, *, exclude: Sequence[str] = ()
    ) -> None:
        """Copy ``remote_dir/NAME`` for each name into ``local_dir/NAME``: one ``tar`` over
        the existing connection for all of them, unpacked here by ``unpack`` (no absolute paths,
        no ``..``, no links out of ``local_dir``, no devices)."""
        argv = ["tar", "-C", remote_dir, "-cf", "-", "--anchored", "--no-wildcards"]
        argv += [f"--exclude={e}" for e in exclude]
        argv += ["--", *names]
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
            async with self.channel() as conn:
                proc = await self.open_process(conn, argv)
                try:
                    while data := await proc.stdout.read(1 << 16):
                        spool.write(data)
                    err = _text(await proc.stderr.read())
                    await proc.wait(timeout=30)
                except (OSError, asyncssh.Error, TimeoutError) as exc:
                    proc.close()
                    raise ConnectionLost(
                        f"source {self.target.source!r}: pulling results: "
                        f"{exc or type(exc).__name__}"
                    ) from None
            status = proc.exit_status
            # GNU tar: 1 means a file changed while it was read (the archive is complete).
            if status not in (0, 1):
                detail = " | ".join(err.strip().splitlines()[-3:])
                raise RemoteError(
                    f"source {self.target.source!r}: pulling "
                    f"{', '.join(names)} from {remote_dir} failed (tar exit "
                    f"{status})" + (f": {detail}" if detail else "")
                )
            large = spool.tell() > SPOOL_IN_MEMORY
            spool.seek(0)
            if large:  # on disk: unpack off the event loop
                await asyncio.to_thread(unpack, spool, local_dir)
            else:
                unpack(spool, local_dir)

    # -- OpenSSH for rsync ---------------------------------------------------------------
    def ssh_argv(self) -> list[str]:
        """An OpenSSH command with the same config, host, port, user, key and known_hosts;
        it never prompts and never accepts an unknown host key."""
        t = self.target
        return [
            *self._ssh_base(),
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "UpdateHostKeys=no",
            *(["-o", "IdentityAgent=none"] if self.agent_problem else []),
            "-o",
            f"ConnectTimeout={max(1, round(t.connect_timeout))}",
            "-o",
            "ServerAliveInterval="
            + (str(max(1, round(t.keepalive_interval))) if t.keepalive_interval else "0"),
            "-o",
            f"ServerAliveCountMax={t.keepalive_count_max}",
        ]

    def rsync_remote(self, path: str) -> str:
        """``host:path`` for rsync (``--protect-args`` keeps the path away from the shell)."""
        return f"{self.target.host}:{path}"

    async def rsync(
        self,
        args: Sequence[str],
        *,
        what: str,
        timeout: float = 3600.0,
        sleep: Sleep = asyncio.sleep,
    ) -> CommandResult:
        """Run rsync over ``ssh_argv``; a transfer broken by the network (rsync exit 10, 12,
        30, 35 or ssh's 255) is tried again, at most ``RSYNC_TRIES`` times in all."""
        argv = ["rsync", "--protect-args", "-e", shlex.join(self.ssh_argv()), *args]

        async def once() -> CommandResult:
            result = await run_local(argv, timeout=timeout)
            if result.returncode in RSYNC_TRANSIENT:
                raise _Transient(result)
            return result

        try:
            result = await retry(
                once, backoff=Backoff(tries=RSYNC_TRIES), sleep=sleep, retry_on=(_Transient,)
            )
        except _Transient as exc:
            result = exc.result
        if result.returncode != 0:
            raise CommandError(result, f"{what} for source {self.target.source!r}")
        return result


class _Transient(Exception):
    def __init__(self, result: CommandResult) -> None:
        super().__init__(f"exit {result.returncode}")
        self.result = result


def unpack(archive: Any, local_dir: Path) -> None:
    """Unpack a tar archive safely on every Python (see ``hsm.sources.untar``): nothing
    lands outside ``local_dir`` (no absolute paths, no ``..``, no links pointing out, no
    devices)."""
    local_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=archive, mode="r:") as tar:
        safe_extractall(tar, local_dir)


async def _agent_answers(path: str) -> bool:
    """False when the agent at ``path`` accepts but does not list its keys in time. Other
    failures (no such socket) are left to asyncssh, which then goes on without it."""
    agent: asyncssh.SSHAgentClient | None = None
    try:
        agent = await asyncio.wait_for(asyncssh.connect_agent(path), AGENT_TIMEOUT)
        if agent is not None:
            await asyncio.wait_for(agent.get_keys(), AGENT_TIMEOUT)
    except TimeoutError:
        return False
    except (OSError, asyncssh.Error, ValueError):
        return True
    finally:
        if agent is not None:
            agent.close()
    return True


def _needs_passphrase(path: str) -> bool:
    try:
        asyncssh.read_private_key(path)
    except asyncssh.KeyImportError as exc:
        return "passphrase" in str(exc).lower()
    except (asyncssh.KeyEncryptionError, OSError):
        return False
    return False


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data
