"""How often the engine polls a source. Pure: a function of what the polls saw.

Clusters are polled like submitit's watcher: 1, 2, 4 ... s while nothing changes, up to the
remote's ``poll_max_interval`` (60 s by default), and back to 1 s after a submission (the
source's wake-up) or whenever a poll sees an element change state. Other sources are polled
every second.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from hsm.sources.base import Source

FIRST_INTERVAL = 1.0


class PollPacer:
    def __init__(
        self, *, first: float = FIRST_INTERVAL, cap: float = FIRST_INTERVAL, factor: float = 2.0
    ) -> None:
        self.first = first
        self.cap = max(first, cap)
        self.factor = factor
        self.interval = first
        self._seen: object = None

    def reset(self) -> None:
        """Something happened (a submission): poll soon again."""
        self.interval = self.first

    def observed(self, states: Mapping[Hashable, Hashable]) -> None:
        """The states a poll saw: the same as before lengthens the interval, a change
        shortens it to the first one again."""
        seen = frozenset(states.items())
        if seen != self._seen:
            self._seen = seen
            self.interval = self.first
        else:
            self.interval = min(self.cap, self.interval * self.factor)


def poll_pacer(source: Source, first: float = FIRST_INTERVAL) -> PollPacer:
    """The pacer of ``source``: backoff for schedulers, every ``first`` s for the others."""
    settings = getattr(source, "settings", None)
    cap = getattr(settings, "poll_max_interval", None)
    if source.capabilities.queue and isinstance(cap, int | float):
        return PollPacer(first=first, cap=float(cap))
    return PollPacer(first=first, cap=first)
