"""The job wrapper and its file contract (docs/architecture.md, "The job wrapper contract").

The controller writes a task spec into the task folder (`write_spec`), runs
`bash wrapper.sh TASK_DIR` on the host, and reads back what the wrapper records
(`read_status`, `read_events`). The wrapper itself needs only bash and coreutils.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from hsm.states import Cause

logger = logging.getLogger(__name__)

WRAPPER_PATH: Path = Path(__file__).with_name("wrapper.sh")

SPEC_MAGIC = "hsm-spec-3"
SPEC_MAGICS = ("hsm-spec-2", SPEC_MAGIC)  # the ones a task folder may hold
HSM_DIR = ".hsm"
SPEC_FILE = f"{HSM_DIR}/spec"
LAUNCH_FILE = f"{HSM_DIR}/launch"  # "ATTEMPT NONCE [PID]\n", by the SSH host monitor
EVENTS_FILE = f"{HSM_DIR}/events.log"
STATUS_SPARE = f"{HSM_DIR}/status.spare"
STATUS_FILE = "status.json"
TASK_INFO = "task_info.txt"
STDOUT_LOG = "stdout.log"
STDERR_LOG = "stderr.log"
TMP_DIR = "tmp"
CUDA_CACHE_DIR = "cuda_cache"
STATUS_SIZE = 1024  # every status.json the wrapper writes has exactly this size

_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NONCE = re.compile(r"[0-9a-f]{0,32}")
CHECKPOINT_SIGNALS = ("", "USR1", "USR2")


def wrapper_text() -> str:
    """The wrapper script, as shipped in the package."""
    return resources.files(__package__).joinpath("wrapper.sh").read_text(encoding="utf-8")


def wrapper_name() -> str:
    """The file name of this version of the wrapper where a host or a sweep folder keeps it
    (``wrapper-<hash>.sh``, from its text): versions side by side never overwrite each other."""
    return f"wrapper-{hashlib.sha256(wrapper_text().encode()).hexdigest()[:12]}.sh"


@dataclass(frozen=True)
class GuardSettings:
    """The disk guard, in bytes and seconds."""

    project_min_free: int
    task_min_free: int
    check_interval: int
    warn_below: int
    kill_below: int


@dataclass(frozen=True)
class TaskSpec:
    """Everything the wrapper needs to run one attempt of one task."""

    attempt: int
    project_dir: str
    guard: GuardSettings
    env: Mapping[str, str]
    setup: Sequence[str]
    argv: Sequence[str]
    info: str
    nonce: str = ""  # the attempt's launch nonce, written into every status.json
    signal: str = ""  # "USR1" or "USR2": passed on to the task when the wrapper gets it


def _field(name: str, value: str) -> bytes:
    if "\0" in value:
        raise ValueError(f"{name} contains a NUL byte, which a task spec cannot carry")
    return value.encode("utf-8", "surrogateescape") + b"\0"


def encode_spec(spec: TaskSpec) -> bytes:
    """The bytes of `.hsm/spec`: NUL-terminated fields, in the documented order."""
    guard = spec.guard
    numbers = {
        "attempt": spec.attempt,
        "guard.project_min_free": guard.project_min_free,
        "guard.task_min_free": guard.task_min_free,
        "guard.check_interval": guard.check_interval,
        "guard.warn_below": guard.warn_below,
        "guard.kill_below": guard.kill_below,
    }
    for name, number in numbers.items():
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {number!r}")
    if not spec.argv:
        raise ValueError("argv is empty: a task needs a command")
    if not isinstance(spec.nonce, str) or not _NONCE.fullmatch(spec.nonce):
        raise ValueError(
            f"nonce must be 1 to 32 lower-case hex digits or empty, got {spec.nonce!r}"
        )
    if spec.signal not in CHECKPOINT_SIGNALS:
        raise ValueError(f"signal must be one of {CHECKPOINT_SIGNALS}, got {spec.signal!r}")
    out = [
        _field("magic", SPEC_MAGIC),
        _field("attempt", str(spec.attempt)),
        _field("nonce", spec.nonce),
        _field("signal", spec.signal),
    ]
    out.append(_field("project_dir", spec.project_dir))
    out += [_field(name, str(number)) for name, number in list(numbers.items())[1:]]
    out.append(_field("env", str(len(spec.env))))
    for key, value in spec.env.items():
        if not _ENV_KEY.fullmatch(key):
            raise ValueError(f"env key {key!r} is not a valid environment variable name")
        out.append(_field(f"env[{key!r}]", f"{key}={value}"))
    out.append(_field("setup", str(len(spec.setup))))
    out += [_field(f"setup[{i}]", line) for i, line in enumerate(spec.setup)]
    out.append(_field("argv", str(len(spec.argv))))
    out += [_field(f"argv[{i}]", arg) for i, arg in enumerate(spec.argv)]
    out.append(_field("info", spec.info))
    return b"".join(out)


def write_spec(task_dir: Path, spec: TaskSpec) -> None:
    """Write `.hsm/spec` (atomically), reserve the space of one status file, and create the
    task's private temp folders.

    The reserve lets the wrapper record a status even when the disk is already full. The
    wrapper creates the folders itself when they are missing; creating them here saves it a
    process start.
    """
    data = encode_spec(spec)
    meta = task_dir / HSM_DIR
    meta.mkdir(parents=True, exist_ok=True)
    for name in (TMP_DIR, CUDA_CACHE_DIR):
        (task_dir / name).mkdir(exist_ok=True)
    tmp = meta / "spec.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, task_dir / SPEC_FILE)
    spare = task_dir / STATUS_SPARE
    if not spare.exists():
        spare.write_bytes(b" " * (STATUS_SIZE - 1) + b"\n")


def spec_nonce(task_dir: Path) -> str | None:
    """The launch nonce in the task folder's spec (None: no spec, or not readable)."""
    try:
        with open(task_dir / SPEC_FILE, "rb") as f:
            head = f.read(128)
    except OSError:
        return None
    fields = head.split(b"\0")
    if len(fields) < 3 or fields[0].decode("ascii", "replace") not in SPEC_MAGICS:
        return None
    return fields[2].decode("ascii", "replace")


