"""The status writer: condition changes go out at once, details alone wait for the settle time."""

from __future__ import annotations

from typing import Any

from wasminfer_operator.controllers.shared import DETAIL_SETTLE_SECONDS, StatusWriter
from wasminfer_operator.observe import object_view
from wasminfer_operator.status import Transition, now_utc


class Patches:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def patch_status(self, plural: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.sent.append(patch)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def status(ready: str, ready_replicas: int, message: str = "", generation: int = 1) -> dict[str, Any]:
    cond = {"type": "Ready", "status": ready, "reason": "Available" if ready == "True" else "RollingOut",
            "message": message, "observedGeneration": generation, "lastTransitionTime": "2030-01-01T00:00:00Z"}  # fmt: skip
    return {"observedGeneration": generation, "readyReplicas": ready_replicas, "conditions": [cond]}


async def test_details_wait_for_the_settle_time_and_condition_changes_do_not() -> None:
    kube, clock, events = Patches(), Clock(), []
    writer = StatusWriter(kube, now_utc, post_event=lambda *a: events.append(a[2]), monotonic=clock)  # type: ignore[arg-type]
    view = object_view({"apiVersion": "wasminfer.dev/v1alpha1", "kind": "WasmWorker", "spec": {},
                        "metadata": {"namespace": "ns", "name": "w", "uid": "u", "generation": 1, "resourceVersion": "1"}})  # fmt: skip
    settle = DETAIL_SETTLE_SECONDS["wasmworkers"]

    assert await writer.write(view, "wasmworkers", status("False", 0, "0 of 3 ready"), []) is None
    assert len(kube.sent) == 1, "the first status goes out at once"

    clock.t += 1
    wait = await writer.write(view, "wasmworkers", status("False", 1, "1 of 3 ready"), [])
    assert wait == settle - 1 and len(kube.sent) == 1, "a count and a message alone wait"

    clock.t += 1
    ready = Transition("Ready", "True", "Available", "3 of 3 ready", False)
    assert await writer.write(view, "wasmworkers", status("True", 3, "3 of 3 ready"), [ready]) is None
    assert len(kube.sent) == 2 and kube.sent[-1]["readyReplicas"] == 3, "a condition change goes out at once, with the details"
    assert events == ["Available"]

    clock.t += settle + 0.1
    assert await writer.write(view, "wasmworkers", status("True", 2, "2 of 3 ready"), []) is None
    assert len(kube.sent) == 3, "details go out once the settle time since the last write has passed"

    clock.t += 0.1
    assert await writer.write(view, "wasmworkers", status("True", 2, "2 of 3 ready", generation=2), []) is None
    assert len(kube.sent) == 4, "a new generation goes out at once"
    assert await writer.write(view, "wasmworkers", status("True", 2, "2 of 3 ready", generation=2), []) is None
    assert len(kube.sent) == 4, "an unchanged status is not written"


async def test_after_a_restart_the_first_write_is_not_held_back() -> None:
    """After a restart the process has written nothing yet: details that changed meanwhile are
    written at once, not held back."""
    kube, clock = Patches(), Clock()
    writer = StatusWriter(kube, now_utc, post_event=lambda *a: None, monotonic=clock)  # type: ignore[arg-type]
    body = {"apiVersion": "wasminfer.dev/v1alpha1", "kind": "WasmWorker", "spec": {}, "status": status("False", 0, "0 of 3 ready"),
            "metadata": {"namespace": "ns", "name": "w", "uid": "u", "generation": 1, "resourceVersion": "1"}}  # fmt: skip
    view = object_view(body)
    assert await writer.write(view, "wasmworkers", status("False", 1, "1 of 3 ready"), []) is None
    assert len(kube.sent) == 1, "nothing written by this process yet: the details go out"
