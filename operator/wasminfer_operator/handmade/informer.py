"""Watch caches of the operator's children (Deployments, Services, ConfigMaps, Pods), kept small.

kopf watches the two custom resources. For the children a plain list-then-watch per kind, in a
thread, through the official client, keeps only the compact views of `observe`: kopf would hold
every listed body until all its caches are filled, which for thousands of pods and Deployments is
most of the operator's memory. The list is read in pages and each object is reduced to its view
at once, so memory stays flat however many children exist. A `410 Gone` (or a broken stream)
leads to a fresh list; objects missing from it are reported deleted.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, Protocol, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from wasminfer_operator.observe import ChildView, PodView, child_view, pod_view
from wasminfer_operator.names import MANAGED_BY, MANAGED_BY_LABEL

log = logging.getLogger("wasminfer.operator.informer")

NsName = tuple[str, str]
PAGE = 100  # objects per list page: the transient memory of a (re)list
WATCH_SECONDS = 300


class View(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def group(self) -> str: ...


V = TypeVar("V", bound=View)


class ByWorker(Mapping[NsName, list[V]], Generic[V]):
    """(namespace, group) -> the views of one kind of that group: a worker's objects, or a model's model
    servers' (`names.server_group`)."""

    def __init__(self) -> None:
        self._groups: dict[NsName, dict[str, V]] = {}
        self._where: dict[NsName, NsName] = {}  # (namespace, object name) -> (namespace, worker)

    def __getitem__(self, key: NsName) -> list[V]:
        return list(self._groups[key].values())

    def __iter__(self) -> Iterator[NsName]:
        return iter(self._groups)

    def __len__(self) -> int:
        return len(self._groups)

    def put(self, namespace: str, view: V) -> None:
        self.remove(namespace, view.name)
        if view.group:
            group = (namespace, view.group)
            self._groups.setdefault(group, {})[view.name] = view
            self._where[(namespace, view.name)] = group

    def find(self, namespace: str, name: str) -> V | None:
        group = self._where.get((namespace, name))
        return self._groups[group].get(name) if group is not None else None

    def remove(self, namespace: str, name: str) -> V | None:
        group = self._where.pop((namespace, name), None)
        if group is None:
            return None
        members = self._groups.get(group, {})
        view = members.pop(name, None)
        if not members:
            self._groups.pop(group, None)
        return view

    def names(self) -> set[NsName]:
        return set(self._where)


Changed = Callable[[str, str, V], None]  # (event type, namespace, view)


