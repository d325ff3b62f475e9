"""A virtual-time asyncio event loop: when nothing is ready, time jumps to the next timer.

The loop has no file descriptors. Its selector stands in for the wait: it advances the
simulated world (its hosts' events) to the next due time, which is either the loop's own
next timer or the world's next event, and returns at once. No real time passes.
"""

from __future__ import annotations

import asyncio
from typing import Any


class SimHang(Exception):
    """The simulated run did not end within its virtual time budget."""


class SimDeadlock(Exception):
    """Nothing is ready, no timer is set and the world has no event: nothing can happen."""


class _Selector:
    def __init__(self, loop: VirtualLoop) -> None:
        self.loop = loop

    def select(self, timeout: float | None) -> list[Any]:
        loop, world = self.loop, self.loop.world
        if loop.dead:  # a killed controller unwinding: the world stands still for it
            loop.own_now += timeout if timeout else 0.0
            loop.dead_steps += 1
            if loop.dead_steps > 100_000:
                raise SimHang("a killed controller did not stop")
            return []
        due = world.next_time()
        if timeout is None:
            if due is None:
                raise SimDeadlock(f"nothing can happen any more (at t={world.now:.3f})")
            target = due
        else:
            target = world.now + timeout
            if due is not None and due < target:
                target = due
        if target > world.deadline:
            raise SimHang(f"the run did not end within {world.deadline:.0f} s of virtual time")
        world.advance_to(target)
        return []

    def close(self) -> None:
        pass


class VirtualLoop(asyncio.BaseEventLoop):
    """The event loop of one controller process, on the world's clock."""

    def __init__(self, world: Any) -> None:
        super().__init__()
        self.world = world
        self._selector = _Selector(self)
        self.dead = False  # the controller was killed: its clock is its own from now on
        self.own_now = 0.0
        self.dead_steps = 0
        self._clock_resolution = 1e-9

    def time(self) -> float:
        return self.own_now if self.dead else float(self.world.now)

    def kill(self) -> None:
        self.own_now = self.world.now
        self.dead = True

    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass

    def close(self) -> None:
        # Tasks left pending by a killed controller are dropped without a word.
        self.set_exception_handler(lambda loop, ctx: None)
        super().close()


__all__ = ["SimDeadlock", "SimHang", "VirtualLoop"]
