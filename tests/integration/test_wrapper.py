"""The real job wrapper, run with bash on real folders (and, as root, on small real disks)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hsm.jobscript import (
    STATUS_FILE,
    STATUS_SIZE,
    STATUS_SPARE,
    TASK_INFO,
    WRAPPER_PATH,
    GuardSettings,
    TaskSpec,
    WrapperState,
    WrapperStatus,
    read_events,
    read_status,
    write_spec,
)
from hsm.states import Cause
from tests.hsmcli import tmpfs, wait_for

pytestmark = pytest.mark.timeout(60)

MB = 1_000_000
NO_GUARD = GuardSettings(
    project_min_free=0, task_min_free=0, check_interval=1, warn_below=0, kill_below=0
)
WATCHING = GuardSettings(
    project_min_free=0, task_min_free=0, check_interval=1, warn_below=1, kill_below=1
)
INFO = (
    "Task: 7\n"
    "Sweep: sweep_20240101_120000\n"
    "Source: local\n"
    "Attempt: {attempt}\n"
    "Parameters: lr=0.01 seed=1\n"
    "Command: python train.py lr=0.01 seed=1\n"
)
DATE = (
    r"(?:Sun|Mon|Tue|Wed|Thu|Fri|Sat) (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"[ 123]\d \d\d:\d\d:\d\d \d{4}"
)
WARNING_LINE = re.compile(r"WARNING: Low disk space detected: \d+\.\dGB remaining")


# ---------------------------------------------------------------- processes


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, pgid, session) of a process, or None when it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2 :].split()
    return rest[0], int(rest[2]), int(rest[3])


def live(*, session: int | None = None, pgid: int | None = None) -> list[int]:
    """Live (not zombie) processes of a session or a process group."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = proc_stat(int(entry))
        if stat is None or stat[0] in ("Z", "X"):
            continue
        if (session is None or stat[2] == session) and (pgid is None or stat[1] == pgid):
            found.append(int(entry))
    return found


def _default_signals() -> None:
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


