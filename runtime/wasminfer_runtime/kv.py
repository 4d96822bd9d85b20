"""The wws key/value store: one in-memory string map per namespace, shared by the workers naming it.

As in wws, a worker with `[data.kv] namespace = "x"` (runtime.yaml: `kv: {namespace: x}`) gets the
namespace's state as the request's `kv` when its invocation starts, and the `kv` of a valid
response replaces the whole state when it ends: no merge, no lock across the run. Two overlapping
requests of one namespace both start from the same state and the one that finishes last wins
(the other's writes are lost); requests that do not overlap always see each other's writes.

Beyond wws, a worker's write is refused when the state it returns is larger than its
`limits.max_kv_bytes` (UTF-8 bytes of every key and value): the request gets 500 and the
store keeps its previous state, so a hostile worker cannot grow host memory through its store.
The stores live in the runtime process: nothing is persisted, and each process (each replica)
has its own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from wasminfer_runtime.config import WorkerConfig

State = Mapping[str, str]


class KvRefused(Exception):
    """A worker's new state is not written; the message says why, `kind` is the error's kind."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def kv_size(state: State) -> int:
    """The size a state counts against `max_kv_bytes`: the UTF-8 bytes of its keys and values."""
    return sum(len(k.encode("utf-8")) + len(v.encode("utf-8")) for k, v in state.items())


class KvStore:
    """One namespace. Thread-safe: invocations read and write it from the invocation threads and
    the event loop. A state is never changed in place, only replaced, so readers may keep it."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._lock = threading.Lock()
        self._state: State = {}

    def snapshot(self) -> State:
        with self._lock:
            return self._state

    def replace(self, state: State | None, *, worker: str, limit: int) -> None:
        """Make a worker's returned `state` the namespace's state, or raise KvRefused (the state
        stays as it was)."""
        if state is None:  # wws fails such a response too
            raise KvRefused(
                "invalid_response",
                f"worker {worker!r} returned no 'kv'; a worker with a key/value store (namespace "
                f"{self.namespace!r}) must return its state; the store keeps its previous state",
            )
        size = kv_size(state)
        if size > limit:
            raise KvRefused(
                "kv_too_large",
                f"worker {worker!r} returned a key/value store of {size} bytes for namespace "
                f"{self.namespace!r}, over its limit of {limit} bytes (limits.max_kv_bytes); "
                "the store keeps its previous state",
            )
        frozen = dict(state)  # ours from now on: the caller's mapping may change
        with self._lock:
            self._state = frozen


class KvStores:
    """The namespaces of a runtime's workers, created empty at start (as wws does)."""

    def __init__(self, workers: Iterable[WorkerConfig]) -> None:
        self._by_namespace: dict[str, KvStore] = {}
        self._by_worker: dict[str, KvStore] = {}
        for w in workers:
            if w.kv is not None:
                store = self._by_namespace.setdefault(w.kv.namespace, KvStore(w.kv.namespace))
                self._by_worker[w.name] = store

    def for_worker(self, name: str) -> KvStore | None:
        """The store a worker reads and writes; None when it has none (it sees {} and writes nothing)."""
        return self._by_worker.get(name)
