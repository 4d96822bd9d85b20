"""Leader election against a real HTTP server answering the Lease API: the leader rides out an API
outage shorter than the renew deadline, steps down once when it lasts longer or another replica
holds the Lease, renews with one request per period, and releases the Lease when it stops cleanly.
The election runs as a task on the test's event loop, as on the operator's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from fakeapi import FakeAPI
from kubernetes import client

from wasminfer_operator.handmade.lease import Leadership, LeaseSettings

NS, NAME = "ops", "lease-test"
# Scaled down from client-go's 15/10/2 s so that each test takes about a second.
SETTINGS = LeaseSettings(NAME, NS, lease_duration=2.0, renew_deadline=1.5, retry_period=0.2)
PATIENT = LeaseSettings(NAME, NS, lease_duration=4.0, renew_deadline=3.0, retry_period=0.2)  # outages of ~1.5 s


class Replica:
    def __init__(self, api: FakeAPI, identity: str = "me", settings: LeaseSettings = SETTINGS) -> None:
        self.started = asyncio.Event()
        self.reasons: list[str] = []
        self.stopped = asyncio.Event()
        self.election = Leadership(
            settings, identity, client.ApiClient(client.Configuration(host=api.url)), self.started.set, self._stopped
        )
        self.task: asyncio.Task[None] | None = None

    def _stopped(self, reason: str) -> None:
        self.reasons.append(reason)
        self.stopped.set()

    def start(self) -> Replica:
        self.task = asyncio.create_task(self.election.run())
        return self

    async def halt(self) -> None:
        self.election.halt()
        if self.task is not None:
            await self.task


async def within(seconds: float, event: asyncio.Event) -> bool:
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except asyncio.TimeoutError:
        return False
    return True


async def until(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:g} s waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    server = FakeAPI().start()
    yield server
    server.close()


@pytest.fixture
async def leader(api: FakeAPI, request: pytest.FixtureRequest) -> AsyncIterator[Replica]:
    replica = Replica(api, settings=getattr(request, "param", SETTINGS)).start()
    assert await within(5, replica.started), "took the free Lease"
    yield replica
    await replica.halt()


def renew_time(api: FakeAPI) -> str:
    with api.lock:
        return str(api.leases[(NS, NAME)]["spec"]["renewTime"])


async def test_takes_the_lease_and_renews_it_with_one_request_each_period(api: FakeAPI, leader: Replica) -> None:
    lease = api.leases[(NS, NAME)]["spec"]
    assert lease["holderIdentity"] == "me" and lease["leaseDurationSeconds"] == 2
    before = len(api.lease_requests())
    await asyncio.sleep(0.7)
    renewals = api.lease_requests()[before:]
    assert 2 <= len(renewals) <= 5, renewals  # about one per retry period
    assert {method for method, _ in renewals} == {"PUT"}, "a holder renews without reading first"


@pytest.mark.parametrize("leader", [PATIENT], indirect=True)
async def test_an_api_outage_shorter_than_the_renew_deadline_changes_nothing(api: FakeAPI, leader: Replica) -> None:
    api.stop()  # connection refused
    await asyncio.sleep(0.7)
    api.start()
    api.mode = "error"  # 503
    await asyncio.sleep(0.7)
    last = renew_time(api)
    api.mode = "ok"
    await until(lambda: renew_time(api) != last, 3, "a renewal once the API answers again")
    await asyncio.sleep(0.5)
    assert not leader.stopped.is_set(), leader.reasons
    assert leader.election.leading.is_set()
    assert api.leases[(NS, NAME)]["spec"]["holderIdentity"] == "me"


async def test_steps_down_once_after_the_renew_deadline_when_the_api_hangs(api: FakeAPI, leader: Replica) -> None:
    last = renew_time(api)
    api.mode = "hang"
    began = time.monotonic()
    assert await within(10, leader.stopped), "stepped down"
    took = time.monotonic() - began
    assert renew_time(api) == last
    # The deadline counts from the last renewal, at most one retry period before the hang began.
    assert SETTINGS.renew_deadline - SETTINGS.retry_period - 0.1 <= took <= SETTINGS.renew_deadline + 3, took
    assert not leader.election.leading.is_set()
    await asyncio.sleep(0.3)
    assert len(leader.reasons) == 1 and "renew" in leader.reasons[0], leader.reasons


async def test_steps_down_at_once_when_another_replica_holds_the_lease(api: FakeAPI, leader: Replica) -> None:
    api.set_holder(NS, NAME, "other")
    assert await within(2, leader.stopped), "stepped down"
    assert leader.reasons == ["the lease is held by other"]
    with api.lock:
        assert api.leases[(NS, NAME)]["spec"]["holderIdentity"] == "other", "left to its holder"


async def test_a_standby_waits_for_the_lease_to_expire_and_rides_out_an_outage_meanwhile(api: FakeAPI, leader: Replica) -> None:
    standby = Replica(api, "standby").start()
    api.stop()
    await asyncio.sleep(0.3)
    api.start()
    await asyncio.sleep(0.3)
    assert not standby.started.is_set() and not standby.stopped.is_set()
    await leader.halt()  # stops renewing, as when its process dies
    assert await within(SETTINGS.lease_duration + 3, standby.started), "took the expired Lease"
    spec = api.leases[(NS, NAME)]["spec"]
    assert spec["holderIdentity"] == "standby" and spec["leaseTransitions"] == 1
    await standby.halt()


async def test_a_clean_stop_releases_the_lease_and_the_standby_takes_it_at_once(api: FakeAPI, leader: Replica) -> None:
    standby = Replica(api, "standby").start()
    await asyncio.sleep(0.3)
    assert not standby.started.is_set()
    await leader.halt()  # SIGTERM: kopf has stopped, the election ends
    began = time.monotonic()
    assert await leader.election.release()
    assert not leader.election.leading.is_set() and not leader.stopped.is_set(), "a release is no step-down"
    assert await within(SETTINGS.lease_duration, standby.started), "took the released Lease"
    took = time.monotonic() - began
    # Within about one retry period, not after the lease duration an expiry would take.
    assert took < SETTINGS.lease_duration - SETTINGS.retry_period, took
    assert api.leases[(NS, NAME)]["spec"]["holderIdentity"] == "standby"
    await standby.halt()


async def test_a_replica_that_does_not_hold_the_lease_releases_nothing(api: FakeAPI, leader: Replica) -> None:
    standby = Replica(api, "standby").start()
    await asyncio.sleep(0.3)
    await standby.halt()
    assert not await standby.election.release()
    assert api.leases[(NS, NAME)]["spec"]["holderIdentity"] == "me"