@dataclass
class Runner:
    """Starts wrappers in sessions of their own, and kills whatever is left at the end."""

    sessions: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, task_dir: Path) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            ["bash", str(WRAPPER_PATH), str(task_dir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            # The wrapper gets the default dispositions, whatever the test runner has (under
            # nohup SIGHUP is ignored, and bash cannot trap a signal ignored at its start).
            preexec_fn=_default_signals,
        )
        self.procs.append(proc)
        self.sessions.append(proc.pid)
        return proc

    def run(self, task_dir: Path, timeout: float = 20) -> WrapperStatus:
        proc = self.start(task_dir)
        _, err = proc.communicate(timeout=timeout)
        assert err == b"", err.decode()
        status = read_status(task_dir)
        assert status is not None, "no status.json"
        assert proc.returncode == (status.exit_code if status.exit_code is not None else 1)
        self.assert_nothing_left(proc)
        return status

    def assert_nothing_left(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.poll() is not None
        wait_for(
            lambda: not live(session=proc.pid), timeout=5, what="the wrapper's processes to end"
        )

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for sid in self.sessions:
            for pid in live(session=sid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def runner() -> Iterator[Runner]:
    r = Runner()
    yield r
    r.cleanup()


# ---------------------------------------------------------------- tasks


@dataclass
class Task:
    project: Path
    dir: Path

    def write(
        self,
        argv: Sequence[str],
        *,
        guard: GuardSettings = NO_GUARD,
        env: Mapping[str, str] | None = None,
        setup: Sequence[str] = (),
        attempt: int = 1,
        nonce: str = "",
        signal: str = "",
    ) -> None:
        write_spec(
            self.dir,
            TaskSpec(
                attempt=attempt,
                project_dir=str(self.project),
                guard=guard,
                env=dict(env or {}),
                setup=list(setup),
                argv=list(argv),
                info=INFO.format(attempt=attempt),
                nonce=nonce,
                signal=signal,
            ),
        )

    def info(self) -> str:
        return (self.dir / TASK_INFO).read_text()

    def status(self) -> WrapperStatus | None:
        return read_status(self.dir)


@pytest.fixture
def task(tmp_path: Path) -> Task:
    project = tmp_path / "project dir 'quoted'"
    project.mkdir()
    return Task(project=project, dir=tmp_path / "sweep" / "task 7")


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


SEPARATOR = "\n" + "=" * 60 + "\n"


def section(info: str, index: int = -1) -> str:
    return info.split(SEPARATOR)[index]


def check_info(text: str, task: Task, status_line: str, exit_code: int | None) -> None:
    """One task_info.txt section, in the feature document's format."""
    disk = (
        r"Disk space check for PATH at " + DATE + r":\n"
        r"  Available: \d+\.\d\d GB \(\d+\.\d% free\)\n"
        r"Disk space check PASSED\n"
    )
    tmp = re.escape(str(task.dir / "tmp"))
    pattern = (
        re.escape(INFO).replace(re.escape("{attempt}"), r"\d+")
        + r"Host: \S+\n"
        + disk.replace("PATH", re.escape(str(task.project)))
        + disk.replace("PATH", re.escape(str(task.dir)))
        + r"Environment variables:\n"
        + rf"  TMPDIR={tmp}\n  TMP={tmp}\n  TEMP={tmp}\n"
        + rf"  CUDA_CACHE_PATH={re.escape(str(task.dir / 'cuda_cache'))}\n"
        + r"(?:  WANDB_DIR=.*\n)?(?:  WANDB_RUN_GROUP=.*\n)?(?:  CUDA_VISIBLE_DEVICES=.*\n)?"
        + rf"Started: {DATE}\n"
        + rf"Finished: {DATE}\n"
        + (rf"Exit code: {exit_code}\n" if exit_code is not None else "")
        + rf"Status: {status_line}\n"
    )
    assert re.fullmatch(pattern, text), text


# ---------------------------------------------------------------- outcomes


def test_completed(task: Task, runner: Runner) -> None:
    task.write(
        py("print('hello'); import sys; print('oops', file=sys.stderr)"),
        guard=WATCHING,
        nonce="c0ffee" * 5,
    )
    status = runner.run(task.dir)
    assert status.status is WrapperState.COMPLETED
    assert status.cause is Cause.COMPLETED
    assert status.exit_code == 0
    assert status.attempt == 1 and status.version == 2 and status.nonce == "c0ffee" * 5
    assert status.pgid is not None and status.pgid != status.pid
    assert status.finished is not None and status.finished >= status.started
    assert (task.dir / "stdout.log").read_text() == "hello\n"
    assert (task.dir / "stderr.log").read_text() == "oops\n"
    assert len((task.dir / STATUS_FILE).read_bytes()) == STATUS_SIZE
    check_info(task.info(), task, "COMPLETED", 0)
    assert read_events(task.dir) == []


def test_failed_exit_code(task: Task, runner: Runner) -> None:
    task.write(["bash", "-c", "exit 3"])
    status = runner.run(task.dir)
    assert (status.status, status.cause, status.exit_code) == (
        WrapperState.FAILED,
        Cause.TASK_FAILED,
        3,
    )
    check_info(task.info(), task, "FAILED", 3)


def test_missing_command_fails(task: Task, runner: Runner) -> None:
    task.write(["/nonexistent/command"])
    status = runner.run(task.dir)
    assert (status.cause, status.exit_code) == (Cause.TASK_FAILED, 127)


def test_death_by_signal(task: Task, runner: Runner) -> None:
    task.write(["bash", "-c", "kill -KILL $$"])
    status = runner.run(task.dir)
    assert (status.status, status.cause, status.exit_code) == (
        WrapperState.FAILED,
        Cause.SIGNAL,
        128 + signal.SIGKILL,
    )
    check_info(task.info(), task, "FAILED", 137)


def start_and_wait_running(runner: Runner, task: Task) -> tuple[subprocess.Popen[bytes], int]:
    """Start a task that writes the pid of a grandchild to gc.pid; return (wrapper, pid)."""
    proc = runner.start(task.dir)
    gc_file = task.project / "gc.pid"
    wait_for(
        lambda: gc_file.exists() and gc_file.read_text().endswith("\n"), timeout=10, what="the task"
    )
    wait_for(
        lambda: (s := task.status()) is not None and s.pgid is not None, timeout=5, what="the pgid"
    )
    status = task.status()
    assert status is not None and status.status is WrapperState.RUNNING
    assert status.pid == proc.pid
    grandchild = int(gc_file.read_text())
    assert proc_stat(grandchild) is not None
    assert proc_stat(grandchild)[1] == status.pgid  # type: ignore[index]
    return proc, grandchild


@pytest.mark.parametrize(
    ("sig", "ignores_term"),
    [
        (signal.SIGTERM, False),
        (signal.SIGINT, False),
        (signal.SIGHUP, False),
        (signal.SIGTERM, True),
    ],
    ids=["sigterm", "sigint", "sighup", "task-ignores-sigterm"],
)
def test_cancel_kills_the_whole_task_tree(
    task: Task, runner: Runner, sig: signal.Signals, ignores_term: bool
) -> None:
    trap = "trap '' TERM; " if ignores_term else ""
    task.write(["bash", "-c", trap + "sleep 300 & echo $! > gc.pid; wait"], guard=WATCHING)
    proc, grandchild = start_and_wait_running(runner, task)
    status = task.status()
    assert status is not None and status.pgid is not None
    pgid = status.pgid
    start = time.monotonic()
    proc.send_signal(sig)
    proc.wait(timeout=10)
    took = time.monotonic() - start
    status = task.status()
    assert status is not None
    assert (status.status, status.cause) == (WrapperState.CANCELLED, Cause.CANCELLED)
    expected = signal.SIGKILL if ignores_term else signal.SIGTERM
    assert status.exit_code == 128 + expected
    assert took < (4 if ignores_term else 1.8)  # (no wait for the 2 s grace time)
    runner.assert_nothing_left(proc)
    assert proc_stat(grandchild) is None or proc_stat(grandchild)[0] == "Z"  # type: ignore[index]
    assert live(pgid=pgid) == []
    info = task.info()
    assert info.endswith(f"Exit code: {128 + expected}\nStatus: CANCELLED\n")


def test_watcher_ends_when_the_wrapper_is_killed(task: Task, runner: Runner) -> None:
    task.write(["bash", "-c", "sleep 300 & echo $! > gc.pid; wait"], guard=WATCHING)
    proc, grandchild = start_and_wait_running(runner, task)
    status = task.status()
    assert status is not None and status.pgid is not None
    pgid = status.pgid
    proc.kill()
    proc.wait()
    # The task itself is detached and goes on; the wrapper's helpers do not.
    wait_for(
        lambda: set(live(session=proc.pid)) <= set(live(pgid=pgid)),
        timeout=5,
        what="the watcher to end",
    )
    assert grandchild in live(pgid=pgid)
    os.killpg(pgid, signal.SIGKILL)
    wait_for(lambda: not live(session=proc.pid), timeout=5, what="the task to end")


def test_leftover_background_processes_are_stopped(task: Task, runner: Runner) -> None:
    task.write(["bash", "-c", "sleep 300 & echo $! > gc.pid"])
    status = runner.run(task.dir)
    assert status.cause is Cause.COMPLETED
    grandchild = int((task.project / "gc.pid").read_text())
    wait_for(
        lambda: (s := proc_stat(grandchild)) is None or s[0] == "Z", timeout=5, what="the leftover"
    )


# ---------------------------------------------------------------- environment and arguments


def test_private_environment(task: Task, runner: Runner) -> None:
    env = {
        "HSM_SWEEP_ID": "sweep_1",
        "HSM_TASK_NUMBER": "7",
        "HSM_TASK_DIR": str(task.dir),
        "WANDB_RUN_GROUP": "sweep_1",
        "WANDB_DIR": str(task.dir / "wandb"),
        "CUDA_VISIBLE_DEVICES": "0,1",
        "EMPTY": "",
    }
    dump = (
        "import json, os, tempfile; "
        "json.dump({'env': dict(os.environ), 'cwd': os.getcwd(), "
        "'tempdir': tempfile.gettempdir()}, open(os.environ['HSM_TASK_DIR'] + '/env.json', 'w'))"
    )
    task.write(py(dump), env=env, setup=["export FROM_SETUP=yes", "FOO=local_only"])
    status = runner.run(task.dir)
    assert status.cause is Cause.COMPLETED
    seen = json.loads((task.dir / "env.json").read_text())
    tmp = str(task.dir / "tmp")
    for key in ("TMPDIR", "TMP", "TEMP"):
        assert seen["env"][key] == tmp
    assert seen["tempdir"] == tmp
    assert seen["env"]["CUDA_CACHE_PATH"] == str(task.dir / "cuda_cache")
    assert (task.dir / "tmp").is_dir() and (task.dir / "cuda_cache").is_dir()
    for key, value in env.items():
        assert seen["env"][key] == value
    assert seen["env"]["FROM_SETUP"] == "yes"
    assert "FOO" not in seen["env"]
    assert seen["cwd"] == str(task.project)
    assert not any(key.startswith("hsm_") for key in seen["env"])
    info = task.info()
    assert f"  WANDB_DIR={env['WANDB_DIR']}\n  WANDB_RUN_GROUP=sweep_1\n" in info
    assert "  CUDA_VISIBLE_DEVICES=0,1\n" in info
    check_info(info, task, "COMPLETED", 0)


HOSTILE = [
    "it's",
    'say "hi"',
    "$(touch {canary})",
    "`touch {canary}`",
    "two\nlines",
    "  spaced  out  ",
    "ünïcödé ✓ 学习率",
    "",
    "back\\slash",
    "; touch {canary} #",
    "*",
    "-n",
    "-e",
    "tab\there",
    "${{HOME}}",
    "$'\\n'",
    "key=[1, 2]",
    "!! !$",
]


def test_hostile_values_arrive_byte_identical(task: Task, runner: Runner, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    values = [v.format(canary=canary) for v in HOSTILE]
    script = task.project / "dump.py"
    script.write_text(
        "import json, os, sys\n"
        "json.dump({'argv': sys.argv[1:], 'env': os.environ.get('HOSTILE')},"
        " open(os.environ['OUT'], 'w'))\n"
    )
    out = task.dir / "argv.json"
    task.write(
        [sys.executable, str(script), *values],
        env={"OUT": str(out), "HOSTILE": f"$(touch {canary}) `touch {canary}` ';'"},
    )
    status = runner.run(task.dir)
    assert status.cause is Cause.COMPLETED, (task.dir / "stderr.log").read_text()
    seen = json.loads(out.read_text())
    assert seen["argv"] == values
    assert seen["env"] == f"$(touch {canary}) `touch {canary}` ';'"
    assert not canary.exists()


def test_setup_failure_fails_the_task(task: Task, runner: Runner) -> None:
    task.write(["touch", "ran"], setup=["true", "exit_with() { return $1; }; exit_with 5"])
    status = runner.run(task.dir)
    assert (status.cause, status.exit_code) == (Cause.TASK_FAILED, 5)
    assert not (task.project / "ran").exists()
    assert "setup line 2 failed with exit code 5" in (task.dir / "stderr.log").read_text()


def test_retry_appends_and_keeps_user_files(task: Task, runner: Runner) -> None:
    task.write(
        ["bash", "-c", 'echo first; echo result > "$HSM_TASK_DIR/result.txt"; exit 1'],
        env={"HSM_TASK_DIR": str(task.dir)},
    )
    first = runner.run(task.dir)
    assert (first.attempt, first.cause) == (1, Cause.TASK_FAILED)
    task.write(["bash", "-c", "echo second"], attempt=2)
    second = runner.run(task.dir)
    assert (second.attempt, second.cause) == (2, Cause.COMPLETED)
    assert (task.dir / "result.txt").read_text() == "result\n"
    assert (task.dir / "stdout.log").read_text() == "first\nsecond\n"
    info = task.info()
    assert info.count(SEPARATOR) == 1
    check_info(section(info, 0), task, "FAILED", 1)
    check_info(section(info, 1), task, "COMPLETED", 0)
    assert "Attempt: 2\n" in section(info, 1)


def test_missing_spec_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(WRAPPER_PATH), str(tmp_path)], capture_output=True, text=True, timeout=10
    )
    assert result.returncode == 2
    assert "no task spec" in result.stderr
    assert not (tmp_path / STATUS_FILE).exists()


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda data: data[:60],
        lambda data: b"hsm-spec-9" + data[10:],
        lambda data: data.replace(b"\x00300\x00", b"\x00x\x00"),
        lambda data: data + b"extra\0",
    ],
    ids=["truncated", "magic", "number", "extra-field"],
)
def test_corrupt_spec_is_refused(task: Task, corrupt: Callable[[bytes], bytes]) -> None:
    task.write(["true"], guard=GuardSettings(0, 0, 300, 0, 0))
    spec = task.dir / ".hsm" / "spec"
    spec.write_bytes(corrupt(spec.read_bytes()))
    result = subprocess.run(
        ["bash", str(WRAPPER_PATH), str(task.dir)], capture_output=True, text=True, timeout=10
    )
    assert result.returncode == 2
    assert "invalid task spec" in result.stderr


