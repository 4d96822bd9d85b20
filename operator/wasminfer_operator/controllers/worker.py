"""WasmWorkers: placement, the rendered children (ConfigMap, Service, Deployment) applied when they
differ, and status from the models, the Deployment and the pods."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from wasminfer_operator.api import WasmWorkerSpec
from wasminfer_operator.artifacts import FAILED_RECHECK_SECONDS, VERIFIED_WHEN_FETCHED, pin_source
from wasminfer_operator.controllers.model import ModelController
from wasminfer_operator.controllers.shared import CHILD_KINDS, WORKER, ChildApplier, Controller, Indexes, Key, SpecCache, StatusWriter, all_of, one_of
from wasminfer_operator.handmade.workqueue import WorkQueue
from wasminfer_operator.kube import Kube
from wasminfer_operator.moveback import MoveBackChecks, PodsOf
from wasminfer_operator.names import RENDER_HASH, child_name
from wasminfer_operator.observe import ChildView
from wasminfer_operator.placement import decide
from wasminfer_operator.profiles import OperatorConfig
from wasminfer_operator.render import NamedModel, ObjectRef, render_worker, selector_string, worker_url
from wasminfer_operator.status import Cond, ModelState, Transition, WorkerObservation, model_condition, worker_status
from wasminfer_operator.trust import policies_for

log = logging.getLogger("wasminfer.operator")

RENDER_CACHE_LIMIT = 20000


class WorkerController(Controller):
    def __init__(
        self, cfg: OperatorConfig, kube: Kube, ix: Indexes, specs: SpecCache, writer: StatusWriter, queue: WorkQueue[Key], models: ModelController
    ) -> None:
        super().__init__(cfg, kube, ix, specs, writer, queue)
        self.models = models  # a worker's models are evaluated as their own controller does
        self.move_backs = MoveBackChecks(cfg, kube)
        self.applier = ChildApplier(kube, queue)
        self._render_hashes: dict[tuple[Any, ...], dict[str, str]] = {}  # render inputs -> each child's hash

    def forget(self, uid: str) -> None:
        self.move_backs.forget(uid)

    async def _model_states(
        self, namespace: str, names: list[str]
    ) -> tuple[dict[str, ModelState], list[NamedModel], tuple[Any, ...]]:
        """Each named model's state, the parsed ones, and what of them renders (for render caching):
        their (uid, generation), and for a pool's model the replicas it is called on."""
        states: dict[str, ModelState] = {}
        named: list[NamedModel] = []
        versions: list[Any] = []
        for n in names:
            view = one_of(self.ix.models, (namespace, n))
            if view is None:  # a model being deleted stays usable: its deletion waits for its users
                states[n] = ModelState(found=False)
                continue
            spec, obs = await self.models.evaluate(view)
            versions.append((view.uid, view.generation, obs.artifact))
            cond: Cond = model_condition(obs)
            states[n] = ModelState(found=True, ready=cond.status == "True", reason=cond.reason, message=cond.message)
            if spec is None:
                continue
            route = None
            if spec.pool is not None:
                _, route, _ = self.models.pool_route(namespace, n, spec.pool)
                versions.append(route)
            named.append(NamedModel(n, spec, route))
        return states, named, tuple(versions)

    async def reconcile(self, namespace: str, name: str) -> None:
        key = (WORKER, namespace, name)
        view = one_of(self.ix.workers, (namespace, name))
        if view is None or view.deleting:
            return
        now = self.writer.clock()
        old = self.writer.old(view)
        spec = self.specs.parse(view, WasmWorkerSpec)
        if isinstance(spec, str):
            obs = WorkerObservation(generation=view.generation, spec_error=spec)
            await self.write_status(key, view, "wasmworkers", *_wire(worker_status(obs, old, now)))
            return
        ref = ObjectRef(name, namespace, view.uid)
        module_source, artifact, verified = None, None, None
        policies = policies_for(self.cfg, namespace, spec.signatures)
        if spec.module.oci is not None:
            check = await self.models.artifacts.check(namespace, (view.uid, view.generation), spec.module.oci, policies)
            module_source, artifact, verified = (check.ok, check.reason, check.message), check.pinned, check.verified
            if check.pinned is not None:  # the pods pull the digest the tag resolved to
                spec = pin_source(spec, check.pinned)
            self.queue.add_after(key, self.cfg.source_recheck_seconds if check.ok else FAILED_RECHECK_SECONDS)
        elif policies:
            verified = VERIFIED_WHEN_FETCHED
        states, named, versions = await self._model_states(namespace, spec.models)
        children: dict[str, ChildView] = {}
        for index in (self.ix.config_maps, self.ix.services, self.ix.deployments):
            for child in all_of(index, (namespace, name)):
                children[child.kind] = child
        pods = all_of(self.ix.pods, (namespace, name))
        decision = None
        applied = False
        desired_hash = None
        apply_error = None
        if all(s.ready for s in states.values()) and len(named) == len(spec.models) and (module_source is None or module_source[0]):
            decision = decide(spec, named, self.cfg, old.get("profile"), pods, now)
            runtime_pods = PodsOf(spec.replicas, lambda p: render_worker(ref, spec, named, p, self.cfg).deployment["spec"]["template"]["spec"])
            decision = await self.move_backs.decide(decision, ref, runtime_pods, old, now)
            if decision.profile is not None:
                render_key = (view.uid, view.generation, decision.profile, versions, artifact)
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
            module_source=module_source,
            artifact=artifact,
            verified=verified,
        )
        await self.write_status(key, view, "wasmworkers", *_wire(worker_status(obs, old, now)))

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
        if hashes is None:
            hashes = {c["kind"]: c["metadata"]["annotations"][RENDER_HASH] for c in render_worker(ref, spec, named, profile, self.cfg).children}
            if len(self._render_hashes) > RENDER_CACHE_LIMIT:
                self._render_hashes.clear()
            self._render_hashes[rkey] = hashes
        names = {kind: child_name(kind, ref.name) for kind in CHILD_KINDS}
        error = await self.applier.apply(
            (WORKER, ref.namespace, ref.name), ref.uid, hashes, names, children,
            lambda: render_worker(ref, spec, named, profile, self.cfg),
        )  # fmt: skip
        return hashes, error


def _wire(result: tuple[Any, list[Transition]]) -> tuple[dict[str, Any], list[Transition]]:
    status, changes = result
    return status.wire(), changes
