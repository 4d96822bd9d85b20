"""A work queue of object keys with the usual controller semantics.

A key queued many times before a worker takes it is reconciled once; a key is never reconciled by two
workers at the same time (added while in progress, it is queued again when the worker is done);
`add_after` schedules a later visit, keeping only the earliest one per key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self) -> None:
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._timers: dict[K, tuple[float, asyncio.TimerHandle]] = {}

    def __len__(self) -> int:
        return len(self._dirty)

    @property
    def delayed(self) -> int:
        return len(self._timers)

    def add(self, key: K) -> None:
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.put_nowait(key)

    def add_after(self, key: K, delay: float) -> None:
        loop = asyncio.get_running_loop()
        when = loop.time() + max(delay, 0.0)
        current = self._timers.get(key)
        if current is not None:
            if current[0] <= when:
                return
            current[1].cancel()
        self._timers[key] = (when, loop.call_at(when, self._fire, key))

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> K:
        key = await self._queue.get()
        self._dirty.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.put_nowait(key)

    def forget(self, key: K) -> None:
        """Drop a pending delayed visit (the object is gone)."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer[1].cancel()

    def close(self) -> None:
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
