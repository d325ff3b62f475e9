"""Bringing the sources of a run up: one broken source never stops the others.

A source that fails its checks, its setup or its code push is left out of the run (and
disabled with that reason), and the sweep goes on with the others. The run stops only when
the user named that source alone (``--source X``: exit 2, nothing written), or when no
source is left (exit 3).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from hsm.errors import HsmError, SourceUnavailableError, SweepAborted
from hsm.sources.base import Source, SweepContext
from hsm.state import Store
from hsm.states import AttemptState, Cause, TaskStatus


def reason_of(name: str, exc: BaseException) -> str:
    message = exc.message if isinstance(exc, HsmError) else repr(exc)
    return message if name in message else f"source {name!r}: {message}"


def broken_sources(
    failures: Mapping[str, BaseException | None], *, explicit_alone: bool, what: str
) -> dict[str, str]:
    """The reason of each source that failed, when the run can go on without them.

    Raises the failure of a source the user named alone as it is (its exit code, 2 for
    bad input), and SweepAborted (exit 3) when every source failed."""
    broken = {n: e for n, e in failures.items() if e is not None}
    for exc in broken.values():
        if not isinstance(exc, Exception):
            raise exc  # Ctrl-C, cancellation: not a source's fault
    if not broken:
        return {}
    if explicit_alone:
        exc = next(iter(broken.values()))
        if isinstance(exc, HsmError):
            raise exc
        raise SourceUnavailableError(reason_of(next(iter(broken)), exc))
    reasons = {n: reason_of(n, e) for n, e in broken.items()}
    if len(broken) == len(failures):
        raise SweepAborted(
            f"no source can be used ({what}): "
            + "; ".join(reasons.values())
            + ". Fix them and run again (a sweep that started continues with:"
            " hsm resume ID)"
        )
    return reasons


async def gather_failures(
    sources: Mapping[str, Source],
    step: Callable[[Source], Awaitable[None]],
) -> dict[str, BaseException | None]:
    """Run ``step`` on every source at once; the exception each one raised (or None)."""
    results = await asyncio.gather(*(step(s) for s in sources.values()), return_exceptions=True)
    return {
        name: (r if isinstance(r, BaseException) else None)
        for name, r in zip(sources, results, strict=True)
    }


async def prepare_all(
    sources: Mapping[str, Source],
    ctx: SweepContext,
) -> dict[str, BaseException | None]:
    async def prepare(source: Source) -> None:
        await source.prepare(ctx=ctx)

    return await gather_failures(sources, prepare)


def settle_lost(store: Store, sweep_id: str, source: str) -> int:
    """Settle the running attempts of a source that is not part of the run as lost (their
    tasks go back to the queue); their job handles are kept, so that they are checked again
    when the source is back. Returns how many there were."""
    active = [a for a in store.attempts(sweep_id, active_only=True) if a.source == source]
    for attempt in active:
        store.finish_attempt(
            attempt,
            state=AttemptState.LOST,
            cause=Cause.LOST,
            exit_code=None,
            task_status=TaskStatus.PENDING,
        )
    return len(active)