def test_precheck_failure_on_a_normal_disk(task: Task, runner: Runner) -> None:
    huge = 10**18  # an exabyte: no test machine has it free
    guard = GuardSettings(huge, 0, 1, 0, 0)
    task.write(["touch", "marker"], guard=guard)
    status = runner.run(task.dir)
    assert (status.status, status.cause, status.exit_code) == (
        WrapperState.FAILED,
        Cause.DISK_PRECHECK,
        None,
    )
    assert not (task.project / "marker").exists()
    info = task.info()
    assert re.search(
        r"Disk space check for .* at " + DATE + r":\n  Available: \d+\.\d\d GB \(\d+\.\d% free\)\n"
        r"Disk space check FAILED\n  Required: at least 1000000000\.00 GB "
        r"\(1000000000000000000 bytes\) free\n",
        info,
    ), info
    assert info.endswith("Status: FAILED_DISK_SPACE\n")
    assert "Started:" not in info


# ---------------------------------------------------------------- small real disks


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MB tmpfs, unmounted at the end."""
    with tmpfs(tmp_path / "disk", "8m") as mount_point:
        yield mount_point


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: Path) -> None:
    """Fill the disk of `path` completely."""
    subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=64k"], capture_output=True, check=False)


@pytest.fixture
def disk_task(small_disk: Path, tmp_path: Path) -> Task:
    project = tmp_path / "project"
    project.mkdir()
    return Task(project=project, dir=small_disk / "sweep" / "task 1")


@pytest.mark.root
def test_disk_precheck_refuses_to_start(disk_task: Task, runner: Runner) -> None:
    guard = GuardSettings(0, 64 * MB, 1, 0, 0)  # more than the whole disk
    disk_task.write(["touch", "marker"], guard=guard)
    status = runner.run(disk_task.dir)
    assert (status.status, status.cause, status.exit_code) == (
        WrapperState.FAILED,
        Cause.DISK_PRECHECK,
        None,
    )
    assert not (disk_task.project / "marker").exists()
    info = disk_task.info()
    assert re.search(
        rf"Disk space check for {re.escape(str(disk_task.dir))} at {DATE}:\n"
        r"  Available: 0\.0\d GB \(\d+\.\d% free\)\nDisk space check FAILED\n"
        r"  Required: at least 0\.06 GB \(64000000 bytes\) free\n",
        info,
    ), info
    assert info.endswith("Status: FAILED_DISK_SPACE\n")


@pytest.mark.root
def test_disk_precheck_on_a_full_disk_still_records_the_status(
    disk_task: Task, runner: Runner
) -> None:
    disk_task.write(["touch", "marker"], guard=GuardSettings(0, 1 * MB, 1, 0, 0))
    fill(disk_task.dir / "filler")
    assert free_bytes(disk_task.dir) == 0
    status = runner.run(disk_task.dir)
    assert (status.cause, status.exit_code) == (Cause.DISK_PRECHECK, None)
    assert not (disk_task.project / "marker").exists()


@pytest.mark.root
def test_disk_filling_up_kills_the_task(disk_task: Task, runner: Runner) -> None:
    # Writes 7 of the 8 MB in 256 KB steps, then waits: warned below 4 MB, killed below 2 MB.
    writer = (
        "import os, sys, time\n"
        "with open('big', 'wb') as f:\n"
        "    for _ in range(28):\n"
        "        f.write(b'x' * 262144); f.flush(); time.sleep(0.05)\n"
        "time.sleep(300)\n"
    )
    guard = GuardSettings(0, 0, check_interval=1, warn_below=4 * MB, kill_below=2 * MB)
    disk_task.write(
        ["bash", "-c", f'cd "$HSM_TASK_DIR" && exec {sys.executable} -c "$0"', writer],
        guard=guard,
        env={"HSM_TASK_DIR": str(disk_task.dir)},
    )
    status = runner.run(disk_task.dir)
    assert (status.status, status.cause) == (WrapperState.FAILED, Cause.DISK_KILL)
    assert status.exit_code == 128 + signal.SIGTERM
    events = read_events(disk_task.dir)
    assert WARNING_LINE.fullmatch(events[0]), events
    assert events[0] == "WARNING: Low disk space detected: 0.0GB remaining"
    assert events[-1].startswith("CRITICAL: Disk space exhausted: 0.0GB remaining")
    info = disk_task.info()
    assert "\nWARNING: Low disk space detected: 0.0GB remaining\n" in info
    assert info.endswith("Status: FAILED_DISK_SPACE\n")


@pytest.mark.root
@pytest.mark.parametrize("cut_short", [False, True], ids=["in-place", "spare-file"])
def test_completely_full_disk_kills_the_task_and_records_it(
    disk_task: Task, runner: Runner, cut_short: bool
) -> None:
    guard = GuardSettings(0, 0, check_interval=1, warn_below=2 * MB, kill_below=1 * MB)
    go = disk_task.dir / "go"
    filler = 'while [ ! -e "$0" ]; do sleep 0.02; done; dd if=/dev/zero of="$1" bs=64k; sleep 300'
    disk_task.write(["bash", "-c", filler, str(go), str(disk_task.dir / "fill")], guard=guard)
    proc = runner.start(disk_task.dir)
    wait_for(
        lambda: (s := disk_task.status()) is not None and s.pgid is not None, timeout=5, what="pgid"
    )
    status_file = disk_task.dir / STATUS_FILE
    if cut_short:  # as if the disk had been full when the first status was written
        status_file.write_bytes(b"")
    inode = status_file.stat().st_ino
    go.touch()
    start = time.monotonic()
    proc.wait(timeout=15)
    assert time.monotonic() - start < guard.check_interval + 1.8  # no wait for the grace time
    runner.assert_nothing_left(proc)
    assert free_bytes(disk_task.dir) <= 4096  # (at most the page of the replaced status)
    status = disk_task.status()
    assert status is not None
    assert (status.status, status.cause) == (WrapperState.FAILED, Cause.DISK_KILL)
    assert status.exit_code == 128 + signal.SIGTERM
    assert status.finished is not None and status.pgid is not None
    assert len(status_file.read_bytes()) == STATUS_SIZE
    if cut_short:
        # No block for the status or a temporary file: the reserved spare took its place.
        assert (disk_task.dir / ".hsm" / "status.tmp").stat().st_size == 0
        assert not (disk_task.dir / STATUS_SPARE).exists()
        assert status_file.stat().st_ino != inode
    else:
        assert status_file.stat().st_ino == inode  # overwritten in place: no new block
        assert (disk_task.dir / STATUS_SPARE).exists()
    events = read_events(disk_task.dir)
    assert events[0] == "WARNING: Low disk space detected: 0.0GB remaining", events
    assert events[1].startswith("CRITICAL: Disk space exhausted: 0.0GB remaining"), events
    info = disk_task.info()
    assert "\nWARNING: Low disk space detected: 0.0GB remaining\n" in info
    assert info.endswith("Exit code: 143\nStatus: FAILED_DISK_SPACE\n")


def test_wrapper_speed(tmp_path: Path) -> None:
    """A no-op task costs a few milliseconds of wrapper time (a loose bound, for slow CI)."""
    n = 20
    project = tmp_path / "p"
    project.mkdir()
    guard = GuardSettings(0, 0, 300, 1, 1)
    for i in range(n):
        Task(project, tmp_path / f"t{i}").write(["true"], guard=guard)
    start = time.monotonic()
    for i in range(n):
        subprocess.run(["bash", str(WRAPPER_PATH), str(tmp_path / f"t{i}")], check=True)
    per_task = (time.monotonic() - start) / n
    assert per_task < 0.1
    assert all(
        (s := read_status(tmp_path / f"t{i}")) is not None and s.cause is Cause.COMPLETED
        for i in range(n)
    )


def test_missing_df_skips_the_checks(task: Task) -> None:
    # With no `df` on PATH, the checks are skipped (and say so); the task still runs.
    bin_dir = task.project / "bin"
    bin_dir.mkdir()
    for tool in ("mv", "sleep", "mkdir", "bash", "true"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    task.write(["true"], guard=GuardSettings(10**18, 10**18, 1, 0, 0))
    proc = subprocess.run(
        ["bash", str(WRAPPER_PATH), str(task.dir)],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        timeout=10,
    )
    assert proc.returncode == 0, proc.stderr
    status = task.status()
    assert status is not None and status.cause is Cause.COMPLETED
    assert task.info().count("Disk space check SKIPPED\n") == 2


def test_a_stop_before_the_task_starts_is_not_lost(task: Task, runner: Runner) -> None:
    # A cancel that reaches the wrapper while it still prepares (here: while `df` runs)
    # stops the task as soon as it starts, and the wrapper records it as cancelled.
    bin_dir = task.project / "bin"
    bin_dir.mkdir()
    marker = task.project / "df-started"
    real_df = shutil.which("df")
    assert real_df is not None
    slow_df = bin_dir / "df"
    slow_df.write_text(f'#!/bin/sh\n: >"{marker}"\nsleep 1\nexec "{real_df}" "$@"\n')
    slow_df.chmod(0o755)
    effect = task.project / "ran"
    task.write(py(f"import time; time.sleep(0.5); open({str(effect)!r}, 'w')"))
    proc = subprocess.Popen(
        ["bash", str(WRAPPER_PATH), str(task.dir)],
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_default_signals,
    )
    runner.procs.append(proc)
    runner.sessions.append(proc.pid)
    wait_for(marker.exists, timeout=10, what="the wrapper's disk check")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    status = task.status()
    assert status is not None and status.cause is Cause.CANCELLED, task.info()
    assert proc.returncode == (status.exit_code if status.exit_code is not None else 1)
    assert not effect.exists()
    runner.assert_nothing_left(proc)


CHECKPOINTING = """
import os, signal, sys, time
def checkpoint(sig, frame):
    open("checkpoint", "w").write(signal.Signals(sig).name)
    sys.exit(0)
