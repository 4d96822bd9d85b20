"""Leader election against a real HTTP server answering the Lease API: the leader rides out an API
outage shorter than the renew deadline, steps down once when it lasts longer or another replica
holds the Lease, and renews with one request per period."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from fakeapi import FakeAPI, wait_for
from kubernetes import client

from wasminfer_operator.leader import Leadership, LeaseSettings

NS, NAME = "ops", "lease-test"
# Scaled down from client-go's 15/10/2 s so that each test takes about a second.
SETTINGS = LeaseSettings(NAME, NS, lease_duration=2.0, renew_deadline=1.5, retry_period=0.2)
PATIENT = LeaseSettings(NAME, NS, lease_duration=4.0, renew_deadline=3.0, retry_period=0.2)  # outages of ~1.5 s


class Replica:
    def __init__(self, api: FakeAPI, identity: str = "me", settings: LeaseSettings = SETTINGS) -> None:
        self.started = threading.Event()
        self.reasons: list[str] = []
        self.stopped = threading.Event()
        self.election = Leadership(
            settings, identity, client.ApiClient(client.Configuration(host=api.url)), self.started.set, self._stopped
        )

    def _stopped(self, reason: str) -> None:
        self.reasons.append(reason)
        self.stopped.set()


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    server = FakeAPI().start()
    yield server
    server.close()


@pytest.fixture
def leader(api: FakeAPI, request: pytest.FixtureRequest) -> Iterator[Replica]:
    replica = Replica(api, settings=getattr(request, "param", SETTINGS))
    replica.election.start()
    assert replica.started.wait(5), "took the free Lease"
    yield replica
    replica.election.halt()


def renew_time(api: FakeAPI) -> str:
    with api.lock:
        return str(api.leases[(NS, NAME)]["spec"]["renewTime"])


def test_takes_the_lease_and_renews_it_with_one_request_each_period(api: FakeAPI, leader: Replica) -> None:
    lease = api.leases[(NS, NAME)]["spec"]
    assert lease["holderIdentity"] == "me" and lease["leaseDurationSeconds"] == 2
    before = len(api.lease_requests())
    time.sleep(0.7)
    renewals = api.lease_requests()[before:]
    assert 2 <= len(renewals) <= 5, renewals  # about one per retry period
    assert {method for method, _ in renewals} == {"PUT"}, "a holder renews without reading first"


@pytest.mark.parametrize("leader", [PATIENT], indirect=True)
def test_an_api_outage_shorter_than_the_renew_deadline_changes_nothing(api: FakeAPI, leader: Replica) -> None:
    api.stop()  # connection refused
    time.sleep(0.7)
    api.start()
    api.mode = "error"  # 503
    time.sleep(0.7)
    last = renew_time(api)
    api.mode = "ok"
    wait_for(lambda: renew_time(api) != last, 3, "a renewal once the API answers again")
    time.sleep(0.5)
    assert not leader.stopped.is_set(), leader.reasons
    assert leader.election.leading.is_set()
    assert api.leases[(NS, NAME)]["spec"]["holderIdentity"] == "me"


def test_steps_down_once_after_the_renew_deadline_when_the_api_hangs(api: FakeAPI, leader: Replica) -> None:
    last = renew_time(api)
    api.mode = "hang"
    began = time.monotonic()
    assert leader.stopped.wait(10), "stepped down"
    took = time.monotonic() - began
    assert renew_time(api) == last
    # The deadline counts from the last renewal, at most one retry period before the hang began.
    assert SETTINGS.renew_deadline - SETTINGS.retry_period - 0.1 <= took <= SETTINGS.renew_deadline + 3, took
    assert not leader.election.leading.is_set()
    time.sleep(0.3)
    assert len(leader.reasons) == 1 and "renew" in leader.reasons[0], leader.reasons


def test_steps_down_at_once_when_another_replica_holds_the_lease(api: FakeAPI, leader: Replica) -> None:
    api.set_holder(NS, NAME, "other")
    assert leader.stopped.wait(2), "stepped down"
    assert leader.reasons == ["the lease is held by other"]
    with api.lock:
        assert api.leases[(NS, NAME)]["spec"]["holderIdentity"] == "other", "left to its holder"


def test_a_standby_waits_for_the_lease_to_expire_and_rides_out_an_outage_meanwhile(api: FakeAPI, leader: Replica) -> None:
    standby = Replica(api, "standby")
    standby.election.start()
    api.stop()
    time.sleep(0.3)
    api.start()
    time.sleep(0.3)
    assert not standby.started.is_set() and not standby.stopped.is_set()
    leader.election.halt()  # stops renewing, as when its process dies
    assert standby.started.wait(SETTINGS.lease_duration + 3), "took the expired Lease"
    spec = api.leases[(NS, NAME)]["spec"]
    assert spec["holderIdentity"] == "standby" and spec["leaseTransitions"] == 1
    standby.election.halt()
