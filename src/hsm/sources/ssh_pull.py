"""Pulls of finished task folders over one long-lived channel per host (no new SSH session,
no new remote shell per pull): the remote side (``ssh_scripts.PULLER``) answers each request
with a tar archive, which is unpacked here with tarfile's ``data`` filter (no absolute paths,
no ``..``, no links out of the destination)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import posixpath
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO

import asyncssh

from hsm.sources.ssh_channel import ChannelProgram
from hsm.sources.ssh_scripts import PULLER
from hsm.sources.transport import (
    SPOOL_IN_MEMORY,
    ConnectionLost,
    RemoteError,
    SshTransport,
    unpack,
)

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
STALL_TIMEOUT = 60.0  # no byte for this long: the puller is stuck, start a new one
_NO_DATA = frozenset(b"123456")  # links, devices, folders, fifos: a header and no data


class HostPuller(ChannelProgram):
    what = "the puller"

    def __init__(self, transport: SshTransport) -> None:
        super().__init__(transport)
        self._lock = asyncio.Lock()
        self._errors: collections.deque[str] = collections.deque(maxlen=5)

    def argv(self) -> list[str]:
        return ["bash", "-c", PULLER, "hsm-puller"]

    async def _serve(self, proc: asyncssh.SSHClientProcess[bytes]) -> None:
        while line := await proc.stderr.readline():  # tar's messages, kept for errors
            self._errors.append(line.decode(errors="replace").strip())
        await proc.wait_closed()

    async def close(self) -> None:
        proc, task = self._proc, self._task
        if proc is not None:
            with contextlib.suppress(OSError, asyncssh.Error):
                proc.stdin.write_eof()
            proc.close()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def pull(
        self, parent: str, names: Sequence[str], local_dir: Path, *, exclude: Sequence[str] = ()
    ) -> None:
        """Copy ``parent/NAME`` for each name into ``local_dir/NAME``."""
        async with self._lock:
            proc = self._proc
            if proc is None or self.done.is_set():
                raise ConnectionLost("the puller is not running")
            fields = [parent, *(f"--exclude={e}" for e in exclude), "--", *names, ""]
            self._errors.clear()
            with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
                try:
                    proc.stdin.write(
                        b"".join(f.encode("utf-8", "surrogateescape") + b"\0" for f in fields)
                    )
                    await _read_archive(proc.stdout, spool)
                    trailer = await _read(proc.stdout, 11)
                except (OSError, asyncssh.Error, asyncio.IncompleteReadError, TimeoutError) as exc:
                    await self.close()
                    raise ConnectionLost(f"pulling results: {exc or type(exc).__name__}") from None
                if not trailer.startswith(b"HSMPULL") or not trailer[7:10].isdigit():
                    await self.close()  # out of step: never trust this stream again
                    raise ConnectionLost("pulling results: the puller's answer is garbled")
                status = int(trailer[7:10])
                # GNU tar: 1 means a file changed while it was read (the archive is complete).
                if status not in (0, 1):
                    detail = " | ".join(self._errors)
                    raise RemoteError(
                        f"pulling {', '.join(names)} from {parent} failed (tar "
                        f"exit {status})" + (f": {detail}" if detail else "")
                    )
                large = spool.tell() > SPOOL_IN_MEMORY
                spool.seek(0)
                if large:
                    await asyncio.to_thread(unpack, spool, local_dir)
                else:
                    unpack(spool, local_dir)


async def _read(stream: asyncssh.SSHReader[bytes], n: int) -> bytes:
    return await asyncio.wait_for(stream.readexactly(n), STALL_TIMEOUT)


async def _read_archive(stream: asyncssh.SSHReader[bytes], out: IO[bytes]) -> None:
    """Copy one tar archive (it ends with two zero blocks) from ``stream`` to ``out``."""
    zeros = 0
    while zeros < 2:
        header = await _read(stream, BLOCK)
        out.write(header)
        if header == ZERO_BLOCK:
            zeros += 1
            continue
        zeros = 0
        size = 0 if header[156] in _NO_DATA else _size(header[124:136])
        remaining = -(-size // BLOCK) * BLOCK
        while remaining:
            chunk = await asyncio.wait_for(stream.read(min(remaining, 1 << 16)), STALL_TIMEOUT)
            if not chunk:
                raise asyncio.IncompleteReadError(b"", remaining)
            out.write(chunk)
            remaining -= len(chunk)


def _size(field: bytes) -> int:
    if field[0] & 0x80:  # base-256 (GNU, for sizes beyond 8 GB)
        return int.from_bytes(field[1:], "big")
    return int(field.strip(b"\0 ") or b"0", 8)


Key = tuple[str, int]  # (remote task folder, attempt)


class Prefetch:
    """Pulls of the attempts launched here, started as soon as the monitor reports their end;
    the ones that end together are pulled together. The engine's collect() then waits for
    the pull instead of starting one."""

    def __init__(
        self, pull: Callable[[str, list[Key]], Awaitable[None]], on_pulled: Callable[[], None]
    ) -> None:
        self._pull = pull
        self._on_pulled = on_pulled
        self.unpulled: set[Key] = set()
        self._futures: dict[Key, asyncio.Future[None]] = {}
        self._queued: list[Key] = []
        self._task: asyncio.Task[None] | None = None

    def ended(self, key: Key) -> None:
        if key not in self.unpulled or key in self._futures:
            return
        self._futures[key] = asyncio.get_running_loop().create_future()
        self._queued.append(key)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    def pending(self, key: Key) -> bool:
        future = self._futures.get(key)
        return future is not None and not future.done()

    async def wait(self, key: Key) -> bool:
        """Wait for the prefetch of ``key``: True once pulled, False if there is none (or it
        failed: the caller pulls, and reports the error if it fails again)."""
        future = self._futures.get(key)
        if future is None:
            return False
        if future.done() and future.exception() is not None:
            del self._futures[key]
            return False
        await future
        return True

    async def _run(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            by_parent: dict[str, list[Key]] = {}
            for key in batch:
                by_parent.setdefault(posixpath.dirname(key[0]), []).append(key)
            for parent, keys in by_parent.items():
                await self._pull_group(parent, keys)
            self._on_pulled()

    async def _pull_group(self, parent: str, keys: list[Key]) -> None:
        """All of them at once; one by one if that fails."""
        groups = [keys] if len(keys) == 1 else [keys, *([k] for k in keys)]
        for group in groups:
            if all(self._futures[k].done() for k in group):
                continue
            try:
                await self._pull(parent, group)
            except Exception as exc:  # noqa: BLE001 - collect() pulls again and reports it
                if len(group) == 1:
                    self._futures[group[0]].set_exception(exc)
                continue
            for key in group:
                self.unpulled.discard(key)
                if not self._futures[key].done():
                    self._futures[key].set_result(None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for future in self._futures.values():
            if not future.done():
                future.cancel()
