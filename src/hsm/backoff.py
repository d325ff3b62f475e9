"""Bounded retries with exponential backoff, on an injected clock.

Every retry loop outside the engine's run loop (reconnects, rsync pushes, cancels, queue
submissions) and the engine's collection of finished tasks use this: at most ``tries``
attempts, waiting ``first``, ``first * factor``, ... seconds (at most ``cap``) between them.
``clock`` and ``sleep`` are injected so that tests drive the time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from hsm import clock as hsm_clock

T = TypeVar("T")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass
class Backoff:
    """The retry state of one operation: how often it failed, and when it may run again."""

    tries: int = 5  # attempts in all, the first one included
    first: float = 1.0  # seconds before the second attempt
    factor: float = 2.0
    cap: float = 60.0
    clock: Clock = hsm_clock.monotonic  # the process's clock, which a simulation replaces
    failures: int = 0
    _next: float = field(default=float("-inf"), repr=False)

    def delay(self) -> float:
        """Seconds to wait after the latest failure."""
        if self.failures == 0:
            return 0.0
        return float(min(self.cap, self.first * self.factor ** (self.failures - 1)))

    @property
    def exhausted(self) -> bool:
        return self.failures >= self.tries

    def ready(self) -> bool:
        """Whether the wait after the latest failure is over."""
        return self.clock() >= self._next

    def failed(self) -> bool:
        """Record a failure; True when the bound is reached (give up)."""
        self.failures += 1
        self._next = self.clock() + self.delay()
        return self.exhausted

    def succeeded(self) -> None:
        self.failures = 0
        self._next = float("-inf")


async def retry(
    op: Callable[[], Awaitable[T]],
    *,
    backoff: Backoff,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    sleep: Sleep = asyncio.sleep,
    on_retry: Callable[[BaseException, float], None] | None = None,
) -> T:
    """Run ``op`` until it succeeds or ``backoff`` is exhausted (the last error is raised).
    Errors not in ``retry_on`` are raised at once."""
    while True:
        try:
            result = await op()
        except retry_on as exc:
            if backoff.failed():
                raise
            wait = backoff.delay()
            if on_retry is not None:
                on_retry(exc, wait)
            await sleep(wait)
        else:
            backoff.succeeded()
            return result
