"""Every local subprocess hsm starts goes through here. Argv lists only, never a shell."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hsm.errors import HsmError


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class CommandError(HsmError):
    """A command failed: carries the command, its exit status and the tail of its stderr."""

    def __init__(self, result: CommandResult, what: str) -> None:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
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
