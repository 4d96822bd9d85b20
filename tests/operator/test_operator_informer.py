"""The children's caches: grouped by worker, and a fresh list reports what disappeared as deleted."""

from __future__ import annotations

import asyncio
from typing import Any

from wasminfer_operator.handmade.informer import ByWorker, Informer
from wasminfer_operator.observe import ChildView


def dep(name: str, worker: str, h: str = "h1") -> ChildView:
    return ChildView("Deployment", name, worker, "uid", h)


def test_by_worker_groups_and_moves() -> None:
    store: ByWorker[ChildView] = ByWorker()
    store.put("ns", dep("a", "w1"))
    store.put("ns", dep("b", "w1"))
    store.put("other", dep("a", "w1"))
    assert sorted(v.name for v in store[("ns", "w1")]) == ["a", "b"] and len(store) == 2
    store.put("ns", dep("a", "w2"))  # relabelled to another worker
    assert [v.name for v in store[("ns", "w1")]] == ["b"] and [v.name for v in store[("ns", "w2")]] == ["a"]
    assert store.remove("ns", "b") is not None and ("ns", "w1") not in store
    assert store.remove("ns", "nope") is None
    store.put("ns", dep("orphan", ""))  # no worker label: not cached
    assert ("ns", "") not in store


async def test_relist_reports_deletions_in_its_own_namespace_only() -> None:
    store: ByWorker[ChildView] = ByWorker()
    seen: list[tuple[str, str, str]] = []

    def changed(kind: str, ns: str, view: ChildView) -> None:
        seen.append((kind, ns, view.name))

    def no_api(**_: Any) -> Any:
        raise AssertionError("not called")

    loop = asyncio.get_running_loop()
    ns1 = Informer("Deployment", no_api, lambda b: dep("x", "w"), "sel", loop, changed, store, namespace="ns1")
    ns2 = Informer("Deployment", no_api, lambda b: dep("x", "w"), "sel", loop, changed, store, namespace="ns2")
    ns1._replace({("ns1", "a"): dep("a", "wa"), ("ns1", "b"): dep("b", "wb")})
    ns2._replace({("ns2", "c"): dep("c", "wc")})
    assert ns1.synced.is_set() and ns2.synced.is_set()
    seen.clear()
    ns1._replace({("ns1", "a"): dep("a", "wa", "h2")})  # b vanished while the watch was broken
    assert sorted(seen) == [("ADDED", "ns1", "a"), ("DELETED", "ns1", "b")]
    assert [v.render_hash for v in store[("ns1", "wa")]] == ["h2"]
    assert ("ns2", "wc") in store, "another namespace's objects are not touched"
    ns1._apply("DELETED", "ns1", dep("a", "wa"))
    assert ("ns1", "wa") not in store and seen[-1] == ("DELETED", "ns1", "a")
