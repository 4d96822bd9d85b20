"""Thin kopf handlers: watch caches (indexes) of the custom resources and events that queue keys.

Nothing here decides anything. The handlers never write to the objects they watch: no kopf
finalizers or annotations, no spec (Argo CD would see drift). The reconciler, on the leader only,
writes status and holds one finalizer of its own on InferenceModels (`api.MODEL_FINALIZER`: a model
stays while workers use it). The children (Deployments, Services, ConfigMaps, Pods) are watched by
the informers started here.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from wasminfer_operator import api
from wasminfer_operator.controllers.shared import Indexes
from wasminfer_operator.handmade.informer import ChildCaches
from wasminfer_operator.kube import Kube
from wasminfer_operator.names import FIELD_MANAGER
from wasminfer_operator.observe import ObjectView, object_view
from wasminfer_operator.profiles import OperatorConfig
from wasminfer_operator.reconcile import Reconciler

WW = (api.GROUP, api.VERSION, "wasmworkers")
IM = (api.GROUP, api.VERSION, "inferencemodels")
MP = (api.GROUP, api.VERSION, "modelpools")


@dataclass
class Operator:
    """What the handlers share: configuration, API access and, once started, the reconciler."""

    cfg: OperatorConfig
    kube: Kube
    concurrency: int = 16
    namespaces: list[str] = field(default_factory=list)  # empty: all namespaces
    reconciler: Reconciler | None = None
    caches: ChildCaches = field(default_factory=ChildCaches)
    on_ready: list[Callable[[Reconciler], None]] = field(default_factory=list)


def kopf_event(obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
    kopf.event(kopf.Body(cast(kopf.RawBody, obj)), type=type_, reason=reason, message=message)


class KopfEvents:
    """Posts the reconciler's events with `kopf.event`. That finds kopf's event queue in context
    variables kopf sets only in its per-object tasks, and the reconciler runs in tasks of its own
    (there kopf.event raises LookupError): events are posted in a context captured in a watch
    handler. The first WasmWorker or InferenceModel event, which opens the reconciler, captures it."""

    def __init__(self) -> None:
        self.context: contextvars.Context | None = None

    def capture(self) -> None:
        if self.context is None:
            self.context = contextvars.copy_context()

    def __call__(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        if self.context is None:
            kopf_event(obj, type_, reason, message)
        else:
            self.context.run(kopf_event, obj, type_, reason, message)


def register(registry: kopf.OperatorRegistry, op: Operator) -> None:
    """Attach every handler to `registry`."""
    events = KopfEvents()

    def rec() -> Reconciler:
        assert op.reconciler is not None, "reconciler not started"
        return op.reconciler

    @kopf.on.startup(registry=registry, id="configure")
    async def configure(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
        # The operator's events (condition transitions) go through kopf's poster (`kopf.event`).
        settings.posting.reporting_component = FIELD_MANAGER
        settings.posting.reporting_instance = op.kube.instance
        settings.posting.event_name_prefix = f"{FIELD_MANAGER}-"
        settings.posting.level = logging.WARNING  # of kopf's own handler logs, only warnings become events
        settings.watching.chunk_size = 100
        settings.queueing.idle_timeout = 1.0  # a task per object lingers this long after its events
        caches = op.caches
        indexes = Indexes(
            workers=kwargs["wasmworkers_by_name"],
            models=kwargs["inferencemodels_by_name"],
            model_users=kwargs["workers_by_model"],
            deployments=caches.deployments,
            services=caches.services,
            config_maps=caches.config_maps,
            pods=caches.pods,
            pools=kwargs["modelpools_by_name"],
            pool_members=kwargs["models_by_pool"],
            stateful_sets=caches.stateful_sets,
        )
        r = op.reconciler = Reconciler(op.cfg, op.kube, indexes, concurrency=op.concurrency, post_event=events)
        r.cache_filled = caches.start(op.kube.api_client, op.namespaces, asyncio.get_running_loop(), r.child_event, r.pod_event)
        r.start()
        for callback in op.on_ready:
            callback(op.reconciler)

    @kopf.on.login(registry=registry, id="login")
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # In-cluster service account, else $KUBECONFIG (set from --kubeconfig), via the official client.
        return kopf.login_via_client(**kwargs)

    @kopf.on.cleanup(registry=registry, id="stop")
    async def stop(**_: Any) -> None:
        op.caches.stop()
        if op.reconciler is not None:
            await op.reconciler.stop()

    @kopf.on.probe(id="reconciler", registry=registry)
    def probe(**_: Any) -> dict[str, Any]:
        r = op.reconciler
        if r is None:
            return {"started": False}
        return {"started": True, "leading": r.leading.is_set(), "queued": len(r.queue), "reconciles": r.reconciles}

    # --- watch caches ---

    @kopf.index(*WW, registry=registry, id="wasmworkers_by_name")
    async def wasmworkers_by_name(body: kopf.Body, **_: Any) -> dict[tuple[str, str], ObjectView]:
        view = object_view(body)
        return {view.key: view}

    @kopf.index(*WW, registry=registry, id="workers_by_model")
    async def workers_by_model(body: kopf.Body, **_: Any) -> dict[tuple[str, str], str]:
        view = object_view(body)
        return {(view.namespace, str(m)): view.name for m in view.spec.get("models") or []}

    @kopf.index(*IM, registry=registry, id="inferencemodels_by_name")
    async def inferencemodels_by_name(body: kopf.Body, **_: Any) -> dict[tuple[str, str], ObjectView]:
        view = object_view(body)
        return {view.key: view}

    @kopf.index(*IM, registry=registry, id="models_by_pool")
    async def models_by_pool(body: kopf.Body, **_: Any) -> dict[tuple[str, str], str]:
        view = object_view(body)
        pool = view.spec.get("pool")
        return {(view.namespace, str(pool)): view.name} if pool else {}

    @kopf.index(*MP, registry=registry, id="modelpools_by_name")
    async def modelpools_by_name(body: kopf.Body, **_: Any) -> dict[tuple[str, str], ObjectView]:
        view = object_view(body)
        return {view.key: view}

    # --- events: queue the keys they concern ---

    @kopf.on.event(*WW, registry=registry, id="worker_changed")
    async def worker_changed(type: str | None, body: kopf.Body, **_: Any) -> None:
        events.capture()
        rec().worker_event(type, object_view(body))

    @kopf.on.event(*IM, registry=registry, id="model_changed")
    async def model_changed(type: str | None, body: kopf.Body, **_: Any) -> None:
        events.capture()
        rec().model_event(type, object_view(body))

    @kopf.on.event(*MP, registry=registry, id="pool_changed")
    async def pool_changed(type: str | None, body: kopf.Body, **_: Any) -> None:
        events.capture()
        rec().pool_event(type, object_view(body))

    if op.namespaces:
        # Watching namespaces by name or pattern, kopf stops watching a namespace once its deletion
        # starts, so the model events that would release the finalizers never come. A namespace on
        # its way out takes its workers along: its models are let go. (Cluster-wide, kopf keeps
        # watching and the namespace's models go as their workers do.)
        @kopf.on.event("", "v1", "namespaces", registry=registry, id="namespace_terminating", when=_terminating)
        async def namespace_terminating(type: str | None, body: kopf.Body, **_: Any) -> None:
            rec().namespace_terminating(str(body.get("metadata", {}).get("name", "")), gone=type == "DELETED")


def _terminating(body: kopf.Body, **_: Any) -> bool:
    return bool(body.get("metadata", {}).get("deletionTimestamp"))
