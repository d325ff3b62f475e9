"""Bounded retries with backoff, driven by an injected clock."""

from __future__ import annotations

import asyncio
import logging

import pytest

from hsm.backoff import Backoff, retry
from hsm.engine.collect import COLLECT_TRIES, collect_backoff, give_up_collecting


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_delays_grow_up_to_the_cap_and_the_bound_ends_it() -> None:
    clock = Clock()
    backoff = Backoff(tries=6, first=1.0, cap=5.0, clock=clock)
    delays = []
    while not backoff.failed():
        delays.append(backoff.delay())
        assert not backoff.ready()
        clock.now += backoff.delay()
        assert backoff.ready()
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]
    backoff.succeeded()
    assert backoff.failures == 0 and backoff.ready()


def test_retry_gives_up_after_the_bound_with_the_last_error() -> None:
    clock = Clock()
    calls = []

    async def op() -> None:
        calls.append(clock.now)
        raise OSError(f"failure {len(calls)}")

    with pytest.raises(OSError, match="failure 4"):
        asyncio.run(retry(op, backoff=Backoff(tries=4, clock=clock), sleep=clock.sleep))
    assert calls == [0.0, 1.0, 3.0, 7.0]


def test_retry_returns_on_success_and_raises_other_errors_at_once() -> None:
    clock = Clock()
    calls = []

    async def flaky() -> str:
        calls.append(clock.now)
        if len(calls) < 3:
            raise OSError("not yet")
        return "done"

    assert asyncio.run(retry(flaky, backoff=Backoff(clock=clock), sleep=clock.sleep)) == "done"
    assert calls == [0.0, 1.0, 3.0]

    async def broken() -> None:
        raise ValueError("bad input")

    with pytest.raises(ValueError):
        asyncio.run(
            retry(broken, backoff=Backoff(clock=clock), retry_on=(OSError,), sleep=clock.sleep)
        )


def test_collection_gives_up_and_names_the_remote_folder(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    backoff = collect_backoff()
    backoff.clock = clock
    results: list[bool] = []
    polls = 0
    while not results or not results[-1]:
        polls += 1
        clock.now += 1.0  # one poll a second, as the engine does
        if not backoff.ready():
            continue
        with caplog.at_level(logging.WARNING):
            results.append(
                give_up_collecting(backoff, 1, "h1", "/scratch/hsm/t1", OSError("tar exit 2"))
            )
    assert len(results) == COLLECT_TRIES
    assert polls < 60  # the waits grew: far fewer tries than polls
    assert "collect_failed" in caplog.records[-1].getMessage()
    assert "/scratch/hsm/t1 on h1" in caplog.records[-1].getMessage()
