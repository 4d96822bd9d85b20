"""What end-to-end tests use to talk to the test control plane: the real kubectl (and helm) from the
pinned build, YAML in, JSON out, and polling helpers that fail with a message saying what was awaited."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cluster import controlplane
from cluster.state import ClusterState

T = TypeVar("T")


class KubectlError(AssertionError):
    """A kubectl/helm command failed; carries its output so a test can assert on the message."""

    def __init__(self, command: list[str], result: subprocess.CompletedProcess[str], note: str = "") -> None:
        self.result = result
        self.stderr = result.stderr
        super().__init__(
            f"`{' '.join(command)}` exited with {result.returncode}:\n{result.stderr.strip()}{note}"
        )


@dataclass
class Cluster:
    state: ClusterState

    @classmethod
    def from_state(cls, state: ClusterState) -> Cluster:
        return cls(state)

    @property
    def name(self) -> str:
        return self.state.name

    @property
    def kubeconfig(self) -> Path:
        return Path(self.state.kubeconfig)

    @property
    def bin_dir(self) -> Path:
        return Path(self.state.bin_dir)

    @property
    def log_dir(self) -> Path:
        return Path(self.state.log_dir)

    @property
    def server(self) -> str:
        return self.state.server

    @property
    def env(self) -> dict[str, str]:
        """The environment for a client process: KUBECONFIG, and kubectl/helm first on PATH."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def check_health(self) -> None:
        """Raises ClusterError naming any control-plane component that died, and its log file."""
        controlplane.check_alive(self.state)

    def _run(
        self, tool: str, args: tuple[str, ...], input: str | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / tool), *args]
        result = subprocess.run(
            command, input=input, capture_output=True, text=True, env=self.env, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            dead = self.state.dead_components()
            note = "".join(f"\n(control plane: {p.component} died, log {p.log})" for p in dead)
            raise KubectlError([tool, *args], result, note)
        return result

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        return self._run("kubectl", args, input, check, timeout)

    def helm(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 300.0
    ) -> subprocess.CompletedProcess[str]:
        return self._run("helm", args, input, check, timeout)

    def apply(
        self, yaml_text: str, namespace: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`kubectl apply` of one or more YAML documents (server-side validation included)."""
        ns = ("-n", namespace) if namespace else ()
        return self.kubectl("apply", *ns, "-f", "-", input=yaml_text, check=check)

    def create(
        self, yaml_text: str, namespace: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        ns = ("-n", namespace) if namespace else ()
        return self.kubectl("create", *ns, "-f", "-", input=yaml_text, check=check)

    def get_json(self, *args: str, namespace: str | None = None) -> dict[str, Any]:
        """`kubectl get ARGS -o json`, parsed: one object, or a List with `items`."""
        ns = ("-n", namespace) if namespace else ()
        out = self.kubectl("get", *ns, *args, "-o", "json").stdout
        parsed: dict[str, Any] = json.loads(out)
        return parsed

    def exists(self, *args: str, namespace: str | None = None) -> bool:
        ns = ("-n", namespace) if namespace else ()
        result = self.kubectl("get", *ns, *args, "--ignore-not-found", "-o", "name", check=False)
        if result.returncode != 0:
            raise KubectlError(["kubectl", "get", *ns, *args], result)
        return bool(result.stdout.strip())

    def wait(
        self, resource: str, condition: str, timeout: float = 60.0, namespace: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`kubectl wait`. `condition` is a condition type ("Ready", "Available"), or anything
        `--for` takes ("delete", "condition=Ready=false", "jsonpath={.status.phase}=Running")."""
        if "=" not in condition and condition != "delete":
            condition = f"condition={condition}"
        ns = ("-n", namespace) if namespace else ()
        return self.kubectl(
            "wait", *ns, resource, f"--for={condition}", f"--timeout={timeout:.0f}s", timeout=timeout + 30
        )

    def wait_until(
        self, predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.5
    ) -> T:
        """Polls `predicate` until it returns something truthy, and returns that. On timeout fails
        with `what` and the last value seen (or the last error raised by the predicate)."""
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                value = predicate()
                if value:
                    return value
                last = value
            except KubectlError as error:
                last = error
            if time.monotonic() >= deadline:
                self.check_health()
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")
            time.sleep(interval)

    def new_namespace(self, prefix: str = "test") -> str:
        """A fresh namespace, returned once its `default` ServiceAccount exists (pods need it)."""
        slug = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")[:40].strip("-") or "test"
        name = f"{slug}-{uuid.uuid4().hex[:6]}"
        self.kubectl("create", "namespace", name)
        self.wait_until(
            lambda: self.exists("serviceaccount", "default", namespace=name),
            timeout=60,
            what=f"the default ServiceAccount of namespace {name}",
            interval=0.2,
        )
        return name

    def delete_namespace(self, name: str, wait: bool = False) -> None:
        self.kubectl("delete", "namespace", name, "--ignore-not-found", f"--wait={str(wait).lower()}")

    def add_nodes(self, path: Path) -> list[str]:
        """Creates the kwok-managed Nodes defined in a YAML file (or folder) and waits until Ready."""
        return controlplane.add_nodes(self.state, path)

    def nodes(self, selector: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        args = ["nodes"]
        if selector:
            args += ["-l", ",".join(f"{k}={v}" for k, v in selector.items())]
        items: list[dict[str, Any]] = self.get_json(*args)["items"]
        return items