class Informer(Generic[V]):
    """One kind, one scope (a namespace or all), one label selector; callbacks run on `loop`."""

    def __init__(
        self,
        kind: str,
        list_fn: Callable[..., Any],
        to_view: Callable[[Mapping[str, Any]], V],
        selector: str,
        loop: asyncio.AbstractEventLoop,
        on_change: Changed[V],
        store: ByWorker[V],
        namespace: str | None = None,
    ) -> None:
        self.kind = kind
        self.namespace = namespace  # None: every namespace
        self.list_fn = list_fn
        self.to_view = to_view
        self.selector = selector
        self.loop = loop
        self.on_change = on_change
        self.store = store
        self.synced = asyncio.Event()
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name=f"informer-{self.kind}-{self.namespace or 'all'}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        rv: str | None = None
        failures = 0
        while not self._stop.is_set():
            try:
                if rv is None:
                    rv = self._list()
                rv = self._watch(rv)
                failures = 0
            except ApiException as err:
                failures += 1
                if err.status == 410:
                    rv = None
                log.warning("%s watch: %s %s; retrying", self.kind, err.status, err.reason)
            except Exception as err:  # a broken stream, a refused connection: the API is elsewhere's problem
                failures += 1
                log.warning("%s watch: %s; retrying", self.kind, err)
            if failures:
                time.sleep(min(2.0**failures, 30.0))

    def _list(self) -> str:
        seen: dict[NsName, V] = {}
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"label_selector": self.selector, "limit": PAGE, "_preload_content": False}
            if token:
                kwargs["_continue"] = token
            page = json.loads(self.list_fn(**kwargs).data)
            for item in page["items"]:
                meta = item["metadata"]
                item.setdefault("kind", self.kind)
                seen[(meta.get("namespace", ""), meta["name"])] = self.to_view(item)
            token = page["metadata"].get("continue")
            if not token:
                self.loop.call_soon_threadsafe(self._replace, seen)
                return str(page["metadata"]["resourceVersion"])

    def _watch(self, rv: str) -> str | None:
        """Streams changes from `rv`; returns the version to continue from, None to list again."""
        resp = self.list_fn(
            label_selector=self.selector,
            watch=True,
            resource_version=rv,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            _request_timeout=WATCH_SECONDS + 30,
            _preload_content=False,
        )
        try:
            for line in iter_resp_lines(resp):  # type: ignore[no-untyped-call]
                if self._stop.is_set():
                    return rv
                event = json.loads(line)
                kind, obj = event["type"], event["object"]
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        return None
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                rv = obj["metadata"]["resourceVersion"]
                if kind == "BOOKMARK":
                    continue
                obj.setdefault("kind", self.kind)
                view = self.to_view(obj)
                self.loop.call_soon_threadsafe(self._apply, kind, obj["metadata"].get("namespace", ""), view)
        finally:
            resp.close()
            resp.release_conn()
        return rv

    # --- on the event loop ---

    def _apply(self, kind: str, namespace: str, view: V) -> None:
        if kind == "DELETED":
            self.store.remove(namespace, view.name)
        elif self.store.find(namespace, view.name) == view:
            return  # a change the operator does not look at (heartbeats, managedFields, ...)
        else:
            self.store.put(namespace, view)
        self.on_change(kind, namespace, view)

    def _replace(self, seen: dict[NsName, V]) -> None:
        mine = {k for k in self.store.names() if self.namespace is None or k[0] == self.namespace}
        for namespace, name in mine - set(seen):
            gone = self.store.remove(namespace, name)
            if gone is not None:
                self.on_change("DELETED", namespace, gone)
        for (namespace, _), view in seen.items():
            self.store.put(namespace, view)
            self.on_change("ADDED", namespace, view)
        if not self.synced.is_set():
            log.info("%s cache filled: %d object(s)", self.kind, len(seen))
            self.synced.set()


class ChildCaches:
    """The kinds of children, cached per worker, model server or pool; informers per namespace, or one for all."""

    SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"  # only what this operator rendered

    def __init__(self) -> None:
        self.deployments: ByWorker[ChildView] = ByWorker()
        self.services: ByWorker[ChildView] = ByWorker()
        self.config_maps: ByWorker[ChildView] = ByWorker()
        self.stateful_sets: ByWorker[ChildView] = ByWorker()  # model pools' replicas
        self.pods: ByWorker[PodView] = ByWorker()
        self.informers: list[Informer[Any]] = []

    def start(
        self,
        api_client: client.ApiClient,
        namespaces: list[str],
        loop: asyncio.AbstractEventLoop,
        on_child: Changed[ChildView],
        on_pod: Changed[PodView],
    ) -> list[asyncio.Event]:
        """Starts the informers; returns their 'cache filled' events."""
        core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
        patterns = any(set("*?![") & set(n) for n in namespaces)
        scopes: list[str | None] = [None] if not namespaces or patterns else list(namespaces)
        for ns in scopes:

            def lister(namespaced: Callable[..., Any], everywhere: Callable[..., Any]) -> Callable[..., Any]:
                return functools.partial(namespaced, ns) if ns is not None else everywhere

            self.informers += [
                Informer("Deployment", lister(apps.list_namespaced_deployment, apps.list_deployment_for_all_namespaces),
                         child_view, self.SELECTOR, loop, on_child, self.deployments, ns),
                Informer("Service", lister(core.list_namespaced_service, core.list_service_for_all_namespaces),
                         child_view, self.SELECTOR, loop, on_child, self.services, ns),
                Informer("ConfigMap", lister(core.list_namespaced_config_map, core.list_config_map_for_all_namespaces),
                         child_view, self.SELECTOR, loop, on_child, self.config_maps, ns),
                Informer("StatefulSet", lister(apps.list_namespaced_stateful_set, apps.list_stateful_set_for_all_namespaces),
                         child_view, self.SELECTOR, loop, on_child, self.stateful_sets, ns),
                Informer("Pod", lister(core.list_namespaced_pod, core.list_pod_for_all_namespaces),
                         pod_view, self.SELECTOR, loop, on_pod, self.pods, ns),
            ]  # fmt: skip
        for informer in self.informers:
            informer.start()
        return [i.synced for i in self.informers]

    def stop(self) -> None:
        for informer in self.informers:
            informer.stop()
