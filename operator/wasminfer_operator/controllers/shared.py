"""What both controllers share: keys, the watch caches, parsed specs and the status writer."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from wasminfer_operator.handmade.workqueue import WorkQueue
from wasminfer_operator.kube import Kube, KubeError
from wasminfer_operator.observe import ChildView, ObjectView, PodView
from wasminfer_operator.profiles import OperatorConfig
from wasminfer_operator.render import Rendered
from wasminfer_operator.render_serving import RenderedPool
from wasminfer_operator.status import Transition, details_only

log = logging.getLogger("wasminfer.operator")

APPLIED_GRACE_SECONDS = 10.0  # how long an apply the watch has not shown yet counts as done
CHILD_KINDS = ("ConfigMap", "Service", "Deployment")  # in apply order: new pods never start with an old configuration

WORKER = "worker"
MODEL = "model"
POOL = "pool"
RELEASE = "release"  # a model of a namespace being deleted: drop its finalizer, from a fresh read
Key = tuple[str, str, str]  # (WORKER|MODEL|POOL|RELEASE, namespace, name)
NsName = tuple[str, str]
V = TypeVar("V")
M = TypeVar("M", bound=BaseModel)


@dataclass
class Indexes:
    """Live views of the watch caches, all keyed by (namespace, name)."""

    workers: Mapping[NsName, Iterable[ObjectView]]
    models: Mapping[NsName, Iterable[ObjectView]]
    model_users: Mapping[NsName, Iterable[str]]  # (namespace, model) -> names of workers naming it
    deployments: Mapping[NsName, Iterable[ChildView]]  # (namespace, group) -> its children of a kind (names.*_group)
    services: Mapping[NsName, Iterable[ChildView]]
    config_maps: Mapping[NsName, Iterable[ChildView]]
    pods: Mapping[NsName, Iterable[PodView]]
    pools: Mapping[NsName, Iterable[ObjectView]] = field(default_factory=dict)
    pool_members: Mapping[NsName, Iterable[str]] = field(default_factory=dict)  # (namespace, pool) -> names of models in it
    stateful_sets: Mapping[NsName, Iterable[ChildView]] = field(default_factory=dict)


def all_of(index: Mapping[NsName, Iterable[V]], key: NsName) -> list[V]:
    store = index.get(key)
    return list(store) if store else []


def one_of(index: Mapping[NsName, Iterable[V]], key: NsName) -> V | None:
    values = all_of(index, key)
    return values[0] if values else None


def spec_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        parts.append(f"spec.{loc}: {e['msg']}" if loc else f"spec: {e['msg']}")
    return "; ".join(parts)


class SpecCache:
    """Parsed specs (or the error naming the field), once per (uid, generation)."""

    LIMIT = 50000

    def __init__(self) -> None:
        self._parsed: dict[tuple[str, int], BaseModel | str] = {}

    def parse(self, view: ObjectView, model: type[M]) -> M | str:
        key = (view.uid, view.generation)
        hit = self._parsed.get(key)
        if hit is None:
            try:
                hit = model.model_validate(view.spec)
            except ValidationError as err:
                hit = spec_error(err)
            if len(self._parsed) > self.LIMIT:
                self._parsed.clear()
            self._parsed[key] = hit
        if isinstance(hit, str):
            return hit
        assert isinstance(hit, model)
        return hit


# Posts a core/v1 Event about an object: (object's body stub, type, reason, message). In the
# operator this is kopf's poster (`handlers.KopfEvents`), which sends each object's events in
# order, with retries, without holding up the reconcile.
EventPoster = Callable[[dict[str, Any], str, str, str], None]


# How long a change to status details alone (`status.details_only`) may wait for the next write,
# per plural. Condition changes and new generations are written at once. Creating many workers
# otherwise costs each one a write per message on the way (creating the Deployment, waiting for
# pods, 1 of 1 pod...) and each of their models a write per new user.
DETAIL_SETTLE_SECONDS = {"wasmworkers": 5.0, "inferencemodels": 10.0, "modelpools": 5.0}


class StatusWriter:
    """Writes status subresources when they differ from what this process wrote last, and posts
    an event (and a log line) per condition transition."""

    def __init__(
        self, kube: Kube, clock: Callable[[], datetime], post_event: EventPoster, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.kube = kube
        self.clock = clock
        self.post_event = post_event
        self.monotonic = monotonic
        self._written: dict[str, dict[str, Any]] = {}  # uid -> status this process wrote last
        self._written_at: dict[str, float] = {}  # uid -> when (monotonic)

    def old(self, view: ObjectView) -> dict[str, Any]:
        return self._written.get(view.uid, dict(view.status))

    def is_current(self, view: ObjectView) -> bool:
        """The object shows the status this process wrote last (False when it wrote none)."""
        return self._written.get(view.uid) == view.status

    def forget(self, uid: str) -> None:
        self._written.pop(uid, None)
        self._written_at.pop(uid, None)

    async def write(self, view: ObjectView, plural: str, new: dict[str, Any], changes: list[Transition]) -> float | None:
        """Write `new` if it differs from the status now; None once nothing is left to write, or the
        seconds after which a change to details alone may be written (the caller looks again then)."""
        old = self.old(view)
        if new == old:
            return None
        now = self.monotonic()
        if details_only(old, new):
            wait = self._written_at.get(view.uid, -1e9) + DETAIL_SETTLE_SECONDS[plural] - now
            if wait > 0:
                return wait
        patch: dict[str, Any] = {k: None for k in old if k not in new}
        patch.update(new)
        await self.kube.patch_status(plural, view.namespace, view.name, patch)
        self._written[view.uid] = new
        self._written_at[view.uid] = now
        for change in changes:
            self._post(view, change)
        return None

    def _post(self, view: ObjectView, change: Transition) -> None:
        level = logging.WARNING if change.warning else logging.INFO
        log.log(level, "%s %s/%s: %s", view.kind, view.namespace, view.name, change.event_message)
        self.post_event(view.reference(), "Warning" if change.warning else "Normal", change.reason, change.event_message)


class Controller:
    """What every controller works with: the configuration, the API, the watch caches, the parsed
    specs, the status writer and the queue (for later visits)."""

    def __init__(self, cfg: OperatorConfig, kube: Kube, ix: Indexes, specs: SpecCache, writer: StatusWriter, queue: WorkQueue[Key]) -> None:
        self.cfg = cfg
        self.kube = kube
        self.ix = ix
        self.specs = specs
        self.writer = writer
        self.queue = queue

    async def write_status(self, key: Key, view: ObjectView, plural: str, new: dict[str, Any], changes: list[Transition]) -> None:
        """Write the status, or look at the object again once its details may be written."""
        wait = await self.writer.write(view, plural, new, changes)
        if wait is not None:
            self.queue.add_after(key, wait)


class ChildApplier:
    """Applies the rendered children (ConfigMap, Service, Deployment) that differ from what the watch
    caches show, remembering each apply until the watch shows it (or a grace period passes)."""

    def __init__(self, kube: Kube, queue: WorkQueue[Key]) -> None:
        self.kube = kube
        self.queue = queue
        # (kind, ns, name) -> ("uid/render hash" applied, when): an apply the watch has not shown yet.
        self._applied: dict[tuple[str, str, str], tuple[str, float]] = {}

    def child_deleted(self, kind: str, namespace: str, name: str) -> None:
        self._applied.pop((kind, namespace, name), None)

    async def apply(
        self,
        key: Key,
        uid: str,
        hashes: Mapping[str, str],
        names: Mapping[str, str],
        children: Mapping[str, ChildView],
        render: Callable[[], Rendered | RenderedPool],
    ) -> tuple[str, str] | None:
        """Apply each child whose render hash (`hashes`, kind -> hash in apply order) the cached one lacks;
        None, or (reason, message) when the API refuses one. `render` is called only when something is applied."""
        rendered: Rendered | RenderedPool | None = None
        namespace = key[1]
        for kind in hashes:  # in apply order
            current = children.get(kind)
            want = hashes[kind]
            if current is not None and current.render_hash == want and current.owner_uid == uid:
                continue
            name = names[kind]
            if current is None:
                applied, at = self._applied.get((kind, namespace, name), ("", 0.0))
                wait = at + APPLIED_GRACE_SECONDS - time.monotonic()
                if applied == f"{uid}/{want}" and wait > 0:
                    # Applied moments ago; the watch has not shown it yet. Looked at again after the
                    # grace: a child deleted as it was applied (the garbage collector taking the
                    # previous owner's) is applied again then.
                    self.queue.add_after(key, wait)
                    continue
            if rendered is None:
                rendered = render()
            obj = next(c for c in rendered.children if c["kind"] == kind)
            try:
                await self.kube.apply(obj, force=current is not None)
            except KubeError as err:
                if err.status == 409:
                    return ("ChildConflict", f"{kind} {name} exists and is not managed by this {key[0]}: {err.message}")
                if err.status in (400, 403, 422):
                    return ("ApplyFailed", f"{kind} {name}: {err.message}")
                raise
            self._applied[(kind, namespace, name)] = (f"{uid}/{want}", time.monotonic())
            log.info("%s %s/%s: applied %s %s", key[0], namespace, key[2], kind, name)
        return None
