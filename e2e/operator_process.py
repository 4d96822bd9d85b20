"""Runs `wasminfer-operator` out of cluster as a subprocess of the tests, against any kubeconfig.

The kubeconfig is a parameter, so the same launcher runs the operator as the cluster administrator
or as a ServiceAccount (a kubeconfig holding that account's token, e.g. from `kubectl create
token`). The liveness endpoint doubles as the test's view into the operator: its probe reports
whether this replica holds the Lease and how much work is queued.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class OperatorProcess:
    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        *,
        namespaces: Sequence[str] = (),
        config: Path | None = None,
        lease_name: str = "wasminfer-operator",
        lease_namespace: str = "default",
        lease_duration: int = 4,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.port = free_port()
        self.args = [
            sys.executable,
            "-m",
            "wasminfer_operator.main",
            "--kubeconfig",
            str(kubeconfig),
            "--liveness",
            f"http://127.0.0.1:{self.port}/healthz",
            "--lease-name",
            lease_name,
            "--lease-namespace",
            lease_namespace,
            "--lease-duration",
            str(lease_duration),
            "--renew-deadline",
            str(max(lease_duration - 1, 2)),
            "--retry-period",
            "1",
            *(a for ns in namespaces for a in ("--namespace", ns)),
            *(("--config", str(config)) if config else ()),
            *extra_args,
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("KUBERNETES_SERVICE_HOST", "WASMINFER_OPERATOR_CONFIG")}
        env["KUBECONFIG"] = str(self.kubeconfig)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def health(self) -> dict[str, Any] | None:
        """The liveness endpoint's report, or None while it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as resp:
                data: dict[str, Any] = json.loads(resp.read())
                return data
        except OSError:
            return None

    def leading(self) -> bool:
        report = self.health() or {}
        return bool(report.get("reconciler", {}).get("leading"))

    def wait_live(self, timeout: float = 60.0) -> None:
        self._wait(lambda: self.health() is not None, timeout, "the liveness endpoint to answer")

    def wait_leading(self, timeout: float = 60.0) -> None:
        self._wait(self.leading, timeout, "the operator to hold the Lease")

    def _wait(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if not self.alive():
                raise AssertionError(f"the operator exited ({self.proc.returncode if self.proc else '?'}) while waiting for {what}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}:\n{self.tail()}")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies or the pod is OOM-killed."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait, as when the pod is deleted; returns the exit code."""
        if self.proc is None:
            return None
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def peak_rss_kib(self) -> int:
        """Peak resident memory so far (VmHWM), in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM in /proc status")

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
