"""How many requests of one worker run at once, and how many may wait: one worker's flood (or its
slow guests) must never take every invocation thread from the others, and a request is refused
(503, Retry-After) rather than kept waiting longer than it is worth.

Waiting room: a worker's `max_queued` when set. Unset, it follows the worker's pace: a request may
wait when the ones ahead of it are expected to start within QUEUE_WAIT_SECONDS, at the rate the
worker's requests have been finishing (at least twice `max_concurrency` may always wait, at most
MAX_WAITING). A quick worker thus takes 64 clients at once in its stride, and a slow one refuses
early instead of letting the queue's wait grow. Not less: refusing costs this server about as
much CPU as serving a hello request, so clients that retry at once without honouring Retry-After
would turn a tight bound into mostly refusals (64 such clients on one process: 89% 503 at 0.1 s).
"""

from __future__ import annotations

import asyncio
import collections
import time
from types import TracebackType

from wasminfer_runtime.config import WorkerConfig

QUEUE_WAIT_SECONDS = 0.25
MAX_WAITING = 4096
_RATE_WINDOW = 32  # completions the finishing rate is measured over


def concurrency_for(worker: WorkerConfig, pool_threads: int) -> tuple[int, int | None]:
    """(invocations at once, requests waiting or None: by the worker's pace) of a worker on a pool of
    `pool_threads`: by default all threads but one, so another worker always finds one."""
    limit = worker.limits.max_concurrency or max(1, pool_threads - 1)
    return limit, worker.limits.max_queued


class WorkerGate:
    """An asyncio gate for one worker's invocations (used from the server's event loop only)."""

    def __init__(self, limit: int, queued: int | None) -> None:
        self.limit = limit
        self.queued = queued
        self.running = 0
        self.waiting = 0
        self._free = asyncio.Condition()
        self._finished: collections.deque[float] = collections.deque(maxlen=_RATE_WINDOW)

    def full(self) -> bool:
        """No slot free and no room to wait: the request is refused at once."""
        if self.running < self.limit:
            return False
        if self.queued is not None:
            return self.waiting >= self.queued
        if self.waiting < 2 * self.limit:
            return False
        return self.waiting >= MAX_WAITING or self.expected_wait() > QUEUE_WAIT_SECONDS

    def expected_wait(self) -> float:
        """Seconds until one more waiting request would start, at the recent finishing rate."""
        done = self._finished
        if len(done) < 2 or done[-1] <= done[0]:
            return float("inf")  # no pace known yet: only the fixed room
        rate = (len(done) - 1) / (done[-1] - done[0])
        # The rate is of the past: a worker that has stalled since counts the time without any.
        stalled = time.monotonic() - done[-1]
        return (self.waiting + 1) / rate + stalled

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
        self._finished.append(time.monotonic())
        async with self._free:
            self.running -= 1
            self._free.notify()
