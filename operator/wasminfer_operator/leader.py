"""Leader election on a coordination.k8s.io/v1 Lease, so that of several replicas exactly one acts.

Every replica watches and keeps its caches warm (a standby takes over in seconds); only the holder
of the Lease reconciles. A replica that loses the Lease stops the process, as controllers do, and
its Deployment starts it again as a standby. Uses the Kubernetes client's own election loop.
"""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

log = logging.getLogger("wasminfer.operator.leader")


@dataclass(frozen=True)
class LeaseSettings:
    name: str = "wasminfer-operator"
    namespace: str = "default"
    lease_duration: int = 15
    renew_deadline: int = 10
    retry_period: int = 2

    def check(self) -> None:
        """The election loop's own checks call sys.exit; refuse bad values with a clear message first."""
        if self.retry_period < 1:
            raise ValueError("--retry-period must be at least 1 second")
        if self.renew_deadline <= 1.2 * self.retry_period:
            raise ValueError("--renew-deadline must be more than 1.2 x --retry-period")
        if self.lease_duration <= self.renew_deadline:
            raise ValueError("--lease-duration must be more than --renew-deadline")


def default_identity() -> str:
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


class Leadership:
    """Runs the election in a daemon thread; calls back when this replica starts and stops leading."""

    def __init__(
        self,
        settings: LeaseSettings,
        identity: str,
        on_started: Callable[[], None],
        on_stopped: Callable[[], None],
    ) -> None:
        settings.check()
        self.settings = settings
        self.identity = identity
        self._on_started = on_started
        self._on_stopped = on_stopped
        self.leading = threading.Event()
        logging.getLogger("leaderelection").setLevel(logging.WARNING)  # it logs every retry at INFO

    def start(self) -> None:
        threading.Thread(target=self._run, name="leader-election", daemon=True).start()

    def _started(self) -> None:
        log.info("%s holds lease %s/%s", self.identity, self.settings.namespace, self.settings.name)
        self.leading.set()
        self._on_started()

    def _stopped(self) -> None:
        log.error("%s lost lease %s/%s", self.identity, self.settings.namespace, self.settings.name)
        self.leading.clear()
        self._on_stopped()

    def _run(self) -> None:
        s = self.settings
        log.info("%s waiting for lease %s/%s", self.identity, s.namespace, s.name)
        try:
            config = electionconfig.Config(  # type: ignore[no-untyped-call]
                LeaseLock(s.name, s.namespace, self.identity),  # type: ignore[no-untyped-call]
                lease_duration=s.lease_duration,
                renew_deadline=s.renew_deadline,
                retry_period=s.retry_period,
                onstarted_leading=self._started,
                onstopped_leading=self._stopped,
            )
            leaderelection.LeaderElection(config).run()  # type: ignore[no-untyped-call]
        except Exception:
            log.exception("leader election failed")
            self._stopped()
