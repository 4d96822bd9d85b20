"""The reconcile loop: worker and model keys from one work queue, processed while this replica leads.

Level-triggered: a reconcile reads the current state of everything it needs from the watch caches
(kopf indexes), computes the desired children and status with the pure functions of `render`,
`placement` and `status`, and writes only what differs. Any event about a worker, its models, its
children or its pods just queues the worker's key; the queue coalesces bursts.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from wasminfer_operator.api import MODEL_FINALIZER, InferenceModelSpec, WasmWorkerSpec
from wasminfer_operator.handmade.workqueue import WorkQueue
from wasminfer_operator.kube import Kube, KubeError
from wasminfer_operator.moveback import MoveBackChecks
from wasminfer_operator.observe import ChildView, ObjectView, PodView
from wasminfer_operator.placement import decide
from wasminfer_operator.profiles import OperatorConfig
from wasminfer_operator.render import (
    RENDER_HASH,
    NamedModel,
    ObjectRef,
    Rendered,
    render_worker,
    selector_string,
    worker_url,
)
from wasminfer_operator.status import (
    READY,
    Cond,
    ModelObservation,
    ModelState,
    Transition,
    WorkerObservation,
    model_condition,
    model_status,
    now_utc,
    timestamp,
    worker_status,
)

log = logging.getLogger("wasminfer.operator")

WORKER = "worker"
MODEL = "model"
RELEASE = "release"  # a model of a namespace being deleted: drop its finalizer, from a fresh read
Key = tuple[str, str, str]  # (WORKER|MODEL, namespace, name)
NsName = tuple[str, str]
V = TypeVar("V")
M = TypeVar("M", bound=BaseModel)

NOT_READY_RECHECK_SECONDS = 10.0
IN_USE_RECHECK_SECONDS = 5.0  # a model's deletion waits for its users; worker events wake it sooner
MAX_BACKOFF_SECONDS = 60.0


@dataclass
class Indexes:
    """Live views of kopf's indexes, all keyed by (namespace, name)."""

    workers: Mapping[NsName, Iterable[ObjectView]]
    models: Mapping[NsName, Iterable[ObjectView]]
    model_users: Mapping[NsName, Iterable[str]]  # (namespace, model) -> names of workers naming it
    deployments: Mapping[NsName, Iterable[ChildView]]  # (namespace, worker) -> its children of a kind
    services: Mapping[NsName, Iterable[ChildView]]
    config_maps: Mapping[NsName, Iterable[ChildView]]
    pods: Mapping[NsName, Iterable[PodView]]


def _all(index: Mapping[NsName, Iterable[V]], key: NsName) -> list[V]:
    store = index.get(key)
    return list(store) if store else []


def _one(index: Mapping[NsName, Iterable[V]], key: NsName) -> V | None:
    values = _all(index, key)
    return values[0] if values else None


def spec_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        parts.append(f"spec.{loc}: {e['msg']}" if loc else f"spec: {e['msg']}")
    return "; ".join(parts)


