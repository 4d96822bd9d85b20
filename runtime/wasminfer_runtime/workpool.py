"""A fixed pool of threads that run blocking calls for an asyncio loop.

`loop.run_in_executor` with a ThreadPoolExecutor chains a concurrent.futures.Future (its lock,
condition and callbacks) to an asyncio future on every call. Here a call is one put into an idle thread's inbox, and
its result goes to the loop's mailbox, which sets the asyncio futures directly: tens of
microseconds less per worker request. One wake-up of the loop (a `call_soon_threadsafe`, a
write to its self-pipe and a read) delivers every result that arrived before the loop got to it,
so under load several answers share one.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

class _Mailbox:
    """Results for one event loop, delivered together by one wake-up."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._results: list[tuple[asyncio.Future[Any], bool, Any]] = []

    def post(self, fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
        with self._lock:
            self._results.append((fut, ok, value))
            first = len(self._results) == 1  # else a wake-up is already on its way
        if first:
            try:
                self.loop.call_soon_threadsafe(self._deliver)
            except RuntimeError:  # the loop closed while the call ran
                log.debug("a pool call finished after its event loop closed")

    def _deliver(self) -> None:
        with self._lock:
            results, self._results = self._results, []
        for fut, ok, value in results:
            _settle(fut, ok, value)


_Job = tuple[_Mailbox, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.cancelled():  # the awaiting request went away; nobody wants the answer
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class WorkPool:
    """`threads` threads taking calls in order; `run` awaits one from the event loop.

    The thread that went idle last takes the next call: under light load one thread serves
    every request, so its stack, its Python thread state and the inference library's per-thread
    state stay warm instead of rotating through the pool.
    """

    def __init__(self, threads: int, name: str) -> None:
        if threads < 1:
            raise ValueError("a work pool needs at least one thread")
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue[_Job | None]] = []  # a stack: the last idle is the warmest
        self._backlog: collections.deque[_Job] = collections.deque()  # calls waiting for a thread
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._mailboxes: dict[asyncio.AbstractEventLoop, _Mailbox] = {}
        for i in range(threads):
            inbox: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
            self._idle.append(inbox)
            t = threading.Thread(target=self._work, args=(inbox,), name=f"{name}_{i}", daemon=True)
            self._threads.append(t)
            t.start()

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run fn(*args) on a pool thread; the future resolves on the calling loop.

        Raises RuntimeError once the pool is shut down, like a ThreadPoolExecutor.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot run new calls after shutdown")
            mailbox = self._mailboxes.get(loop)
            if mailbox is None:
                mailbox = self._mailboxes[loop] = _Mailbox(loop)
            job: _Job = (mailbox, fut, fn, args)
            inbox = self._idle.pop() if self._idle else None
            if inbox is None:
                self._backlog.append(job)
        if inbox is not None:
            inbox.put(job)
        return fut

    def _work(self, inbox: queue.SimpleQueue[_Job | None]) -> None:
        job = inbox.get()
        while job is not None:
            mailbox, fut, fn, args = job
            ok, value = True, None
            if not fut.cancelled():
                try:
                    value = fn(*args)
                except BaseException as err:  # handed to the awaiting request, as an executor would
                    ok, value = False, err
            # Idle again before the answer goes out, so the request it lets through finds this thread.
            with self._lock:
                closed = self._closed
                job = self._backlog.popleft() if self._backlog and not closed else None
                if job is None and not closed:
                    self._idle.append(inbox)
            if not fut.cancelled():
                mailbox.post(fut, ok, value)
            if closed:
                return
            if job is None:
                job = inbox.get()

    def shutdown(self, *, wait: bool = True) -> None:
        """Take no new calls, drop the waiting ones (their futures are cancelled), end the threads.

        Calls already running finish; with `wait`, this returns after them.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = list(self._backlog)
            self._backlog.clear()
            idle, self._idle = self._idle, []
        for inbox in idle:
            inbox.put(None)
        for mailbox, fut, _, _ in pending:
            try:
                mailbox.loop.call_soon_threadsafe(fut.cancel)
            except RuntimeError:
                pass
        if wait:
            for t in self._threads:
                if t is not threading.current_thread():
                    t.join()