signal.signal(signal.SIGUSR1, checkpoint)
signal.signal(signal.SIGUSR2, checkpoint)
open("ready", "w").close()
time.sleep(60)
"""


@pytest.mark.parametrize("sig", ["USR1", "USR2"])
def test_the_checkpoint_signal_reaches_the_task(task: Task, runner: Runner, sig: str) -> None:
    # The scheduler signals the wrapper before the walltime; the wrapper passes it on to
    # the task, which checkpoints and ends on its own. (The task runs in the project folder.)
    task.write(py(CHECKPOINTING), guard=WATCHING, signal=sig)
    proc = runner.start(task.dir)
    wait_for(lambda: (task.project / "ready").exists(), timeout=20, what="the task")
    proc.send_signal(getattr(signal, f"SIG{sig}"))
    assert proc.wait(timeout=20) == 0
    assert (task.project / "checkpoint").read_text() == f"SIG{sig}"
    status = task.status()
    assert status is not None and status.cause is Cause.COMPLETED
    assert f"Signal {sig} passed to the task at " in task.info()


def test_a_signal_the_task_did_not_ask_for_is_not_passed_on(task: Task, runner: Runner) -> None:
    task.write(py(CHECKPOINTING), guard=WATCHING, signal="USR2")
    proc = runner.start(task.dir)
    wait_for(lambda: (task.project / "ready").exists(), timeout=20, what="the task")
    proc.send_signal(signal.SIGUSR1)  # not the task's: ignored, and the wrapper lives on
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    status = task.status()
    assert status is not None and status.cause is Cause.CANCELLED
    assert not (task.project / "checkpoint").exists()
