"""Leader election on a coordination.k8s.io/v1 Lease, so that of several replicas exactly one acts.

Every replica watches and keeps its caches warm (a standby takes over in seconds); only the holder
of the Lease reconciles. The holder renews the Lease every retry period. A renewal that fails (the
API server refuses connections, times out or answers 5xx) is retried with a short backoff until the
renew deadline has passed since the last successful renewal, so an API-server outage shorter than
that changes nothing. Only then, or as soon as another replica is seen holding the Lease, does this
replica step down: `on_stopped` is called once with the reason, and the operator stops and exits so
its Deployment restarts it as a standby. The renew deadline is shorter than the lease duration, so
the old holder has stopped before a standby may take the Lease over. A holder that stops cleanly
releases the Lease, so a standby takes over at once. Timings default to client-go's.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("wasminfer.operator.leader")

FIRST_BACKOFF = 0.25  # seconds before the first retry of a failed renewal; doubles up to the retry period


@dataclass(frozen=True)
class LeaseSettings:
    name: str = "wasminfer-operator"
    namespace: str = "default"
    lease_duration: float = 15.0  # a standby takes a Lease not renewed for this long
    renew_deadline: float = 10.0  # the holder gives up after failing to renew for this long
    retry_period: float = 2.0  # between renewals, and between a standby's attempts

    def check(self) -> None:
        if self.retry_period <= 0:
            raise ValueError("--retry-period must be more than 0 seconds")
        if self.renew_deadline <= 1.2 * self.retry_period:
            raise ValueError("--renew-deadline must be more than 1.2 x --retry-period")
        if self.lease_duration <= self.renew_deadline:
            raise ValueError("--lease-duration must be more than --renew-deadline")


def default_identity() -> str:
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def micro_time(at: datetime) -> str:
    """The API's MicroTime format."""
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseUnavailable(Exception):
    """A Lease call that did not succeed: unreachable, timed out, 5xx, or a conflicting write."""


