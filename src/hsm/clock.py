"""The clock hsm reads: wall time for records, monotonic time for deadlines.

One place, so that the engine can run on another clock (the simulation tests run it on
virtual time). Production code calls ``clock.time()`` and ``clock.monotonic()``.
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable

_wall: Callable[[], float] = _time.time
_mono: Callable[[], float] = _time.monotonic


def time() -> float:
    return _wall()


def monotonic() -> float:
    return _mono()


def install(wall: Callable[[], float], mono: Callable[[], float]) -> None:
    """Read time from these functions from now on."""
    global _wall, _mono
    _wall, _mono = wall, mono


def reset() -> None:
    """Back to the real clock."""
    install(_time.time, _time.monotonic)
