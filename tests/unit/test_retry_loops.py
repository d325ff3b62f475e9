"""Every retry loop outside the engine ends, with growing waits (the waits are recorded by
an injected sleep, so nothing here waits for real)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from hsm.errors import HsmError
from hsm.sources import transport as transport_module
from hsm.sources.process import CommandError, CommandResult
from hsm.sources.ssh import SshSource
from hsm.sources.transport import ConnectError, SshTarget, SshTransport
from tests.unit.test_queue_source import ScriptedLogin, handle, ok, source


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def test_a_failing_cancel_is_tried_three_times_then_given_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def handler(argv: list[str], _: bytes | None) -> CommandResult:
        if argv[0] == "scancel":
            raise HsmError("login01: connection reset")
        return ok(argv)

    login = ScriptedLogin(handler)
    src = source(login)
    src.sleep = sleeps = Sleeps()
    asyncio.run(src.cancel(handles=[handle(1, "101_1")]))
    assert [c for c in login.calls if c[0] == "scancel"] == [["scancel", "101_1"]] * 3
    assert sleeps.waits == [1.0, 2.0]
    assert "failed after 3 tries" in caplog.text


def test_a_cancel_that_fails_once_is_done_on_the_second_try() -> None:
    failures = [HsmError("busy")]

    def handler(argv: list[str], _: bytes | None) -> CommandResult:
        if argv[0] == "scancel" and failures:
            raise failures.pop()
        return ok(argv)

    login = ScriptedLogin(handler)
    src = source(login)
    src.sleep = sleeps = Sleeps()
    asyncio.run(src.cancel(handles=[handle(1, "101_1")]))
    assert [c for c in login.calls if c[0] == "scancel"] == [["scancel", "101_1"]] * 2
    assert sleeps.waits == [1.0]


@pytest.mark.parametrize(
    ("codes", "runs", "fails"),
    [
        ([255, 12, 0], 3, False),  # the network broke twice: the third push succeeds
        ([255, 255, 255, 0], 3, True),  # bounded: three tries in all
        ([23, 0], 1, True),  # rsync's own errors (e.g. a missing file) are not retried
    ],
)
def test_rsync_push_retries_network_failures_only(
    monkeypatch: pytest.MonkeyPatch, codes: list[int], runs: int, fails: bool
) -> None:
    calls: list[Sequence[str]] = []

    async def fake_run_local(argv: Sequence[str], **_: object) -> CommandResult:
        calls.append(argv)
        return CommandResult(tuple(argv), codes[len(calls) - 1], "", "broken pipe")

    monkeypatch.setattr(transport_module, "run_local", fake_run_local)
    transport = SshTransport(SshTarget(source="s", host="blossom"))
    sleeps = Sleeps()
    push = transport.rsync(["-a", "src/", "blossom:dst/"], what="pushing", sleep=sleeps)
    if fails:
        with pytest.raises(CommandError):
            asyncio.run(push)
    else:
        assert asyncio.run(push).returncode == 0
    assert len(calls) == runs
    assert sleeps.waits == [1.0, 2.0][: runs - 1]


def test_reconnects_back_off_up_to_the_cap() -> None:
    src = SshSource(
        "h1",
        transport=SshTransport(SshTarget(source="h1", host="blossom")),
        slots=1,
        remote_root="/r",
        python="python3",
        setup=[],
    )
    src.sleep = sleeps = Sleeps()
    outcomes = [False] * 5 + [True]

    async def bring_up() -> None:
        if not outcomes.pop(0):
            raise ConnectError("no answer", unreachable=True)
        src._closing = True  # noqa: SLF001 - ends the supervisor after the reconnect

    src.reachable = False
    src._bring_up = bring_up  # type: ignore[method-assign]  # noqa: SLF001
    asyncio.run(src._supervise())  # noqa: SLF001
    assert sleeps.waits == [1.0, 2.0, 4.0, 4.0, 4.0]
