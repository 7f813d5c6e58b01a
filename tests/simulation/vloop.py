"""An asyncio event loop on virtual time, for deterministic schedules.

The loop's clock stands still while any callback is ready and jumps to the
next timer when every task waits, so ``asyncio.sleep``, ``wait_for``
timeouts and ``loop.time()`` cost nothing and follow only the schedule.
Nothing in a simulation does real I/O: a wait with no timer pending means
every task waits on another, which is reported as a stall, not slept through.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Mapping
from typing import Any

__all__ = ["Stalled", "VirtualLoop"]


class Stalled(RuntimeError):
    """Every task waits and no timer is due: nothing can ever run again."""


class _NoSelector(selectors.BaseSelector):
    """A selector that never reports a file ready; ``select`` advances time."""

    def __init__(self) -> None:
        self._map: dict[Any, selectors.SelectorKey] = {}
        self.loop: VirtualLoop | None = None

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = selectors.SelectorKey(fileobj, _fd(fileobj), events, data)
        self._map[fileobj] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._map.pop(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        self._map.pop(fileobj, None)
        return self.register(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        assert self.loop is not None
        if timeout is None:
            raise Stalled("every task waits and no timer is pending")
        self.loop.advance(timeout)
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._map

    def close(self) -> None:
        self._map.clear()


def _fd(fileobj: Any) -> int:
    return fileobj if isinstance(fileobj, int) else int(fileobj.fileno())


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, start: float = 0.0) -> None:
        selector = _NoSelector()
        super().__init__(selector)
        selector.loop = self
        self._virtual = start

    def time(self) -> float:
        return self._virtual

    def advance(self, seconds: float) -> None:
        if seconds > 0:
            self._virtual += seconds
