"""The worker controller applies each child once per render, and trusts an apply the watch has not
shown yet only for a grace period: a child deleted as it was applied (the garbage collector taking
a re-created worker's predecessor's child) is applied again, not left missing."""

from __future__ import annotations

from typing import Any

import pytest
from opbuilders import worker_spec

from wasminfer_operator.controllers import shared
from wasminfer_operator.controllers.model import ModelController
from wasminfer_operator.controllers.shared import Indexes, SpecCache, StatusWriter
from wasminfer_operator.controllers.worker import WorkerController
from wasminfer_operator.handmade.informer import ByWorker
from wasminfer_operator.handmade.workqueue import WorkQueue
from wasminfer_operator.observe import object_view
from wasminfer_operator.profiles import load_operator_config
from wasminfer_operator.status import now_utc


class RecordingKube:
    """What the controller asks of the API: applies and status patches, all succeeding."""

    def __init__(self) -> None:
        self.applied: list[str] = []

    async def apply(self, obj: dict[str, Any], force: bool = False) -> None:
        self.applied.append(obj["kind"])

    async def patch_status(self, plural: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
        pass


@pytest.fixture
def controller() -> WorkerController:
    view = object_view({
        "apiVersion": "wasminfer.dev/v1alpha1", "kind": "WasmWorker", "spec": worker_spec(),
        "metadata": {"namespace": "ns", "name": "w", "uid": "uid-w", "generation": 1, "resourceVersion": "1"},
    })  # fmt: skip
    ix = Indexes(workers={view.key: [view]}, models={}, model_users={},
                 deployments=ByWorker(), services=ByWorker(), config_maps=ByWorker(), pods=ByWorker())  # fmt: skip
    cfg, kube, specs = load_operator_config(env={}), RecordingKube(), SpecCache()
    writer = StatusWriter(kube, now_utc, post_event=lambda *_: None)  # type: ignore[arg-type]
    queue: WorkQueue[tuple[str, str, str]] = WorkQueue()
    models = ModelController(cfg, kube, ix, specs, writer, queue)  # type: ignore[arg-type]
    return WorkerController(cfg, kube, ix, specs, writer, queue, models)  # type: ignore[arg-type]


async def test_an_apply_the_watch_has_not_shown_is_trusted_only_for_the_grace(controller: WorkerController) -> None:
    kube = controller.kube
    assert isinstance(kube, RecordingKube)
    await controller.reconcile("ns", "w")
    assert kube.applied == ["ConfigMap", "Service", "Deployment"]
    # The watch has shown none of them yet (or they were deleted meanwhile): not applied twice at once,
    await controller.reconcile("ns", "w")
    assert kube.applied == ["ConfigMap", "Service", "Deployment"]
    assert controller.queue.delayed == 1, "looked at again once the grace is over"
    # but once the grace is over, a child still missing is applied again.
    grace = shared.APPLIED_GRACE_SECONDS + 1
    controller.applier._applied = {k: (applied, at - grace) for k, (applied, at) in controller.applier._applied.items()}
    await controller.reconcile("ns", "w")
    assert kube.applied == ["ConfigMap", "Service", "Deployment"] * 2
    controller.queue.close()
