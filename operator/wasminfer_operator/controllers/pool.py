"""ModelPools: the models that name the pool placed on its replicas, rendered into a ConfigMap, a
headless Service and a StatefulSet, and status from the replicas' pods.

The pool's status lists the models it placed, in order: with the replica names and the copies that
list is the placement (`wasminfer_runtime.modelpool.place`), so the model controller tells each
model which replicas hold it, and the worker controller routes workers to them, from the same list
the replicas were given."""

from __future__ import annotations

import logging

from wasminfer_operator.api import POOL_NAME_MAX, POOL_NAME_MESSAGE, InferenceModelSpec, ModelPoolSpec
from wasminfer_operator.controllers.model import ModelController
from wasminfer_operator.controllers.shared import (
    MODEL,
    POOL,
    WORKER,
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
from wasminfer_operator.kube import Kube
from wasminfer_operator.moveback import MoveBackChecks, PodsOf
from wasminfer_operator.names import RENDER_HASH, pool_group, pool_name, pool_replicas
from wasminfer_operator.observe import ChildView, ObjectView
from wasminfer_operator.placement import decide
from wasminfer_operator.profiles import OperatorConfig
from wasminfer_operator.render import NamedModel, ObjectRef
from wasminfer_operator.render_serving import pool_selector_string, render_model_pool
from wasminfer_operator.status import PoolObservation, pool_condition, pool_status
from wasminfer_runtime.modelpool import loads, place

log = logging.getLogger("wasminfer.operator")

NOT_READY_RECHECK_SECONDS = 10.0


class PoolController(Controller):
    def __init__(
        self, cfg: OperatorConfig, kube: Kube, ix: Indexes, specs: SpecCache, writer: StatusWriter, queue: WorkQueue[Key], models: ModelController
    ) -> None:
        super().__init__(cfg, kube, ix, specs, writer, queue)
        self.models = models
        self.applier = ChildApplier(kube, queue)
        self.move_backs = MoveBackChecks(cfg, kube)
        # pool uid -> ((generation, profile, placed models' versions), each child's render hash)
        self._render_hashes: dict[str, tuple[tuple[object, ...], dict[str, str]]] = {}

    def members(self, namespace: str, pool: str) -> list[str]:
        return sorted(set(all_of(self.ix.pool_members, (namespace, pool))))

    def wake_members(self, namespace: str, pool: str, workers: bool) -> None:
        """The pool's models (their replicas' state changed), and with `workers` the workers using them
        (the placement changed: where they call the models)."""
        for m in self.members(namespace, pool):
            self.queue.add((MODEL, namespace, m))
            if workers:
                for worker in all_of(self.ix.model_users, (namespace, m)):
                    self.queue.add((WORKER, namespace, worker))

    def forget(self, uid: str) -> None:
        self.move_backs.forget(uid)
        self._render_hashes.pop(uid, None)

    async def _placeable(self, namespace: str, pool: str) -> tuple[list[NamedModel], dict[str, str], tuple[tuple[str, int], ...]]:
        """The pool's models whose files pods can get, why the others wait, and the placed models'
        (uid, generation) (what of them renders)."""
        ready: list[NamedModel] = []
        waiting: dict[str, str] = {}
        versions: list[tuple[str, int]] = []
        for name in self.members(namespace, pool):
            view = one_of(self.ix.models, (namespace, name))
            if view is None:
                continue
            spec = self.specs.parse(view, InferenceModelSpec)
            if isinstance(spec, str):
                waiting[name] = spec
                continue
            if spec.pool != pool:
                continue
            ok, reason, message = await self.models.source_state(view, spec)
            if not ok:
                waiting[name] = f"{reason} {message}".strip()
                continue
            ready.append(NamedModel(name, spec.model_copy(update={"pool": None})))  # as loaded by the replicas
            versions.append((view.uid, view.generation))
        return ready, waiting, tuple(versions)

    async def reconcile(self, namespace: str, name: str) -> None:
        key = (POOL, namespace, name)
        view = one_of(self.ix.pools, (namespace, name))
        if view is None or view.deleting:
            return
        old = self.writer.old(view)
        now = self.writer.clock()
        spec = self.specs.parse(view, ModelPoolSpec)
        if isinstance(spec, str) or len(name) > POOL_NAME_MAX:  # the latter: the CEL rule's twin
            error = spec if isinstance(spec, str) else f"metadata.name: {POOL_NAME_MESSAGE}"
            status, changes = pool_status(PoolObservation(generation=view.generation, spec_error=error), old, now)
            await self.write_status(key, view, "modelpools", status.wire(), changes)
            return
        group = (namespace, pool_group(name))
        children: dict[str, ChildView] = {
            c.kind: c for index in (self.ix.config_maps, self.ix.services, self.ix.stateful_sets) for c in all_of(index, group)
        }
        pods = all_of(self.ix.pods, group)
        members, waiting, versions = await self._placeable(namespace, name)
        placed = tuple(m.name for m in members)
        replicas = pool_replicas(name, spec.replicas)
        decision = decide(spec, members, self.cfg, old.get("profile"), pods, now)
        ref = ObjectRef(name, namespace, view.uid, kind="ModelPool")
        if members:
            replica_pods = PodsOf(spec.replicas, lambda p: render_model_pool(ref, spec, members, p, self.cfg).stateful_set["spec"]["template"]["spec"])
            decision = await self.move_backs.decide(decision, ref, replica_pods, old, now)
        if decision.retry_after is not None:
            self.queue.add_after(key, decision.retry_after)
        if decision.move_back_check is not None:
            self.queue.add_after(key, decision.move_back_check)
        apply_error = None
        if not members:
            for kind, child in children.items():
                if child.owner_uid == view.uid:
                    await self.kube.delete(kind, namespace, child.name)
                    log.info("ModelPool %s/%s: no models; deleted %s %s", namespace, name, kind, child.name)
        elif decision.profile is not None:
            # Rendering a large pool (every model's configuration) is done once per state of the pool
            # and its models, not on every replica's pod event.
            profile = decision.profile
            render_key = (view.generation, profile, versions)
            cached = self._render_hashes.get(view.uid)
            if cached is None or cached[0] != render_key:
                rendered = render_model_pool(ref, spec, members, profile, self.cfg)
                cached = (render_key, {c["kind"]: c["metadata"]["annotations"][RENDER_HASH] for c in rendered.children})
                self._render_hashes[view.uid] = cached
            hashes = cached[1]
            names = {kind: pool_name(name) for kind in hashes}
            apply_error = await self.applier.apply(key, view.uid, hashes, names, children,
                                                   lambda: render_model_pool(ref, spec, members, profile, self.cfg))  # fmt: skip
            if decision.switched_from is not None:
                log.warning("ModelPool %s/%s: replicas unschedulable with profile %s, falling back to %s",
                            namespace, name, decision.switched_from, decision.profile)  # fmt: skip
        stateful_set = children.get("StatefulSet")
        placement = place(list(placed), replicas, spec.copies)
        obs = PoolObservation(
            generation=view.generation, decision=decision, replicas=spec.replicas, copies=spec.copies,
            selector=pool_selector_string(name), models=placed, waiting=waiting, shares=loads(placement, replicas),
            pods=pods, current_hash=stateful_set.template_hash if stateful_set is not None else None, apply_error=apply_error,
        )  # fmt: skip
        status, changes = pool_status(obs, old, now)
        await self.write_status(key, view, "modelpools", status.wire(), changes)
        if pool_condition(obs).status != "True" or waiting:
            self.queue.add_after(key, NOT_READY_RECHECK_SECONDS)
