"""InferenceModels: status from the spec, a device profile and the source's reachability, the in-use
finalizer that keeps a model while WasmWorkers of its namespace use it, and with spec.serving the
model's own model servers (a ConfigMap, Service and Deployment, placed like a worker's pods)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import time
from collections.abc import Mapping

from wasminfer_operator.api import SERVING_NAME_MAX, SERVING_NAME_MESSAGE, InferenceModelSpec, ModelPoolSpec
from wasminfer_operator.artifacts import VERIFIED_WHEN_FETCHED, Artifacts, pin_source
from wasminfer_operator.controllers.shared import (
    CHILD_KINDS,
    MODEL,
    ChildApplier,
    Controller,
    Indexes,
    Key,
    SpecCache,
    StatusWriter,
    all_of,
    one_of,
)
from wasminfer_operator.handmade.workqueue import WorkQueue
from wasminfer_operator.kube import Kube, KubeError
from wasminfer_operator.moveback import MoveBackChecks, PodsOf
from wasminfer_operator.names import MODEL_FINALIZER, RENDER_HASH, model_server_name, pool_group, pool_replicas, server_group
from wasminfer_operator.observe import ObjectView
from wasminfer_operator.placement import Decision, decide
from wasminfer_operator.profiles import OperatorConfig
from wasminfer_operator.render import NamedModel, ObjectRef, PoolRoute, model_server_urls, pool_replica_url
from wasminfer_operator.render_serving import render_model_server, server_selector_string
from wasminfer_operator.status import ModelObservation, ServingObservation, model_condition, model_status
from wasminfer_operator.trust import policies_for
from wasminfer_runtime.modelpool import place

log = logging.getLogger("wasminfer.operator")

NOT_READY_RECHECK_SECONDS = 10.0
IN_USE_RECHECK_SECONDS = 5.0  # a model's deletion waits for its users; worker events wake it sooner

SourceState = tuple[bool, str, str]  # (ok, reason, message)


class ModelController(Controller):
    def __init__(self, cfg: OperatorConfig, kube: Kube, ix: Indexes, specs: SpecCache, writer: StatusWriter, queue: WorkQueue[Key]) -> None:
        super().__init__(cfg, kube, ix, specs, writer, queue)
        self.applier = ChildApplier(kube, queue)  # the model servers' children (spec.serving)
        self.move_backs = MoveBackChecks(cfg, kube)
        # pool uid -> ((generation, models placed), placement): see _placement
        self._placements: dict[str, tuple[tuple[int, tuple[str, ...]], Mapping[str, tuple[str, ...]]]] = {}
        self._sources: dict[tuple[str, int], tuple[float, SourceState]] = {}  # (uid, generation) -> (until, state)
        self._finalizers_sent: dict[str, str] = {}  # model uid -> resourceVersion its finalizers were patched at
        self.terminating: set[str] = set()  # namespaces being deleted: their models are not held
        self.artifacts = Artifacts(kube, cfg.source_recheck_seconds)  # OCI sources: tags resolved, signatures checked

    def forget(self, uid: str) -> None:
        self._finalizers_sent.pop(uid, None)
        self.move_backs.forget(uid)
        self.artifacts.forget(uid)

    # --- what a model is ---------------------------------------------------------------------------

    async def evaluate(self, view: ObjectView) -> tuple[InferenceModelSpec | None, ModelObservation]:
        spec = self.specs.parse(view, InferenceModelSpec)
        if isinstance(spec, str):
            return None, ModelObservation(generation=view.generation, spec_error=spec)
        if spec.serving is not None and len(view.name) > SERVING_NAME_MAX:  # the CEL rule's twin
            return None, ModelObservation(generation=view.generation, spec_error=f"spec.serving: {SERVING_NAME_MESSAGE}")
        backend = spec.resolved_backend
        profile = self.cfg.profile_for_model(spec.device, backend)
        failure = None
        source: SourceState = (False, "NoDeviceProfile", "")
        serving = None
        if spec.serving is not None:
            serving = self._serving(view, spec)
            profile = serving.decision.profile or profile
            source = await self.source_state(view, spec)
        elif spec.pool is not None:
            serving = self._pooled(view, spec.pool)
            profile = serving.decision.profile
            source = await self.source_state(view, spec)
        elif profile is None:
            failure = ("NoDeviceProfile", f"no device profile provides device {spec.device.value} with backend {backend.value}")
        else:
            source = await self.source_state(view, spec)
        artifact, verified = None, None
        policies = policies_for(self.cfg, view.namespace, spec.signatures)
        if spec.source.oci is not None and failure is None:
            check = await self.artifacts.check(view.namespace, (view.uid, view.generation), spec.source.oci, policies)
            source, artifact, verified = (check.ok, check.reason, check.message), check.pinned, check.verified
            if check.pinned is not None:  # the pods pull the digest the tag resolved to
                spec = pin_source(spec, check.pinned)
        elif policies:
            verified = VERIFIED_WHEN_FETCHED
        return spec, ModelObservation(
            generation=view.generation, backend=backend.value, profile=profile, profile_failure=failure, source=source, serving=serving,
            artifact=artifact, verified=verified,
        )

    def _serving(self, view: ObjectView, spec: InferenceModelSpec) -> ServingObservation:
        """Where the model servers go (the model's device profile, or a fallback) and what the caches show."""
        assert spec.serving is not None
        pods = all_of(self.ix.pods, (view.namespace, server_group(view.name)))
        decision = decide(spec.serving, [NamedModel(view.name, spec.model_copy(update={"serving": None}))], self.cfg, self.writer.old(view).get("profile"), pods, self.writer.clock())
        rest, grpc = model_server_urls(view.namespace, view.name)
        return ServingObservation(
            replicas=spec.serving.replicas, endpoint=rest, grpc_endpoint=grpc, selector=server_selector_string(view.name),
            decision=decision, pods=pods,
        )  # fmt: skip

    def pool_route(self, namespace: str, model: str, pool: str) -> tuple[tuple[str, ...], PoolRoute | None, tuple[str, str]]:
        """The replicas of `pool` placed to hold `model`, the route workers call them by, and when there
        is no route, why (reason, message). The placement follows from the models the pool placed (its
        status), its replica names and its copies: what its replicas were told to load."""
        pool_view = one_of(self.ix.pools, (namespace, pool))
        if pool_view is None:
            return (), None, ("PoolNotReady", f"ModelPool {pool} not found in this namespace")
        pool_spec = self.specs.parse(pool_view, ModelPoolSpec)
        if isinstance(pool_spec, str):
            return (), None, ("PoolNotReady", f"ModelPool {pool}: {pool_spec}")
        holders = self._placement(pool_view, pool_spec).get(model)
        if holders is None:
            return (), None, ("Placing", f"ModelPool {pool} has not placed the model on its replicas yet")
        urls = tuple(pool_replica_url(namespace, pool, h, pool_spec.protocol) for h in holders)
        return tuple(holders), PoolRoute(urls, pool_spec.timeout_seconds), ("", "")

    def _placement(self, pool_view: ObjectView, pool_spec: ModelPoolSpec) -> Mapping[str, tuple[str, ...]]:
        """The pool's placement, computed once per state of the pool: every model of a large pool asks
        for it on each of its reconciles, and so do the workers using them."""
        placed = tuple(str(m) for m in pool_view.status.get("models") or [])
        key = (pool_view.generation, placed)
        cached = self._placements.get(pool_view.uid)
        if cached is None or cached[0] != key:
            replicas = pool_replicas(pool_view.name, pool_spec.replicas)
            cached = (key, place(placed, replicas, pool_spec.copies))
            self._placements[pool_view.uid] = cached
        return cached[1]

    def forget_pool(self, uid: str) -> None:
        self._placements.pop(uid, None)

    def _pooled(self, view: ObjectView, pool: str) -> ServingObservation:
        """A pool's model: the replicas placed to hold it, and whether they run the current placement."""
        holders, route, why = self.pool_route(view.namespace, view.name, pool)
        pool_view = one_of(self.ix.pools, (view.namespace, pool))
        profile = str((pool_view.status if pool_view is not None else {}).get("profile") or "") or None
        decision = Decision(profile=profile, chain=(profile,) if profile else ())
        if route is None:
            decision = Decision(profile=None, failure=why)
        group = (view.namespace, pool_group(pool))
        pods = {p.name: p for p in all_of(self.ix.pods, group) if not p.terminating}
        stateful_set = one_of(self.ix.stateful_sets, group)
        return ServingObservation(
            replicas=len(holders), endpoint="", grpc_endpoint="", selector="", decision=decision,
            pods=[pods[h] for h in holders if h in pods], pool=pool,
            current_hash=stateful_set.template_hash if stateful_set is not None else "",
        )  # fmt: skip

    async def _serve(self, view: ObjectView, spec: InferenceModelSpec, obs: ModelObservation) -> ModelObservation:
        """Apply the model servers' children where they differ from the render; removes them when
        spec.serving is gone. Returns the observation with any apply failure."""
        group = (view.namespace, server_group(view.name))
        children = {c.kind: c for index in (self.ix.config_maps, self.ix.services, self.ix.deployments) for c in all_of(index, group)}
        sv = obs.serving
        if sv is None or sv.pool is not None:  # no model servers of its own (any more)
            for kind, child in children.items():
                if child.owner_uid == view.uid:
                    await self.kube.delete(kind, view.namespace, child.name)
                    log.info("InferenceModel %s/%s: spec.serving removed; deleted %s %s", view.namespace, view.name, kind, child.name)
            return obs
        key = (MODEL, view.namespace, view.name)
        ref = ObjectRef(view.name, view.namespace, view.uid, kind="InferenceModel")
        assert spec.serving is not None
        servers = PodsOf(spec.serving.replicas, lambda p: render_model_server(ref, spec, p, self.cfg).deployment["spec"]["template"]["spec"])
        d = await self.move_backs.decide(sv.decision, ref, servers, self.writer.old(view), self.writer.clock())
        if d is not sv.decision:
            sv = dataclasses.replace(sv, decision=d)
            obs = dataclasses.replace(obs, serving=sv, profile=d.profile or obs.profile)
        if d.retry_after is not None:
            self.queue.add_after(key, d.retry_after)
        if d.move_back_check is not None:
            self.queue.add_after(key, d.move_back_check)
        if d.profile is None or not obs.source[0]:
            return obs
        if d.switched_from is not None:
            log.warning("InferenceModel %s/%s: model servers unschedulable with profile %s, falling back to %s",
                        view.namespace, view.name, d.switched_from, d.profile)  # fmt: skip
        profile = d.profile
        rendered = render_model_server(ref, spec, profile, self.cfg)
        hashes = {c["kind"]: c["metadata"]["annotations"][RENDER_HASH] for c in rendered.children}
        names = {kind: model_server_name(view.name) for kind in CHILD_KINDS}
        error = await self.applier.apply(key, view.uid, hashes, names, children, lambda: rendered)
        if error is None:
            return obs
        return dataclasses.replace(obs, serving=dataclasses.replace(sv, apply_error=error))

    async def source_state(self, view: ObjectView, spec: InferenceModelSpec) -> SourceState:
        """Can the pods get the files? Checked against the API for ConfigMap and claim sources."""
        src = spec.source
        if src.https is not None:
            return (True, "SourceDeclared", f"{len(src.https.files)} https file(s), each verified against its sha256 when pods fetch it")
        if src.oci is not None:  # checked by evaluate, with the trust policies
            return (True, "SourceDeclared", f"OCI artifact {src.oci.reference}")
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

    async def _check_source(self, namespace: str, spec: InferenceModelSpec) -> SourceState:
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

    def users(self, namespace: str, model: str) -> list[str]:
        """The WasmWorkers naming the model, less those being deleted (they no longer hold it)."""
        users = set()
        for worker in all_of(self.ix.model_users, (namespace, model)):
            view = one_of(self.ix.workers, (namespace, worker))
            if view is not None and not view.deleting:
                users.add(worker)
        return sorted(users)

    # --- reconciling -------------------------------------------------------------------------------

    async def reconcile(self, namespace: str, name: str) -> None:
        key = (MODEL, namespace, name)
        view = one_of(self.ix.models, (namespace, name))
        if view is None:
            return
        workers = self.users(namespace, name)
        if view.deleting:
            await self._deletion(view, workers)
            return
        if MODEL_FINALIZER not in view.finalizers and namespace not in self.terminating:
            await self._set_finalizers(view, [*view.finalizers, MODEL_FINALIZER])
        spec, obs = await self.evaluate(view)
        obs = dataclasses.replace(obs, workers=workers)
        if spec is not None:
            obs = await self._serve(view, spec, obs)
        status, changes = model_status(obs, self.writer.old(view), self.writer.clock())
        await self.write_status(key, view, "inferencemodels", status.wire(), changes)
        if not model_condition(obs).status == "True":
            self.queue.add_after(key, NOT_READY_RECHECK_SECONDS)
        elif spec is not None and spec.source.https is None:  # ConfigMaps, claims and registry tags change
            self.queue.add_after(key, self.cfg.source_recheck_seconds)

    async def _set_finalizers(self, view: ObjectView, finalizers: list[str]) -> None:
        if self._finalizers_sent.get(view.uid) == view.resource_version:
            return  # patched moments ago; the watch has not shown it yet
        try:
            await self.kube.set_model_finalizers(view.namespace, view.name, finalizers, view.resource_version)
        except KubeError as err:
            if err.status != 404:
                raise
        self._finalizers_sent[view.uid] = view.resource_version

    async def _deletion(self, view: ObjectView, workers: list[str]) -> None:
        """Hold a deleted model while workers use it, saying which; let it go once none does."""
        if MODEL_FINALIZER not in view.finalizers:
            return
        if not workers:
            await self._set_finalizers(view, [f for f in view.finalizers if f != MODEL_FINALIZER])
            log.info("InferenceModel %s/%s: no WasmWorker uses it; deletion proceeds", view.namespace, view.name)
            return
        _, obs = await self.evaluate(view)
        obs = dataclasses.replace(obs, workers=workers, deleting=True)
        status, changes = model_status(obs, self.writer.old(view), self.writer.clock())
        await self.write_status((MODEL, view.namespace, view.name), view, "inferencemodels", status.wire(), changes)
        self.queue.add_after((MODEL, view.namespace, view.name), IN_USE_RECHECK_SECONDS)

    async def release(self, namespace: str, name: str) -> None:
        """Drop the finalizer of a model whose namespace is being deleted, from a fresh read."""
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
