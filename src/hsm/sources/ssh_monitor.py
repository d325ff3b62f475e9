"""The host monitor: one long-lived remote process per SSH source that starts job wrappers
and reports changes of their status files within a few milliseconds, over one channel.

Polling then costs no round trip: the source answers from what the monitor last reported,
and the monitor wakes the engine when something changed. The remote side is
``ssh_scripts.MONITOR``; it is only a helper, tasks never depend on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncssh

from hsm.sources.ssh_channel import ChannelProgram
from hsm.sources.ssh_scripts import MONITOR, printf_escape
from hsm.sources.transport import ConnectionLost, RemoteError, SshTransport

log = logging.getLogger(__name__)

# The liveness field of an S event: the wrapper runs, is gone, or its pid is not known.
_ALIVE: dict[bytes, bool | None] = {b"1": True, b"0": False, b"": None}

# Fields per event, the type included.
_EVENT_FIELDS = {b"S": 4, b"V": 3, b"R": 3, b"A": 3, b"E": 3, b"P": 2}


class Unconfirmed:
    """A launch the host did not acknowledge in time: it may or may not have started."""

    def __repr__(self) -> str:
        return "UNCONFIRMED"


UNCONFIRMED = Unconfirmed()

LaunchResult = int | BaseException | Unconfirmed
"""Per request: the wrapper's pid (started), the error that kept it from starting, or
`UNCONFIRMED` (no acknowledgement within the timeout)."""


@dataclass(frozen=True)
class Seen:
    """The last status text a watched folder showed, and whether its wrapper was alive (None
    when the host does not know the wrapper's pid)."""

    text: str
    alive: bool | None


class HostMonitor(ChannelProgram):
    what = "the host monitor"

    def __init__(
        self, transport: SshTransport, wrapper: str, on_change: Callable[[Sequence[int]], None]
    ) -> None:
        super().__init__(transport)
        self.wrapper = wrapper
        self.on_change = on_change
        self.seen: dict[int, Seen] = {}
        self.events: dict[int, str] = {}  # id -> the events log of a running task
        self.watched: dict[int, int] = {}  # id -> attempt
        # id -> the launch record ("ATTEMPT NONCE", "" for none) of a folder without a status
        self.launched: dict[int, str] = {}
        self._acks: dict[int, asyncio.Future[int]] = {}
        self._pongs: dict[int, asyncio.Future[None]] = {}
        self._tokens = itertools.count(1)

    # -- life ----------------------------------------------------------------------------
    def argv(self) -> list[str]:
        return ["bash", "-c", MONITOR, "hsm-monitor", self.wrapper]

    async def _serve(self, proc: asyncssh.SSHClientProcess[bytes]) -> None:
        await self._read(proc)
        self.error = f"the host monitor ended (exit {proc.exit_status})"

    def _end(self) -> None:
        super()._end()
        lost = ConnectionLost(self.error or "the host monitor stopped")
        futures: list[asyncio.Future[int] | asyncio.Future[None]] = [
            *self._acks.values(),
            *self._pongs.values(),
        ]
        for future in futures:
            if not future.done():
                future.set_exception(lost)
        self._acks.clear()
        self._pongs.clear()
        self.on_change(())

    async def close(self) -> None:
        proc, task = self._proc, self._task
        if proc is not None:
            with contextlib.suppress(OSError, asyncssh.Error):
                proc.stdin.write_eof()
        if task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), timeout=1.0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- events --------------------------------------------------------------------------
    async def _read(self, proc: asyncssh.SSHClientProcess[bytes]) -> None:
        rest = b""
        fields: list[bytes] = []
        while data := await proc.stdout.read(1 << 16):
            *complete, rest = (rest + data).split(b"\0")
            changed: list[int] = []
            for field in complete:
                fields.append(field)
                need = _EVENT_FIELDS.get(fields[0])
                if need is None:  # not an event type: skip fields until one starts
                    log.warning("host monitor: unexpected field %r", fields[0][:80])
                    fields = []
                elif len(fields) == need:
                    try:
                        if self._event(fields):
                            changed.append(int(fields[1]))
                    except ValueError:  # a malformed record: log it, go on with the next
                        log.warning("host monitor: malformed event %r", [f[:80] for f in fields])
                    fields = []
            if changed:
                self.on_change(changed)

    def _event(self, fields: list[bytes]) -> bool:
        if not fields[1].isdigit():
            raise ValueError(f"not an id: {fields[1]!r}")
        kind, ident = fields[0], int(fields[1])
        if kind == b"S":
            text = fields[2].decode(errors="replace").strip()
            if fields[3] not in _ALIVE:
                raise ValueError(f"not a liveness: {fields[3]!r}")
            self.seen[ident] = Seen(text, _ALIVE[fields[3]])
            return True
        if kind == b"R":
            self.launched[ident] = fields[2].decode(errors="replace")
            return False
        if kind == b"V":
            self.events[ident] = fields[2].decode(errors="replace")
            return True
        if kind == b"P":
            pong = self._pongs.pop(ident, None)
            if pong is not None and not pong.done():
                pong.set_result(None)
            return False
        ack = self._acks.pop(ident, None)  # (for A and E, the id is the request's sequence)
        if ack is not None and not ack.done():
            if kind == b"A":
                if not fields[2].isdigit():
                    self._acks[ident] = ack  # wait for a well-formed answer (or time out)
                    raise ValueError(f"not a pid: {fields[2]!r}")
                ack.set_result(int(fields[2]))
            else:
                ack.set_exception(RemoteError(fields[2].decode(errors="replace")))
        return False

    # -- commands ------------------------------------------------------------------------
    def _send(self, *records: Sequence[str]) -> None:
        proc = self._proc
        if proc is None or self.done.is_set():
            raise ConnectionLost(self.error or "the host monitor is not running")
        data = b"".join(
            field.encode("utf-8", "surrogateescape") + b"\0"
            for record in records
            for field in record
        )
        try:
            proc.stdin.write(data)
        except (OSError, asyncssh.Error) as exc:
            raise ConnectionLost(f"writing to the host monitor: {exc}") from None

    def watch(self, ident: int, task_dir: str, attempt: int, nonce: str, pid: int | None) -> None:
        """Watch ``task_dir`` for this attempt, whose wrapper is ``pid`` (None when it is not
        known: the host then takes it from the attempt's launch record, once there is one)."""
        pid_field = "" if pid is None else str(pid)
        self._send(("W", str(ident), task_dir, str(attempt), nonce, pid_field))
        self.watched[ident] = attempt
        self.seen.pop(ident, None)
        self.events.pop(ident, None)
        self.launched.pop(ident, None)

    def unwatch(self, ident: int) -> None:
        self._send(("U", str(ident)))
        self.watched.pop(ident, None)
        self.events.pop(ident, None)
        self.launched.pop(ident, None)

    async def barrier(self, timeout: float = 15.0) -> None:
        """Returns once the monitor has scanned everything it was told to watch so far."""
        token = next(self._tokens)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pongs[token] = future
        self._send(("P", str(token)))
        await asyncio.wait_for(future, timeout)

    async def launch(
        self, items: Sequence[tuple[int, str, int, str, bytes]], timeout: float = 30.0
    ) -> list[LaunchResult]:
        """Start wrappers: (id, task dir, attempt, nonce, spec bytes) each. Before it starts a
        wrapper, the host records ``ATTEMPT NONCE`` in ``TASK_DIR/.hsm/launch`` (`LAUNCH_FILE`),
        then ``ATTEMPT NONCE PID``: after a reconnect, that file tells "the host never got this
        launch" from "it got it", and names the wrapper. Returns, per item, the pid of its
        wrapper, the error that kept it from starting (`ConnectionLost` when the monitor ended
        first: it may have started), or `UNCONFIRMED` when the host had not answered within
        ``timeout``."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[int]] = []
        seqs: list[int] = []
        records = []
        for ident, task_dir, attempt, nonce, spec in items:
            # Each request has a sequence number of its own, which its answer carries: a late
            # answer to an earlier launch in the same folder never answers this one.
            seq = next(self._tokens)
            future: asyncio.Future[int] = loop.create_future()
            self._acks[seq] = future
            futures.append(future)
            seqs.append(seq)
            records.append(
                ("L", str(ident), str(seq), task_dir, str(attempt), nonce, printf_escape(spec))
            )
            self.watched[ident] = attempt
            self.seen.pop(ident, None)
            self.events.pop(ident, None)
            self.launched.pop(ident, None)
        try:
            self._send(*records)
        except ConnectionLost:
            for seq in seqs:
                self._acks.pop(seq, None)
            raise
        await asyncio.wait(futures, timeout=timeout)
        results: list[LaunchResult] = []
        for seq, future in zip(seqs, futures, strict=True):
            if not future.done():
                future.cancel()
                self._acks.pop(seq, None)
                results.append(UNCONFIRMED)
            else:
                exc = future.exception()
                results.append(future.result() if exc is None else exc)
        return results
