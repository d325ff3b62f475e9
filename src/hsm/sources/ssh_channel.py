"""A long-lived program on one channel of a host's connection (the host monitor, the
puller): started once, it serves many requests with no new SSH session and no new remote
shell. When it ends, ``done`` is set; a new one has to be started."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod

import asyncssh

from hsm.sources.transport import ConnectionLost, RemoteError, SshTransport

log = logging.getLogger(__name__)


class ChannelProgram(ABC):
    what = "the program"  # its name in messages

    def __init__(self, transport: SshTransport) -> None:
        self.transport = transport
        self.done = asyncio.Event()
        self.error = ""  # why it ended
        self._proc: asyncssh.SSHClientProcess[bytes] | None = None
        self._task: asyncio.Task[None] | None = None

    @abstractmethod
    def argv(self) -> list[str]:
        """The remote command."""

    @abstractmethod
    async def _serve(self, proc: asyncssh.SSHClientProcess[bytes]) -> None:
        """Read from the program until it ends."""

    def _end(self) -> None:
        """It ended (or never started)."""
        self.done.set()

    async def start(self) -> None:
        """Return once the program runs; ConnectionLost (or RemoteError) if it cannot."""
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(ready))
        await ready

    async def _run(self, ready: asyncio.Future[None]) -> None:
        try:
            async with self.transport.channel() as conn:
                proc = await self.transport.open_process(conn, self.argv())
                self._proc = proc
                ready.set_result(None)
                await self._serve(proc)
        except Exception as exc:  # whatever ends the reader ends the program, cleanly
            if not isinstance(exc, OSError | asyncssh.Error | RemoteError):
                log.warning("%s: reader failed: %r", self.what, exc)
            self.error = str(exc) or type(exc).__name__
            if not ready.done():
                ready.set_exception(
                    exc
                    if isinstance(exc, RemoteError)
                    else ConnectionLost(f"starting {self.what}: {exc}")
                )
        finally:
            if not ready.done():
                ready.set_exception(ConnectionLost(f"{self.what} did not start"))
            self._end()

    @property
    def alive(self) -> bool:
        return self._proc is not None and not self.done.is_set()
