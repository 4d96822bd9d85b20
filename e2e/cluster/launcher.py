"""Starting the components of one cluster: each with retries when its port was taken meanwhile,
waiting for its health endpoint while checking that the components started before still run."""

from __future__ import annotations

import logging
import ssl
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from . import processes, state
from .state import ClusterState, Process

log = logging.getLogger("wasminfer.e2e.cluster")

START_ATTEMPTS = 3

PortPicker = Callable[[], int]


class ClusterError(RuntimeError):
    """Bring-up or a component failed; the message names the component and its log file."""


class Launcher:
    """Starts the components of one cluster, each with retries when its port was taken meanwhile,
    and waits for each to be healthy while checking that those started before are still alive."""

    def __init__(
        self,
        cluster: ClusterState,
        *,
        die_with_parent: bool,
        pick_port: PortPicker = processes.free_port,
        extra_args: Mapping[str, Sequence[str]] | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.cluster = cluster
        self.die_with_parent = die_with_parent
        self.pick_port = pick_port
        self.extra_args = dict(extra_args or {})
        self.timeout = timeout

    def log_path(self, component: str) -> Path:
        return Path(self.cluster.log_dir) / f"{component}.log"

    def start(
        self,
        component: str,
        make_argv: Callable[[], tuple[list[str], str, list[int]]],
        *,
        context: ssl.SSLContext | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Process:
        """`make_argv` picks fresh ports on each call and returns (argv, health URL, ports)."""
        log_path = self.log_path(component)
        for attempt in range(1, START_ATTEMPTS + 1):
            argv, health_url, ports = make_argv()
            argv += self.extra_args.get(component, [])
            log.info("starting %s (attempt %d, ports %s), log %s", component, attempt, ports, log_path)
            child = processes.start(
                argv, log_path, env=env, die_with_parent=self.die_with_parent
            )
            record = Process(
                component=component, pid=child.pid, exe=argv[0], log=str(log_path), ports=ports
            )
            self.cluster.processes.append(record)
            state.save(self.cluster)
            if self._wait_healthy(record, child, health_url, context):
                log.info("%s is healthy at %s", component, health_url)
                return record
            self.cluster.processes.remove(record)
            state.save(self.cluster)
            if processes.mentions_port_in_use(log_path) and attempt < START_ATTEMPTS:
                log.warning("%s: port taken meanwhile (%s); retrying with new ports", component, ports)
                continue
            raise ClusterError(
                f"{component} exited with code {child.returncode} while starting (attempt {attempt}); "
                f"log: {log_path}\n{processes.tail(log_path)}"
            )
        raise AssertionError("unreachable")

    def _wait_healthy(
        self,
        record: Process,
        child: subprocess.Popen[bytes],
        url: str,
        context: ssl.SSLContext | None,
    ) -> bool:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if child.poll() is not None:
                return False
            check_alive(self.cluster, but=record)
            if processes.http_ok(url, context):
                return True
            time.sleep(0.25)
        raise ClusterError(
            f"{record.component} did not answer {url} within {self.timeout:.0f} s; "
            f"log: {record.log}\n{processes.tail(Path(record.log))}"
        )

    def check_alive(self) -> None:
        check_alive(self.cluster)


def check_alive(cluster: ClusterState, but: Process | None = None) -> None:
    """Raises ClusterError naming the first component that is no longer running, and its log."""
    for dead in cluster.dead_components():
        if dead is but:
            continue
        raise ClusterError(
            f"{dead.component} (pid {dead.pid}) of cluster {cluster.name!r} is no longer running; "
            f"log: {dead.log}\n{processes.tail(Path(dead.log))}"
        )


