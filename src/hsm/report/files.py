"""What the report and ``hsm results`` read from task folders: error-log tails and metrics.

Every read is bounded, so a huge or binary log cannot blow up the report, and a
missing or malformed file is simply absent from it.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.json"
TAIL_LINES = 20  # lines of stderr.log kept per task
TAIL_CHARS = 2000  # ... and at most this many characters of them
TAIL_READ_BYTES = 16_384  # how much of the end of the log is read
METRICS_MAX_BYTES = 1_000_000
METRICS_MAX_KEYS = 100

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def tail_bytes(path: Path, limit: int) -> tuple[bytes, int] | None:
    """The last ``limit`` bytes of a file and its size; None when it cannot be read."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read(limit), size
    except OSError:
        return None


def read_tail(path: Path, *, lines: int = TAIL_LINES, chars: int = TAIL_CHARS) -> str | None:
    """The last ``lines`` lines of a log (at most ``chars`` characters), or None if empty.

    Carriage-return progress bars keep only their last state, and terminal colour codes
    are dropped.
    """
    read = tail_bytes(path, TAIL_READ_BYTES)
    if read is None:
        return None
    data, size = read
    text = data.decode("utf-8", errors="replace")
    if size > TAIL_READ_BYTES and "\n" in text:
        text = text.split("\n", 1)[1]  # the first line is probably cut
    kept = []
    for line in text.split("\n"):
        line = _ANSI.sub("", line).rsplit("\r", 1)[-1]
        kept.append(_CONTROL.sub("", line).rstrip())
    while kept and not kept[-1]:
        kept.pop()
    tail = "\n".join(kept[-lines:]).strip("\n")
    if len(tail) > chars:
        tail = "…" + tail[-(chars - 1) :]
    return tail or None


_NORMALISERS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"task_\d{4,}"), "task_<n>"),
    (re.compile(r"\b\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?"), "<time>"),
    (re.compile(r"\b\d\d:\d\d:\d\d(?:[.,]\d+)?\b"), "<time>"),
    (
        re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I),
        "<uuid>",
    ),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "0x<hex>"),
    (re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w])", re.I), "<n>"),
]
_LINE_NO = re.compile(r"\bline (\d+)")
TRACEBACK = "Traceback (most recent call last):"
KEY_LINES = 5  # without a traceback, the last lines that identify an error


def failure_key(tail: str) -> str:
    """The part of an error-log tail that identifies the error, normalised.

    That is the last Python traceback when there is one, else the last ``KEY_LINES``
    non-empty lines: output printed before the error does not split a group.
    """
    start = tail.rfind(TRACEBACK)
    if start >= 0:
        text = tail[start:]
    else:
        text = "\n".join([line for line in tail.splitlines() if line.strip()][-KEY_LINES:])
    return normalise_tail(text)


def normalise_tail(tail: str) -> str:
    """A key under which tails of the same error compare equal.

    Task numbers, times, UUIDs, addresses and numbers vary between tasks that hit the same
    bug; they are replaced by placeholders. Line numbers in tracebacks are kept, since a
    different line usually means a different bug.
    """
    tail = tail.replace("\x00", "")
    kept = _LINE_NO.findall(tail)
    text = _LINE_NO.sub("line \x00", tail)
    for pattern, repl in _NORMALISERS:
        text = pattern.sub(repl, text)
    numbers = iter(kept)
    text = re.sub("\x00", lambda _: next(numbers), text)
    return "\n".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


def read_metrics(path: Path) -> dict[str, Any] | None:
    """The scalar values of a task's ``metrics.json``, nested keys joined with dots.

    Numbers, strings, booleans and null are kept; lists are skipped. NaN and infinities
    become the strings ``"nan"``, ``"inf"`` and ``"-inf"``. None when the file is missing,
    too big, or not a JSON object.
    """
    try:
        if path.stat().st_size > METRICS_MAX_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    out: dict[str, Any] = {}
    _flatten(data, "", out)
    return out


STDOUT_LOG = "stdout.log"
STDOUT_READ_BYTES = 65_536  # how much of the end of stdout.log is searched for a JSON line


def last_json_line(path: Path) -> dict[str, Any] | None:
    """The scalar values of the last line of a log that is a JSON object (searched in the
    last 64 KiB), flattened as in :func:`read_metrics`; None when there is none."""
    tail = tail_bytes(path, STDOUT_READ_BYTES)
    if tail is None:
        return None
    data, _ = tail
    for raw in reversed(data.decode("utf-8", errors="replace").splitlines()):
        line = raw.strip()
        if not (line.startswith("{") and line.endswith("}")):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            _flatten(value, "", out)
            return out
    return None


def task_metrics(task_dir: Path, metrics_file: str | None = None) -> dict[str, Any] | None:
    """A task's metrics: from ``metrics_file`` (a path in the task folder, the project
    config's ``results.metrics_file``) when it is set, else from ``metrics.json``; when
    that file is missing or not a JSON object, from the last JSON-object line of
    ``stdout.log``. None when no source holds any."""
    values = read_metrics(task_dir / (metrics_file or METRICS_FILE))
    if values is None:
        values = last_json_line(task_dir / STDOUT_LOG)
    return values


def _flatten(data: dict[Any, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in data.items():
        if len(out) >= METRICS_MAX_KEYS:
            return
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            _flatten(value, name + ".", out)
        elif isinstance(value, (str, int, float, bool)) or value is None:
            out[name] = json_safe(value)


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by a string (strict JSON has none)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