class LeaseAPI:
    """Reads and writes one Lease as plain JSON. Each call is bounded by its timeout and made once:
    the client's own retries would stretch a hung call far past the renew deadline."""

    def __init__(self, api_client: client.ApiClient, namespace: str, name: str) -> None:
        configuration = copy.deepcopy(api_client.configuration)
        configuration.retries = False
        self._api = client.CoordinationV1Api(client.ApiClient(configuration))
        self.namespace = namespace
        self.name = name

    def _call(self, fn: Callable[[], Any]) -> dict[str, Any] | None:
        try:
            resp = fn()
        except ApiException as err:
            if err.status == 404:
                return None
            raise LeaseUnavailable(f"{err.status} {err.reason}") from None
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise LeaseUnavailable(str(err) or type(err).__name__) from None
        try:
            data: dict[str, Any] = json.loads(resp.data)
        except ValueError:  # not the API server answering (a proxy's page)
            raise LeaseUnavailable("the answer is not JSON") from None
        return data

    def read(self, timeout: float) -> dict[str, Any] | None:
        """The Lease, or None when there is none."""
        return self._call(
            lambda: self._api.read_namespaced_lease(self.name, self.namespace, _request_timeout=timeout, _preload_content=False)
        )

    def create(self, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
        body: Any = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": self.name}, "spec": spec}
        return self._written(
            self._call(lambda: self._api.create_namespaced_lease(self.namespace, body, _request_timeout=timeout, _preload_content=False))
        )

    def replace(self, lease: Any, timeout: float) -> dict[str, Any]:
        """Writes `lease` back; its resourceVersion makes a write raced by another replica a conflict."""
        return self._written(
            self._call(
                lambda: self._api.replace_namespaced_lease(
                    self.name, self.namespace, lease, _request_timeout=timeout, _preload_content=False
                )
            )
        )

    @staticmethod
    def _written(lease: dict[str, Any] | None) -> dict[str, Any]:
        if lease is None:
            raise LeaseUnavailable("404 Not Found")
        return lease


class Leadership:
    """Takes part in the election as a task on the operator's event loop; calls back (on the loop)
    when this replica starts and stops leading. The Lease calls are blocking client calls made in
    the loop's executor, each bounded by its own timeout."""

    def __init__(
        self,
        settings: LeaseSettings,
        identity: str,
        api_client: client.ApiClient,
        on_started: Callable[[], None],
        on_stopped: Callable[[str], None],
    ) -> None:
        settings.check()
        self.settings = settings
        self.identity = identity
        self.api = LeaseAPI(api_client, settings.namespace, settings.name)
        self._on_started = on_started
        self._on_stopped = on_stopped
        self.leading = asyncio.Event()
        self._halt = asyncio.Event()
        self._lease: dict[str, Any] | None = None  # the Lease as this replica last wrote or read it
        self._observed: tuple[Any, ...] = ()  # (holder, renewTime) last seen, and since when (monotonic)
        self._observed_at = 0.0
        self._other: str = ""  # the other replica seen holding an unexpired Lease

    @property
    def where(self) -> str:
        return f"{self.settings.namespace}/{self.settings.name}"

    def halt(self) -> None:
        """Stop taking part (the process is stopping); no callback follows. On the loop."""
        self._halt.set()

    async def run(self) -> None:
        """Acquires, then renews until halted or until leadership is lost (then `on_stopped`)."""
        log.info("%s waiting for lease %s", self.identity, self.where)
        try:
            if not await self._acquire():
                return
            log.info("%s holds lease %s", self.identity, self.where)
            self.leading.set()
            self._on_started()
            reason = await self._renew()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a bug here must not leave a leader that no longer renews
            log.exception("leader election failed")
            reason = f"leader election failed: {err}"
        if reason is None:
            return
        self.leading.clear()
        log.error("%s steps down from lease %s: %s", self.identity, self.where, reason)
        self._on_stopped(reason)

    async def release(self, timeout: float = 2.0) -> bool:
        """Gives the Lease up when this replica stops cleanly (SIGTERM, a rollout of the operator):
        the holder is cleared, so a standby takes over on its next attempt instead of waiting out the
        lease duration. Best effort: on failure the Lease simply expires. Call after `run` ended."""
        lease = self._lease
        if not self.leading.is_set() or lease is None:
            return False
        self.leading.clear()
        spec = dict(lease.get("spec") or {})
        now = micro_time(datetime.now(timezone.utc))
        spec.update(holderIdentity=None, leaseDurationSeconds=1, renewTime=now, acquireTime=now)
        try:
            self._lease = await asyncio.to_thread(self.api.replace, {**lease, "spec": spec}, timeout)
        except LeaseUnavailable as err:
            log.warning("%s could not release lease %s (%s); it expires in %g s", self.identity, self.where, err, self.settings.lease_duration)
            return False
        log.info("%s released lease %s", self.identity, self.where)
        return True

    async def _pause(self, seconds: float) -> bool:
        """Waits `seconds`; True when halted meanwhile."""
        try:
            await asyncio.wait_for(self._halt.wait(), max(seconds, 0.0))
        except asyncio.TimeoutError:
            return False
        return True

    async def _attempt(self, timeout: float) -> bool:
        return await asyncio.to_thread(self._try, timeout)

    async def _acquire(self) -> bool:
        """Tries every retry period until this replica holds the Lease; False once halted."""
        while not self._halt.is_set():
            try:
                if await self._attempt(self.settings.renew_deadline):
                    return True
            except LeaseUnavailable as err:
                log.debug("lease %s: %s", self.where, err)
            if await self._pause(self.settings.retry_period):
                break
        return False

    async def _renew(self) -> str | None:
        """Renews until it cannot; the reason for stepping down, or None once halted."""
        s = self.settings
        last_renewal = time.monotonic()
        delay, failures, error = s.retry_period, 0, ""
        while not await self._pause(delay):
            left = last_renewal + s.renew_deadline - time.monotonic()
            if left <= 0:
                return f"not renewed for {s.renew_deadline:g} s (--renew-deadline); last error: {error}"
            try:
                if await self._attempt(left):
                    if failures:
                        log.warning("lease %s renewed again after %d failed attempt(s)", self.where, failures)
                    last_renewal, delay, failures = time.monotonic(), s.retry_period, 0
                    continue
                if self._other:
                    return f"the lease is held by {self._other}"
                error = "the lease changed meanwhile"
            except LeaseUnavailable as err:
                error = str(err)
            failures += 1
            log.warning("renewing lease %s failed (%s); retrying until %g s after the last renewal", self.where, error, s.renew_deadline)
            left = last_renewal + s.renew_deadline - time.monotonic()
            delay = max(0.0, min(FIRST_BACKOFF * 2 ** (failures - 1), s.retry_period, left))
        return None

    def _try(self, timeout: float) -> bool:
        """One attempt to take or renew the Lease. A holder renews with what it last wrote (one
        request); otherwise the Lease is read first. False when another replica holds it."""
        s = self.settings
        self._other = ""
        now = datetime.now(timezone.utc)
        mine = self._lease
        if self.leading.is_set() and mine is not None:
            try:
                self._lease = self.api.replace(self._record(mine, now), timeout)
                return True
            except LeaseUnavailable:
                self._lease = None  # perhaps written by someone else: read it on the next attempt
                raise
        lease = self.api.read(timeout)
        if lease is None:
            self._lease = self.api.create(self._record(None, now)["spec"], timeout)
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        observed = (holder, spec.get("renewTime"))
        if observed != self._observed:
            self._observed, self._observed_at = observed, time.monotonic()
        if holder and holder != self.identity:
            duration = spec.get("leaseDurationSeconds") or s.lease_duration
            if time.monotonic() - self._observed_at < duration:
                self._other = holder
                return False
        self._lease = self.api.replace(self._record(lease, now), timeout)
        return True

    def _record(self, lease: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
        """`lease` (or a new one) held and renewed by this replica at `now`."""
        lease = dict(lease or {})
        spec = dict(lease.get("spec") or {})
        if spec.get("holderIdentity") != self.identity:
            if spec.get("holderIdentity"):
                spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
            spec["holderIdentity"] = self.identity
            spec["acquireTime"] = micro_time(now)
        spec["leaseDurationSeconds"] = math.ceil(self.settings.lease_duration)
        spec["renewTime"] = micro_time(now)
        lease["spec"] = spec
        return lease
