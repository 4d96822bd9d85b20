"""Moving a worker (or a model's model servers, or a pool's replicas) back from a fallback profile:
the capacity checks and what they remember.

While a worker runs on a fallback profile, its reconciles (queued again every moveBackCheckSeconds,
on the leader only) ask the capacity check (`capacity`) whether the worker's more preferred
profiles have room, reading nodes and the pods bound to candidate nodes; nothing is written, so
the running pods are never disturbed. The decision itself is `placement.move_back`.

Kept in memory: when the worker fell back and since when each profile has had room. After an
operator restart the fallback time is taken from the Scheduled condition's last transition and the
stable period starts again, so a restart only delays a move back.

Not a kopf timer: kopf timers put a finalizer on every WasmWorker (the operator never writes to
the objects it watches) and run on every replica; the reconcile queue runs on the leader only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from wasminfer_operator.capacity import Room, candidate_nodes, fits_on, node_view, pod_requests, room_for
from wasminfer_operator.kube import Kube, KubeError
from wasminfer_operator.placement import Decision, Seen, move_back, move_back_candidates, parse_time
from wasminfer_operator.profiles import OperatorConfig
from wasminfer_operator.render import ObjectRef

log = logging.getLogger("wasminfer.operator.moveback")

@dataclass(frozen=True)
class PodsOf:
    """What a capacity check needs of an object's pods: how many, and their spec under a profile
    (a worker's runtime pods, a model's model servers, a pool's replicas)."""

    replicas: int
    spec_under: Callable[[str], dict[str, Any]]


MAX_NODE_READS = 50  # nodes whose pods one check reads at most (it stops once the worker fits)
SCHEDULED = "Scheduled"


class MoveBackChecks:
    def __init__(self, cfg: OperatorConfig, kube: Kube) -> None:
        self.cfg = cfg
        self.kube = kube
        self._fell_back_at: dict[str, datetime] = {}  # worker uid -> when it moved to its fallback
        self._room: dict[str, dict[str, Seen]] = {}  # worker uid -> profile -> room seen since
        self._checked: dict[str, float] = {}  # worker uid -> monotonic time of its last check
        self._forbidden_logged = False

    def forget(self, uid: str) -> None:
        self._fell_back_at.pop(uid, None)
        self._room.pop(uid, None)
        self._checked.pop(uid, None)

    def _fallback_time(self, uid: str, old: Mapping[str, Any], now: datetime) -> datetime:
        at = self._fell_back_at.get(uid)
        if at is None:
            cond: Mapping[str, Any] = next((c for c in old.get("conditions") or [] if c.get("type") == SCHEDULED), {})
            at = parse_time(cond["lastTransitionTime"]) if cond.get("lastTransitionTime") else now
            self._fell_back_at[uid] = at
        return at

    async def decide(
        self, decision: Decision, ref: ObjectRef, pods: PodsOf, old: Mapping[str, Any], now: datetime
    ) -> Decision:
        """The decision, or a move back to a more preferred profile when it has had room long enough.
        `pods`: how many pods the object runs, and their pod spec under a profile."""
        if decision.switched_from is not None:
            self.forget(ref.uid)
            self._fell_back_at[ref.uid] = now
            return decision
        if not decision.fell_back:
            self.forget(ref.uid)
            return decision
        fell_back_at = self._fallback_time(ref.uid, old, now)
        profiles = move_back_candidates(decision, fell_back_at, now, self.cfg)
        seen = self._room.setdefault(ref.uid, {})
        last = self._checked.get(ref.uid)
        if profiles and (last is None or time.monotonic() - last >= min(self.cfg.move_back_check_seconds / 2, 5.0)):
            self._checked[ref.uid] = time.monotonic()
            for p in profiles:
                room = await self._room_under(ref, pods, p)
                if not room.enough:
                    seen.pop(p, None)
                    log.debug("%s %s/%s: profile %s: %s", ref.kind, ref.namespace, ref.name, p, room.detail)
                    continue
                since = seen[p].since if p in seen else now
                seen[p] = Seen(since, room.detail)
                break  # the most preferred profile with room is the one to wait for
        result = move_back(decision, seen, fell_back_at, now, self.cfg)
        if result.moved_back_from is not None:
            log.info("%s %s/%s: moving back from profile %s to %s (%s)", ref.kind, ref.namespace, ref.name,
                     result.moved_back_from, result.profile, result.room)  # fmt: skip
            self.forget(ref.uid)
        return result

    async def _room_under(self, ref: ObjectRef, pods: PodsOf, profile: str) -> Room:
        replicas = pods.replicas
        pod_spec = pods.spec_under(profile)
        selector = ",".join(f"{k}={v}" for k, v in sorted((pod_spec.get("nodeSelector") or {}).items()))
        try:
            nodes = [node_view(n) for n in await self.kube.list_nodes(selector)]
            requests = pod_requests(pod_spec)
            pods_on: dict[str, list[dict[str, Any]]] = {}
            reads = 0
            for node in candidate_nodes(pod_spec, nodes):
                if fits_on(requests, node, {})[0] == 0:
                    pods_on[node.name] = []  # not even empty would it hold one: nothing to read
                    continue
                if reads >= MAX_NODE_READS:
                    break
                pods_on[node.name] = await self.kube.list_pods_on_node(node.name)
                reads += 1
                if room_for(pod_spec, replicas, nodes, pods_on).enough:
                    break
        except KubeError as err:
            if err.status == 403 and not self._forbidden_logged:
                self._forbidden_logged = True
                log.warning("cannot read nodes or pods (%s): workers stay on their fallback profiles; grant list on nodes and pods", err)
            elif err.status != 403:
                log.warning("%s %s/%s: capacity check of profile %s failed: %s", ref.kind, ref.namespace, ref.name, profile, err)
            return Room(0, max(replicas, 1), f"not checked: {err.message}")
        return room_for(pod_spec, replicas, nodes, pods_on)
