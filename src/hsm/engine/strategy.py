"""Dispatch strategies: which source gets the next task. Pure functions of their inputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SlotView:
    """What a strategy may look at for one source."""

    name: str
    slots: int
    busy: int

    @property
    def free(self) -> int:
        return self.slots - self.busy


class RoundRobin:
    """Rotate over the sources that have a free slot."""

    def __init__(self) -> None:
        self._last: str | None = None

    def pick(self, candidates: Sequence[SlotView], order: Sequence[str]) -> SlotView:
        names = {c.name: c for c in candidates}
        start = order.index(self._last) + 1 if self._last in order else 0
        for i in range(len(order)):
            name = order[(start + i) % len(order)]
            if name in names:
                self._last = name
                return names[name]
        raise ValueError("no candidate source")


class LeastLoaded:
    """Pick the source with the smallest share of its slots in use (ties: config order)."""

    def pick(self, candidates: Sequence[SlotView], order: Sequence[str]) -> SlotView:
        rank = {name: i for i, name in enumerate(order)}
        return min(candidates, key=lambda c: (c.busy / c.slots, rank.get(c.name, 0)))


def make_strategy(name: str) -> RoundRobin | LeastLoaded:
    return LeastLoaded() if name == "least_loaded" else RoundRobin()


def prefer(candidates: Sequence[SlotView], avoid: set[str]) -> list[SlotView]:
    """Sources not in ``avoid`` when there are any, else all of them (retries go elsewhere)."""
    preferred = [c for c in candidates if c.name not in avoid]
    return preferred or list(candidates)


def views(slots: Mapping[str, int], busy: Mapping[str, int]) -> list[SlotView]:
    return [SlotView(n, s, busy.get(n, 0)) for n, s in slots.items()]