class WrapperState(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL: frozenset[WrapperState] = frozenset(
    {WrapperState.COMPLETED, WrapperState.FAILED, WrapperState.CANCELLED}
)


@dataclass(frozen=True)
class WrapperStatus:
    """The content of `status.json`."""

    version: int
    attempt: int
    status: WrapperState
    cause: Cause | None
    exit_code: int | None
    pid: int
    pgid: int | None
    host: str
    started: float
    finished: float | None
    nonce: str = ""  # the launch nonce of the attempt that wrote it ("" when it had none)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def belongs_to(self, attempt: int, nonce: str) -> bool:
        """Whether this attempt wrote it: the same number and launch nonce (a status of a
        wrapper older than fencing carries no nonce, and neither may the caller)."""
        return self.attempt == attempt and (not nonce or not self.nonce or self.nonce == nonce)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"not an integer: {value!r}")
    return value


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    return float(value)


def _nonce(value: Any) -> str:
    if not isinstance(value, str) or not _NONCE.fullmatch(value):
        raise ValueError(f"not a nonce: {value!r}")
    return value


def parse_status(text: str) -> WrapperStatus | None:
    """Parse `status.json`; None when it is empty, partial or invalid (never raises)."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("host"), str):
            return None
        cause = data["cause"]
        nonce = _nonce(data.get("nonce", ""))  # version 1 statuses have none
        return WrapperStatus(
            version=_int(data["version"]),
            attempt=_int(data["attempt"]),
            status=WrapperState(data["status"]),
            cause=None if cause is None else Cause(cause),
            exit_code=None if data["exit_code"] is None else _int(data["exit_code"]),
            pid=_int(data["pid"]),
            pgid=None if data["pgid"] is None else _int(data["pgid"]),
            host=data["host"],
            started=_float(data["started"]),
            finished=None if data["finished"] is None else _float(data["finished"]),
            nonce=nonce,
        )
    except (ValueError, KeyError, TypeError, RecursionError):
        return None


def read_status(task_dir: Path) -> WrapperStatus | None:
    """The wrapper's status in `task_dir`, or None when there is none (yet) or it is unreadable."""
    try:
        text = (task_dir / STATUS_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        logger.debug("no readable status in %s: %s", task_dir, exc)
        return None
    return parse_status(text)


def read_events(task_dir: Path, attempt: int | None = None) -> list[str]:
    """The event lines the wrapper recorded in `task_dir` (e.g. low-disk warnings), oldest
    first; see `parse_events`."""
    try:
        text = (task_dir / EVENTS_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return parse_events(text, attempt)


def parse_events(text: str, attempt: int | None = None) -> list[str]:
    """The event lines of an events log, oldest first: of every attempt, or of ``attempt``.

    Lines starting with `#` are comments: the wrapper starts the file with one (which
    reserves a block for events on a full disk), and each attempt with `# attempt N`.
    """
    mine = attempt is None or "# attempt " not in text
    lines = []
    for line in text.splitlines():
        if line.startswith("# attempt ") and attempt is not None:
            mine = line == f"# attempt {attempt}"
        elif mine and line.strip() and not line.startswith("#"):
            lines.append(line)
    return lines
