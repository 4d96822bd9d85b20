"""The invoke thread pool: results, errors, a backlog beyond its threads, and shutdown."""

from __future__ import annotations

import asyncio
import threading

import pytest

from wasminfer_runtime.workpool import WorkPool


async def test_returns_results_and_raises_errors() -> None:
    pool = WorkPool(2, "test")
    try:
        assert await pool.run(lambda a, b: a + b, 2, 3) == 5
        with pytest.raises(ZeroDivisionError):
            await pool.run(lambda: 1 // 0)
    finally:
        pool.shutdown()


async def test_more_calls_than_threads_all_finish() -> None:
    pool = WorkPool(2, "test")
    gate = threading.Event()
    try:
        names = [pool.run(lambda: (gate.wait(5), threading.current_thread().name)[1]) for _ in range(7)]
        gate.set()
        done = await asyncio.gather(*names)
        assert len(done) == 7 and set(done) <= {"test_0", "test_1"}
    finally:
        pool.shutdown()


async def test_one_thread_serves_sequential_calls() -> None:
    pool = WorkPool(4, "test")
    try:
        names = {await pool.run(lambda: threading.current_thread().name) for _ in range(20)}
        assert len(names) == 1
    finally:
        pool.shutdown()


async def test_shutdown_cancels_waiting_calls_and_refuses_new_ones() -> None:
    pool = WorkPool(1, "test")
    gate = threading.Event()
    running = pool.run(gate.wait, 5)
    waiting = pool.run(lambda: "never")
    await asyncio.sleep(0.05)
    closer = asyncio.get_running_loop().run_in_executor(None, pool.shutdown)
    await asyncio.sleep(0.05)
    gate.set()
    await closer
    assert await running is True
    with pytest.raises(asyncio.CancelledError):
        await waiting
    with pytest.raises(RuntimeError):
        pool.run(lambda: None)


async def test_results_that_arrive_together_share_one_wake_up_of_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = WorkPool(4, "test")
    loop = asyncio.get_running_loop()
    wake_ups = 0
    original = loop.call_soon_threadsafe

    def counting(*args: object, **kwargs: object) -> object:
        nonlocal wake_ups
        wake_ups += 1
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "call_soon_threadsafe", counting)
    try:
        futures = [pool.run(lambda i=i: i * i) for i in range(4)]
        threading.Event().wait(0.3)  # the loop is busy while all four finish
        assert await asyncio.gather(*futures) == [0, 1, 4, 9]
        assert wake_ups == 1
        assert await pool.run(lambda: "again") == "again"  # and the next result wakes it again
        assert wake_ups == 2
    finally:
        pool.shutdown()
