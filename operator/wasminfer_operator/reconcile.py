"""The reconcile loop: worker and model keys from one work queue, processed while this replica leads.

Level-triggered: any event about a worker, its models, its children or its pods just queues the
key it concerns, and the queue coalesces bursts. A reconcile reads the current state of everything
it needs from the watch caches (kopf indexes, the child informers) and is handed to the controller
of its kind (`controllers.model`, `controllers.worker`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from wasminfer_operator.controllers.model import ModelController
from wasminfer_operator.controllers.pool import PoolController
from wasminfer_operator.controllers.shared import (
    MODEL,
    POOL,
    RELEASE,
    WORKER,
    EventPoster,
    Indexes,
    Key,
    NsName,
    SpecCache,
    StatusWriter,
    all_of,
)
from wasminfer_operator.controllers.worker import WorkerController
from wasminfer_operator.handmade.workqueue import WorkQueue
from wasminfer_operator.kube import Kube, KubeError
from wasminfer_operator.observe import ChildView, ObjectView, PodView
from wasminfer_operator.profiles import OperatorConfig
from wasminfer_operator.status import READY, now_utc

log = logging.getLogger("wasminfer.operator")

MAX_BACKOFF_SECONDS = 60.0


class Reconciler:
    def __init__(
        self,
        cfg: OperatorConfig,
        kube: Kube,
        indexes: Indexes,
        *,
        post_event: EventPoster,
        concurrency: int = 16,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        self.cfg = cfg
        self.ix = indexes
        self.concurrency = concurrency
        self.queue: WorkQueue[Key] = WorkQueue()
        self.leading = asyncio.Event()
        self.cache_filled: list[asyncio.Event] = []  # the children's informers; act once all are filled
        # kopf delivers no WasmWorker or InferenceModel event before every index of both is filled,
        # so the first one opens this gate. Until then a worker would find its models missing and
        # report ModelNotFound; its reconcile waits instead.
        self.indexes_filled = asyncio.Event()
        self.writer = StatusWriter(kube, clock, post_event)
        specs = SpecCache()
        self.models = ModelController(cfg, kube, indexes, specs, self.writer, self.queue)
        self.workers = WorkerController(cfg, kube, indexes, specs, self.writer, self.queue, self.models)
        self.pools = PoolController(cfg, kube, indexes, specs, self.writer, self.queue, self.models)
        self._model_pools: dict[NsName, str] = {}  # the pool each model named last
        self._tasks: list[asyncio.Task[None]] = []
        self._seen: dict[Key, tuple[Any, ...]] = {}  # what the last event about a key looked like
        self._worker_models: dict[NsName, frozenset[str]] = {}  # the models each worker named last
        self._backoff: dict[Key, float] = {}
        self.reconciles = 0

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        for i in range(self.concurrency):
            self._tasks.append(asyncio.create_task(self._loop(), name=f"reconcile-{i}"))
        self._tasks.append(asyncio.create_task(self._resync_loop(), name="resync"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.queue.close()

    def become_leader(self) -> None:
        if not self.leading.is_set():
            log.info("leading: reconciling every WasmWorker and InferenceModel")
            self.leading.set()
            self.resync()

    def resync(self) -> None:
        for ns_name in list(self.ix.models):
            self.queue.add((MODEL, *ns_name))
        for ns_name in list(self.ix.workers):
            self.queue.add((WORKER, *ns_name))
        for ns_name in list(self.ix.pools):
            self.queue.add((POOL, *ns_name))

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.resync_seconds)
            if self.leading.is_set():
                self.resync()

    async def _loop(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self.leading.wait()
                for cache in [*self.cache_filled, self.indexes_filled]:
                    await cache.wait()
                await self._reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                delay = min(self._backoff.get(key, 0.5) * 2, MAX_BACKOFF_SECONDS)
                self._backoff[key] = delay
                if isinstance(err, KubeError):
                    log.warning("%s %s/%s: %s; retrying in %.0fs", key[0], key[1], key[2], err, delay)
                else:
                    log.exception("%s %s/%s: reconcile failed; retrying in %.0fs", key[0], key[1], key[2], delay)
                self.queue.add_after(key, delay)
            else:
                self._backoff.pop(key, None)
            finally:
                self.queue.done(key)

    async def _reconcile(self, key: Key) -> None:
        self.reconciles += 1
        kind, ns, name = key
        if kind == WORKER:
            await self.workers.reconcile(ns, name)
        elif kind == RELEASE:
            await self.models.release(ns, name)
        elif kind == POOL:
            await self.pools.reconcile(ns, name)
        else:
            await self.models.reconcile(ns, name)

    # --- what events mean --------------------------------------------------------------------------

    def worker_event(self, event_type: str | None, view: ObjectView) -> None:
        self.indexes_filled.set()
        key = (WORKER, view.namespace, view.name)
        models = frozenset(view.spec.get("models") or [])
        before = self._worker_models.get(view.key, frozenset())
        if event_type == "DELETED":
            self._forget(key, view.uid)
            self._worker_models.pop(view.key, None)
            self.workers.forget(view.uid)
            for m in before | models:
                self.queue.add((MODEL, view.namespace, m))
            return
        if view.deleting:  # a worker on its way out no longer holds its models
            for m in models:
                self.queue.add((MODEL, view.namespace, m))
        signature = (view.uid, view.generation)
        if self._seen.get(key) != signature or not self.writer.is_current(view):
            self._seen[key] = signature
            self.queue.add(key)
        if models != before or view.key not in self._worker_models:
            self._worker_models[view.key] = models
            for m in before | models:  # each model lists the workers using it
                self.queue.add((MODEL, view.namespace, m))

    def model_event(self, event_type: str | None, view: ObjectView) -> None:
        self.indexes_filled.set()
        key = (MODEL, view.namespace, view.name)
        pool = str(view.spec.get("pool") or "")
        before = self._model_pools.get(view.key, "")
        if event_type == "DELETED":
            self._forget(key, view.uid)
            self.models.forget(view.uid)
            self._wake_users(view.namespace, view.name)
            self._model_pools.pop(view.key, None)
            for p in {pool, before} - {""}:
                self.queue.add((POOL, view.namespace, p))
            return
        if pool != before or (pool and self._seen.get(key, (None,))[:2] != (view.uid, view.generation)):
            for p in {pool, before} - {""}:  # a pool places the models that name it
                self.queue.add((POOL, view.namespace, p))
            self._model_pools[view.key] = pool
        ready: Mapping[str, Any] = next((c for c in view.status.get("conditions") or [] if c.get("type") == READY), {})
        signature = (view.uid, view.generation, view.deleting, ready.get("status"), ready.get("reason"), ready.get("observedGeneration"))
        previous = self._seen.get(key)
        if previous != signature or not self.writer.is_current(view):
            self.queue.add(key)
        if previous != signature:
            self._seen[key] = signature
            self._wake_users(view.namespace, view.name)

    def pool_event(self, event_type: str | None, view: ObjectView) -> None:
        self.indexes_filled.set()
        key = (POOL, view.namespace, view.name)
        if event_type == "DELETED":
            self._forget(key, view.uid)
            self.pools.forget(view.uid)
            self.models.forget_pool(view.uid)
            self.pools.wake_members(view.namespace, view.name, workers=True)
            return
        placement = (view.uid, view.generation, tuple(view.status.get("models") or []), view.status.get("profile"))
        previous = self._seen.get(key)
        if previous != placement or not self.writer.is_current(view):
            self.queue.add(key)
        if previous != placement:
            self._seen[key] = placement
            # Its models' replicas follow from its spec and the models it placed: they and the
            # workers calling them look again.
            self.pools.wake_members(view.namespace, view.name, workers=True)

    def namespace_terminating(self, namespace: str, gone: bool = False) -> None:
        if gone:
            self.models.terminating.discard(namespace)
            return
        self.models.terminating.add(namespace)
        for ns, name in list(self.ix.models):
            if ns == namespace:
                self.queue.add((RELEASE, ns, name))

    def child_event(self, event_type: str, namespace: str, view: ChildView) -> None:
        if event_type == "DELETED":
            owner = self.workers if view.worker else self.models if view.server else self.pools
            owner.applier.child_deleted(view.kind, namespace, view.name)
        self._owner_changed(namespace, view)

    def pod_event(self, event_type: str, namespace: str, view: PodView) -> None:
        self._owner_changed(namespace, view)

    def _owner_changed(self, namespace: str, view: ChildView | PodView) -> None:
        if view.worker:
            self.queue.add((WORKER, namespace, view.worker))
        elif view.server:
            self.queue.add((MODEL, namespace, view.server))
        elif view.pool:
            self.queue.add((POOL, namespace, view.pool))
            self.pools.wake_members(namespace, view.pool, workers=False)  # whether their replicas hold them

    def _wake_users(self, namespace: str, model: str) -> None:
        for worker in all_of(self.ix.model_users, (namespace, model)):
            self.queue.add((WORKER, namespace, worker))

    def _forget(self, key: Key, uid: str) -> None:
        self.queue.forget(key)
        self._seen.pop(key, None)
        self.writer.forget(uid)
        self._backoff.pop(key, None)
