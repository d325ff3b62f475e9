"""Every local subprocess hsm starts goes through here. Argv lists only, never a shell.

`run_local` runs a command to its end from the event loop, `run_local_sync` from plain code
(outside an event loop), and `spawn_detached` starts a process that outlives hsm.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hsm.errors import HsmError


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def stderr_tail(self, lines: int = 5) -> str:
        """The last lines of stderr, for messages."""
        return "\n".join(self.stderr.strip().splitlines()[-lines:])


class CommandError(HsmError):
    """A command failed: carries the command, its exit status and the tail of its stderr."""

    def __init__(self, result: CommandResult, what: str) -> None:
        tail = result.stderr_tail()
        super().__init__(
            f"{what} failed (exit {result.returncode}): {' '.join(result.argv)}"
            + (f"\n{tail}" if tail else "")
        )
        self.result = result


async def run_local(
    argv: Sequence[str],
    *,
    timeout: float | None = None,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = False,
    what: str = "command",
) -> CommandResult:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env) if env is not None else None,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(input), timeout=timeout)
    except (TimeoutError, asyncio.CancelledError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    result = CommandResult(
        tuple(argv), proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
    )
    if check and result.returncode != 0:
        raise CommandError(result, what)
    return result


def run_local_sync(
    argv: Sequence[str],
    *,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = False,
    what: str = "command",
    stderr: bool = True,
) -> CommandResult:
    """`run_local` for code that has no event loop: the same result and errors (``OSError``
    when the program cannot be started, ``TimeoutError`` when it runs past ``timeout``, which
    kills it). ``stderr=False`` leaves the command's stderr on hsm's own (it shows in the
    terminal) and the result's ``stderr`` empty."""
    try:
        proc = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if stderr else None,
            env=dict(env) if env is not None else None,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"{what} ran longer than {timeout:g} s: {' '.join(argv)}") from None
    result = CommandResult(
        tuple(argv),
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace") if stderr else "",
    )
    if check and result.returncode != 0:
        raise CommandError(result, what)
    return result


def spawn_detached(argv: Sequence[str]) -> subprocess.Popen[bytes]:
    """Start ``argv`` detached: a session of its own, no terminal, stdin, stdout and stderr
    on /dev/null, no inherited file descriptors; so it outlives hsm, and Ctrl-C in the
    terminal reaches only hsm. The caller may poll (and so reap) the process it gets."""
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