class Reconciler:
    def __init__(
        self,
        cfg: OperatorConfig,
        kube: Kube,
        indexes: Indexes,
        *,
        concurrency: int = 16,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        self.cfg = cfg
        self.kube = kube
        self.ix = indexes
        self.clock = clock
        self.concurrency = concurrency
        self.queue: WorkQueue[Key] = WorkQueue()
        self.leading = asyncio.Event()
        self.cache_filled: list[asyncio.Event] = []  # the children's informers; act once all are filled
        # kopf delivers no WasmWorker or InferenceModel event before every index of both is filled,
        # so the first one opens this gate. Until then a worker would find its models missing and
        # report ModelNotFound; its reconcile waits instead.
        self.indexes_filled = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._event_gate = asyncio.Semaphore(4)
        self._written: dict[str, dict[str, Any]] = {}  # uid -> status this process wrote last
        self._seen: dict[Key, tuple[Any, ...]] = {}  # what the last event about a key looked like
        self._worker_models: dict[NsName, frozenset[str]] = {}
        self._applied: dict[tuple[str, str, str], str] = {}  # (kind, ns, name) -> render hash applied
        self._render_hashes: dict[tuple[Any, ...], dict[str, str]] = {}
        self._sources: dict[tuple[str, int], tuple[float, tuple[bool, str, str]]] = {}
        self._backoff: dict[Key, float] = {}
        self._parsed: dict[tuple[str, int], BaseModel | str] = {}  # (uid, generation) -> spec or error
        self._finalizers_sent: dict[str, str] = {}  # model uid -> resourceVersion its finalizers were patched at
        self._terminating: set[str] = set()  # namespaces being deleted: their models are not held
        self.move_backs = MoveBackChecks(cfg, kube)
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
            await self.reconcile_worker(ns, name)
        elif kind == RELEASE:
            await self.release_model(ns, name)
        else:
            await self.reconcile_model(ns, name)

    # --- what events mean --------------------------------------------------------------------------

    def worker_event(self, event_type: str | None, view: ObjectView) -> None:
        self.indexes_filled.set()
        key = (WORKER, view.namespace, view.name)
        models = frozenset(view.spec.get("models") or [])
        before = self._worker_models.get(view.key, frozenset())
        if event_type == "DELETED":
            self._forget(key, view.uid)
            self._worker_models.pop(view.key, None)
            self.move_backs.forget(view.uid)
            for m in before | models:
                self.queue.add((MODEL, view.namespace, m))
            return
        if view.deleting:  # a worker on its way out no longer holds its models
            for m in models:
                self.queue.add((MODEL, view.namespace, m))
        signature = (view.uid, view.generation)
        if self._seen.get(key) != signature or self._written.get(view.uid) != view.status:
            self._seen[key] = signature
            self.queue.add(key)
        if models != before or view.key not in self._worker_models:
            self._worker_models[view.key] = models
            for m in before | models:  # each model lists the workers using it
                self.queue.add((MODEL, view.namespace, m))

    def model_event(self, event_type: str | None, view: ObjectView) -> None:
        self.indexes_filled.set()
        key = (MODEL, view.namespace, view.name)
        if event_type == "DELETED":
            self._forget(key, view.uid)
            self._finalizers_sent.pop(view.uid, None)
            self._wake_users(view.namespace, view.name)
            return
        ready: Mapping[str, Any] = next((c for c in view.status.get("conditions") or [] if c.get("type") == READY), {})
        signature = (view.uid, view.generation, view.deleting, ready.get("status"), ready.get("reason"), ready.get("observedGeneration"))
        previous = self._seen.get(key)
        if previous != signature or self._written.get(view.uid) != view.status:
            self.queue.add(key)
        if previous != signature:
            self._seen[key] = signature
            self._wake_users(view.namespace, view.name)

    def namespace_terminating(self, namespace: str, gone: bool = False) -> None:
        if gone:
            self._terminating.discard(namespace)
            return
        self._terminating.add(namespace)
        for ns, name in list(self.ix.models):
            if ns == namespace:
                self.queue.add((RELEASE, ns, name))

    def child_event(self, event_type: str, namespace: str, view: ChildView) -> None:
        if event_type == "DELETED":
            self._applied.pop((view.kind, namespace, view.name), None)
        if view.worker:
            self.queue.add((WORKER, namespace, view.worker))

    def pod_event(self, event_type: str, namespace: str, view: PodView) -> None:
        if view.worker:
            self.queue.add((WORKER, namespace, view.worker))

    def _wake_users(self, namespace: str, model: str) -> None:
        for worker in _all(self.ix.model_users, (namespace, model)):
            self.queue.add((WORKER, namespace, worker))

    def _forget(self, key: Key, uid: str) -> None:
        self.queue.forget(key)
        self._seen.pop(key, None)
        self._written.pop(uid, None)
        self._backoff.pop(key, None)

    def _parse(self, view: ObjectView, model: type[M]) -> M | str:
        """The parsed spec (or the error naming the field), once per generation."""
        key = (view.uid, view.generation)
        hit = self._parsed.get(key)
        if hit is None:
            try:
                hit = model.model_validate(view.spec)
            except ValidationError as err:
                hit = spec_error(err)
            if len(self._parsed) > 50000:
                self._parsed.clear()
            self._parsed[key] = hit
        if isinstance(hit, str):
            return hit
        assert isinstance(hit, model)
        return hit

    # --- InferenceModel ----------------------------------------------------------------------------

    async def _source_state(self, view: ObjectView, spec: InferenceModelSpec) -> tuple[bool, str, str]:
        """Can the pods get the files? Checked against the API for ConfigMap and claim sources."""
        src = spec.source
        if src.https is not None:
            return (True, "SourceDeclared", f"{len(src.https.files)} https file(s), each verified against its sha256 when pods fetch it")
        cache_key = (view.uid, view.generation)
        cached = self._sources.get(cache_key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        try:
            result = await self._check_source(view.namespace, spec)
        except KubeError as err:
            result = (False, "SourceCheckFailed", f"cannot read the source: {err.message}")
        ttl = self.cfg.source_recheck_seconds if result[0] else NOT_READY_RECHECK_SECONDS / 2
        self._sources[cache_key] = (time.monotonic() + ttl, result)
        return result

    async def _check_source(self, namespace: str, spec: InferenceModelSpec) -> tuple[bool, str, str]:
        src = spec.source
        if src.config_map is not None:
            cm_name = src.config_map.name
            cm = await self.kube.get_config_map(namespace, cm_name)
            if cm is None:
                return (False, "SourceNotFound", f"ConfigMap {cm_name} not found")
            data, binary = cm.get("data") or {}, cm.get("binaryData") or {}
            missing = [f.key for f in src.config_map.files if f.key not in data and f.key not in binary]
            if missing:
                return (False, "KeyNotFound", f"ConfigMap {cm_name} has no key(s) {', '.join(missing)}")
            for f in src.config_map.files:
                if f.sha256 is None:
                    continue
                raw = data[f.key].encode() if f.key in data else base64.b64decode(binary[f.key])
                digest = hashlib.sha256(raw).hexdigest()
                if digest != f.sha256:
                    return (False, "ChecksumMismatch", f"ConfigMap {cm_name} key {f.key}: sha256 is {digest}, expected {f.sha256}")
            return (True, "SourceResolved", f"ConfigMap {cm_name} holds {', '.join(f.key for f in src.config_map.files)}")
        assert src.pvc is not None
        claim = await self.kube.get_pvc(namespace, src.pvc.claim_name)
        if claim is None:
            return (False, "SourceNotFound", f"PersistentVolumeClaim {src.pvc.claim_name} not found")
        phase = (claim.get("status") or {}).get("phase", "Pending")
        if phase == "Lost":
            return (False, "SourceNotFound", f"PersistentVolumeClaim {src.pvc.claim_name} lost its volume")
        return (True, "SourceResolved", f"PersistentVolumeClaim {src.pvc.claim_name} is {phase}; files are verified when pods start")

    async def _evaluate_model(self, view: ObjectView) -> tuple[InferenceModelSpec | None, ModelObservation]:
        spec = self._parse(view, InferenceModelSpec)
        if isinstance(spec, str):
            return None, ModelObservation(generation=view.generation, spec_error=spec)
        backend = spec.resolved_backend
        profile = self.cfg.profile_for_model(spec.device, backend)
        failure = None
        source = (False, "NoDeviceProfile", "")
        if profile is None:
            failure = ("NoDeviceProfile", f"no device profile provides device {spec.device.value} with backend {backend.value}")
        else:
            source = await self._source_state(view, spec)
        return spec, ModelObservation(
            generation=view.generation, backend=backend.value, profile=profile, profile_failure=failure, source=source
        )

    def _model_users(self, namespace: str, model: str) -> list[str]:
        """The WasmWorkers naming the model, less those being deleted (they no longer hold it)."""
        users = set()
        for worker in _all(self.ix.model_users, (namespace, model)):
            view = _one(self.ix.workers, (namespace, worker))
            if view is not None and not view.deleting:
                users.add(worker)
        return sorted(users)

    async def _set_finalizers(self, view: ObjectView, finalizers: list[str]) -> None:
        if self._finalizers_sent.get(view.uid) == view.resource_version:
            return  # patched moments ago; the watch has not shown it yet
        try:
            await self.kube.set_model_finalizers(view.namespace, view.name, finalizers, view.resource_version)
        except KubeError as err:
            if err.status != 404:
                raise
        self._finalizers_sent[view.uid] = view.resource_version

    async def reconcile_model(self, namespace: str, name: str) -> None:
        key = (MODEL, namespace, name)
        view = _one(self.ix.models, (namespace, name))
        if view is None:
            return
        workers = self._model_users(namespace, name)
        if view.deleting:
            await self._model_deletion(view, workers)
            return
        if MODEL_FINALIZER not in view.finalizers and namespace not in self._terminating:
            await self._set_finalizers(view, [*view.finalizers, MODEL_FINALIZER])
        spec, obs = await self._evaluate_model(view)
        obs = dataclasses.replace(obs, workers=workers)
        status, changes = model_status(obs, self._old_status(view), self.clock())
        await self._write(view, "inferencemodels", status.wire(), changes)
        if not model_condition(obs).status == "True":
            self.queue.add_after(key, NOT_READY_RECHECK_SECONDS)
        elif spec is not None and spec.source.https is None:
            self.queue.add_after(key, self.cfg.source_recheck_seconds)

    async def _model_deletion(self, view: ObjectView, workers: list[str]) -> None:
        """Hold a deleted model while workers use it, saying which; let it go once none does."""
        if MODEL_FINALIZER not in view.finalizers:
            return
        if not workers:
            await self._set_finalizers(view, [f for f in view.finalizers if f != MODEL_FINALIZER])
            log.info("InferenceModel %s/%s: no WasmWorker uses it; deletion proceeds", view.namespace, view.name)
            return
        _, obs = await self._evaluate_model(view)
        obs = dataclasses.replace(obs, workers=workers, deleting=True)
        status, changes = model_status(obs, self._old_status(view), self.clock())
        await self._write(view, "inferencemodels", status.wire(), changes)
        self.queue.add_after((MODEL, view.namespace, view.name), IN_USE_RECHECK_SECONDS)

    async def release_model(self, namespace: str, name: str) -> None:
        body = await self.kube.get_model(namespace, name)
        finalizers = list((body or {}).get("metadata", {}).get("finalizers") or [])
        if body is None or MODEL_FINALIZER not in finalizers:
            return
        rv = str(body["metadata"].get("resourceVersion", ""))
        try:
            await self.kube.set_model_finalizers(namespace, name, [f for f in finalizers if f != MODEL_FINALIZER], rv)
        except KubeError as err:
            if err.status != 404:
                raise
        log.info("InferenceModel %s/%s: its namespace is being deleted; deletion proceeds", namespace, name)

    # --- WasmWorker --------------------------------------------------------------------------------

    async def _model_states(
        self, namespace: str, names: list[str]
    ) -> tuple[dict[str, ModelState], list[NamedModel], tuple[tuple[str, int], ...]]:
        """Each named model's state, the parsed ones, and their (uid, generation) for render caching."""
        states: dict[str, ModelState] = {}
        named: list[NamedModel] = []
        versions: list[tuple[str, int]] = []
        for n in names:
            view = _one(self.ix.models, (namespace, n))
            if view is None:  # a model being deleted stays usable: its deletion waits for its users
                states[n] = ModelState(found=False)
                continue
            versions.append((view.uid, view.generation))
            spec, obs = await self._evaluate_model(view)
            cond: Cond = model_condition(obs)
            states[n] = ModelState(found=True, ready=cond.status == "True", reason=cond.reason, message=cond.message)
            if spec is not None:
                named.append(NamedModel(n, spec))
        return states, named, tuple(versions)

    async def reconcile_worker(self, namespace: str, name: str) -> None:
        key = (WORKER, namespace, name)
        view = _one(self.ix.workers, (namespace, name))
        if view is None or view.deleting:
            return
        now = self.clock()
        old = self._old_status(view)
        spec = self._parse(view, WasmWorkerSpec)
        if isinstance(spec, str):
            obs = WorkerObservation(generation=view.generation, spec_error=spec)
            await self._write(view, "wasmworkers", *_wire(worker_status(obs, old, now)))
            return
        ref = ObjectRef(name, namespace, view.uid)
        states, named, versions = await self._model_states(namespace, spec.models)
        children: dict[str, ChildView] = {}
        for index in (self.ix.config_maps, self.ix.services, self.ix.deployments):
            for child in _all(index, (namespace, name)):
                children[child.kind] = child
        pods = _all(self.ix.pods, (namespace, name))
        decision = None
        applied = False
        desired_hash = None
        apply_error = None
        if all(s.ready for s in states.values()) and len(named) == len(spec.models):
            decision = decide(spec, named, self.cfg, old.get("profile"), pods, now)
            decision = await self.move_backs.decide(decision, ref, spec, named, old, now)
            if decision.profile is not None:
                render_key = (view.uid, view.generation, decision.profile, versions)
                hashes, apply_error = await self._apply_children(ref, spec, named, decision.profile, render_key, children)
                desired_hash = hashes.get("Deployment")
                applied = apply_error is None
                if decision.switched_from is not None:
                    log.warning("worker %s/%s: profile %s unschedulable, falling back to %s", namespace, name, decision.switched_from, decision.profile)
            if decision.retry_after is not None:
                self.queue.add_after(key, decision.retry_after)
            if decision.move_back_check is not None:
                self.queue.add_after(key, decision.move_back_check)
        deployment = children.get("Deployment")
        obs = WorkerObservation(
            generation=view.generation,
            replicas=spec.replicas,
            url=worker_url(ref, spec.route),
            selector=selector_string(name),
            model_names=list(spec.models),
            models=states,
            decision=decision,
            applied=applied,
            desired_hash=desired_hash,
            deployment=deployment if deployment is not None and deployment.owner_uid == view.uid else None,
            pods=pods,
            apply_error=apply_error,
            previous_profile=old.get("profile"),
        )
        await self._write(view, "wasmworkers", *_wire(worker_status(obs, old, now)))

    async def _apply_children(
        self,
        ref: ObjectRef,
        spec: WasmWorkerSpec,
        named: list[NamedModel],
        profile: str,
        rkey: tuple[Any, ...],
        children: Mapping[str, ChildView],
    ) -> tuple[dict[str, str], tuple[str, str] | None]:
        """Apply the children that differ from the render; (their hashes, a reason/message on failure)."""
        hashes = self._render_hashes.get(rkey)
        rendered: Rendered | None = None
        if hashes is None:
            rendered = render_worker(ref, spec, named, profile, self.cfg)
            hashes = {c["kind"]: c["metadata"]["annotations"][RENDER_HASH] for c in rendered.children}
            if len(self._render_hashes) > 20000:
                self._render_hashes.clear()
            self._render_hashes[rkey] = hashes
        for kind in ("ConfigMap", "Service", "Deployment"):
            current = children.get(kind)
            want = hashes[kind]
            if current is not None and current.render_hash == want and current.owner_uid == ref.uid:
                continue
            child_name = f"{ref.name}-runtime" if kind == "ConfigMap" else ref.name
            if self._applied.get((kind, ref.namespace, child_name)) == f"{ref.uid}/{want}" and current is None:
                continue  # applied moments ago; the watch has not shown it yet
            if rendered is None:
                rendered = render_worker(ref, spec, named, profile, self.cfg)
            obj = next(c for c in rendered.children if c["kind"] == kind)
            try:
                await self.kube.apply(obj, force=current is not None)
            except KubeError as err:
                if err.status == 409:
                    return hashes, ("ChildConflict", f"{kind} {child_name} exists and is not managed by this WasmWorker: {err.message}")
                if err.status in (400, 403, 422):
                    return hashes, ("ApplyFailed", f"{kind} {child_name}: {err.message}")
                raise
            self._applied[(kind, ref.namespace, child_name)] = f"{ref.uid}/{want}"
            log.info("worker %s/%s: applied %s %s", ref.namespace, ref.name, kind, child_name)
        return hashes, None

    # --- writing status ----------------------------------------------------------------------------

    def _old_status(self, view: ObjectView) -> dict[str, Any]:
        return self._written.get(view.uid, dict(view.status))

    async def _write(self, view: ObjectView, plural: str, new: dict[str, Any], changes: list[Transition]) -> None:
        old = self._old_status(view)
        if new == old:
            return
        patch: dict[str, Any] = {k: None for k in old if k not in new}
        patch.update(new)
        await self.kube.patch_status(plural, view.namespace, view.name, patch)
        self._written[view.uid] = new
        for change in changes:
            self._post(view, change)

    def _post(self, view: ObjectView, change: Transition) -> None:
        async def post() -> None:
            async with self._event_gate:
                try:
                    await self.kube.post_event(
                        view.reference(), "Warning" if change.warning else "Normal", change.reason, change.event_message, timestamp(self.clock())
                    )
                except KubeError as err:
                    log.debug("event for %s/%s not posted: %s", view.namespace, view.name, err)

        level = logging.WARNING if change.warning else logging.INFO
        log.log(level, "%s %s/%s: %s", view.kind, view.namespace, view.name, change.event_message)
        task = asyncio.create_task(post())
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _wire(result: tuple[Any, list[Transition]]) -> tuple[dict[str, Any], list[Transition]]:
    status, changes = result
    return status.wire(), changes
