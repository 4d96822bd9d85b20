"""The work queue coalesces keys, never hands one key to two workers, and keeps the earliest delay."""

from __future__ import annotations

import asyncio

from wasminfer_operator.handmade.workqueue import WorkQueue


async def test_duplicates_coalesce() -> None:
    q: WorkQueue[str] = WorkQueue()
    for key in ("a", "b", "a", "a"):
        q.add(key)
    assert len(q) == 2
    assert [await q.get(), await q.get()] == ["a", "b"]


async def test_a_key_in_progress_is_queued_again_only_when_done() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    key = await q.get()
    q.add("a")  # changed while being reconciled
    assert q._queue.empty(), "not handed to a second worker"
    q.done(key)
    assert await asyncio.wait_for(q.get(), 1) == "a"


async def test_add_after_keeps_the_earliest_visit() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add_after("a", 30)
    q.add_after("a", 0.05)
    q.add_after("a", 60)
    assert q.delayed == 1
    assert await asyncio.wait_for(q.get(), 1) == "a"
    assert q.delayed == 0


async def test_forget_cancels_a_delayed_visit() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add_after("a", 0.05)
    q.forget("a")
    await asyncio.sleep(0.1)
    assert len(q) == 0
