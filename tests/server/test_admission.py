"""The waiting room of a worker without `max_queued`: bounded by the expected wait, not a count."""

from __future__ import annotations

import asyncio

import pytest

from wasminfer_runtime import admission
from wasminfer_runtime.admission import QUEUE_WAIT_SECONDS, WorkerGate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _pace(gate: WorkerGate, clock: Clock, requests: int, seconds_each: float) -> None:
    """`requests` run one after another through the gate, each taking `seconds_each`."""
    for _ in range(requests):
        async with gate:
            clock.now += seconds_each


async def _waiters(gate: WorkerGate, count: int) -> list[asyncio.Task[None]]:
    async def wait() -> None:
        async with gate:
            pass

    tasks = [asyncio.create_task(wait()) for _ in range(count)]
    await asyncio.sleep(0)  # each is waiting now
    return tasks


@pytest.mark.asyncio
async def test_a_quick_worker_lets_many_clients_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(admission.time, "monotonic", clock)
    gate = WorkerGate(limit=1, queued=None)
    await _pace(gate, clock, 32, 0.001)  # 1,000 requests/s
    await gate.__aenter__()  # the slot is taken
    tasks = await _waiters(gate, 200)
    assert gate.waiting == 200 and not gate.full(), gate.expected_wait()  # 0.2 s for the 201st
    more = await _waiters(gate, 60)
    assert gate.full(), f"{gate.waiting} waiting, expected wait {gate.expected_wait():.3f} s"
    assert gate.expected_wait() > QUEUE_WAIT_SECONDS
    await gate.__aexit__(None, None, None)
    await asyncio.gather(*tasks, *more)


@pytest.mark.asyncio
async def test_a_slow_worker_refuses_beyond_its_fixed_room(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(admission.time, "monotonic", clock)
    gate = WorkerGate(limit=2, queued=None)
    await _pace(gate, clock, 8, 0.5)  # 2 requests/s
    await gate.__aenter__()
    await gate.__aenter__()
    tasks = await _waiters(gate, 4)  # twice the limit may always wait
    assert gate.waiting == 4 and gate.full()  # a fifth would wait ~2.5 s
    await gate.__aexit__(None, None, None)
    await gate.__aexit__(None, None, None)
    await asyncio.gather(*tasks)


@pytest.mark.asyncio
async def test_an_explicit_max_queued_is_a_count(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(admission.time, "monotonic", clock)
    gate = WorkerGate(limit=1, queued=3)
    await _pace(gate, clock, 32, 0.001)
    await gate.__aenter__()
    tasks = await _waiters(gate, 3)
    assert gate.full()
    await gate.__aexit__(None, None, None)
    await asyncio.gather(*tasks)


@pytest.mark.asyncio
async def test_a_stalled_worker_counts_the_time_since_its_last_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(admission.time, "monotonic", clock)
    gate = WorkerGate(limit=1, queued=None)
    await _pace(gate, clock, 32, 0.001)
    await gate.__aenter__()
    tasks = await _waiters(gate, 2)
    assert not gate.full()  # fast, so far
    clock.now += 5.0  # nothing has finished for 5 s (its guests hang)
    assert gate.full()
    await gate.__aexit__(None, None, None)
    await asyncio.gather(*tasks)
