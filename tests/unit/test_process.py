"""The one way hsm starts local processes: to their end (with or without an event loop),
or detached. Real processes, started with argv lists."""

from __future__ import annotations

import ast
import asyncio
import os
import sys
from pathlib import Path

import pytest

from hsm.sources.process import CommandError, run_local, run_local_sync, spawn_detached

PRINT_BOTH = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(int(sys.argv[1]))"


def test_sync_run_returns_what_the_async_run_returns() -> None:
    argv = [sys.executable, "-c", PRINT_BOTH, "3"]
    sync = run_local_sync(argv)
    assert sync == asyncio.run(run_local(argv))
    assert (sync.argv, sync.returncode, sync.stdout, sync.stderr) == (
        tuple(argv),
        3,
        "out\n",
        "err\n",
    )


def test_sync_run_with_check_raises_with_the_command_and_stderr() -> None:
    with pytest.raises(CommandError) as info:
        run_local_sync([sys.executable, "-c", PRINT_BOTH, "4"], check=True, what="the probe")
    assert info.value.result.returncode == 4
    assert "the probe failed (exit 4)" in str(info.value) and "err" in str(info.value)


def test_sync_run_errors_are_those_of_the_async_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        run_local_sync([str(tmp_path / "no-such-program")])
    with pytest.raises(TimeoutError):
        run_local_sync([sys.executable, "-c", "import time; time.sleep(60)"], timeout=0.2)


def test_sync_run_can_leave_stderr_to_the_terminal(capfd: pytest.CaptureFixture[str]) -> None:
    result = run_local_sync([sys.executable, "-c", PRINT_BOTH, "0"], stderr=False)
    assert (result.stdout, result.stderr) == ("out\n", "")
    assert capfd.readouterr().err == "err\n"


def test_a_detached_process_has_its_own_session_and_no_terminal(tmp_path: Path) -> None:
    report = tmp_path / "report"
    code = (
        "import os, sys\n"
        "fds = sorted(int(fd) for fd in os.listdir('/proc/self/fd'))\n"
        "links = [os.readlink(f'/proc/self/fd/{fd}') for fd in (0, 1, 2)]\n"
        "open(sys.argv[1], 'w').write(repr((os.getsid(0), os.getpid(), links, fds)))\n"
    )
    kept_open = os.open(tmp_path, os.O_RDONLY)  # an inheritable descriptor is not passed on
    os.set_inheritable(kept_open, True)
    try:
        proc = spawn_detached([sys.executable, "-c", code, str(report)])
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(kept_open)
    sid, pid, links, fds = ast.literal_eval(report.read_text())
    assert sid == pid == proc.pid
    assert links == ["/dev/null"] * 3
    assert len(set(fds) - {0, 1, 2}) <= 1  # the listing's own descriptor at most
