"""How many requests of one worker run at once, and how many may wait: one worker's flood (or its
slow guests) must never take every invocation thread from the others."""

from __future__ import annotations

import asyncio
from types import TracebackType

from wasminfer_runtime.config import WorkerConfig


def concurrency_for(worker: WorkerConfig, pool_threads: int) -> tuple[int, int]:
    """(invocations at once, requests waiting) of a worker on a pool of `pool_threads`: by default
    all threads but one, so another worker always finds one, and twice that many waiting."""
    limit = worker.limits.max_concurrency or max(1, pool_threads - 1)
    queued = worker.limits.max_queued if worker.limits.max_queued is not None else 2 * limit
    return limit, queued


class WorkerGate:
    """An asyncio gate for one worker's invocations (used from the server's event loop only)."""

    def __init__(self, limit: int, queued: int) -> None:
        self.limit = limit
        self.queued = queued
        self.running = 0
        self.waiting = 0
        self._free = asyncio.Condition()

    def full(self) -> bool:
        """No slot free and no room to wait: the request is refused at once."""
        return self.running >= self.limit and self.waiting >= self.queued

    async def __aenter__(self) -> None:
        async with self._free:
            self.waiting += 1
            try:
                await self._free.wait_for(lambda: self.running < self.limit)
            finally:
                self.waiting -= 1
            self.running += 1

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        async with self._free:
            self.running -= 1
            self._free.notify()
