"""Named models: loaded once when the runtime starts, shared by every worker allowed to use them.

Where models run is the runtime's `model_isolation`:
- `process` (the server's default): each named model in its own model host process, and the
  models a worker's guests `load` in one host per worker, capped at that worker's memory limit.
- `in-process`: in the runtime itself (`wasminfer run`, a one-shot command).
A `remote` model runs on a model server; loading it is waiting until the server has it ready.
In a pod's serving process (`serve --processes N`), a named model's host is the supervisor's,
shared by all of them (`links`); loading it is waiting until that host is ready.

Either way `load_by_name` from a guest is a dictionary lookup here, and execution contexts come
from a pool, so a request never pays for compilation or buffer allocation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

from wasminfer_runtime.backends import get_backend
from wasminfer_runtime.backends.base import Backend, BackendError, Graph, ShapeBounds
from wasminfer_runtime import formats
from wasminfer_runtime.config import BackendName, Device, ModelConfig, ModelFormat
from wasminfer_runtime.metrics import Metrics
from wasminfer_runtime.modelhost.client import RemoteGraph
from wasminfer_runtime.modelhost.link import HostLink
from wasminfer_runtime.modelhost.supervisor import STOP_SECONDS, ModelHost

log = logging.getLogger(__name__)

Isolation = Literal["process", "in-process"]
ModelStateHook = Callable[[str, str, str | None], None]  # (model, state, reason)
_MIB = 1024 * 1024


class ModelLoadError(Exception):
    """A named model that cannot be served; the message names the model, its file and the reason."""


class ModelRegistry:
    def __init__(self, metrics: Metrics, isolation: Isolation = "in-process",
                 on_state: ModelStateHook | None = None, poll_us: int = 0,
                 links: Mapping[str, HostLink] | None = None, watch: ModelStateHook | None = None) -> None:
        self.metrics = metrics
        self.isolation = isolation
        self.poll_seconds = poll_us / 1e6
        self.on_state = on_state
        self.watch = watch  # every state of a named model's host, first start included
        self._graphs: dict[str, Graph] = {}
        self._configs: dict[str, ModelConfig] = {}
        self._hosts: dict[str, ModelHost] = {}  # named model -> its host
        self._links = dict(links or {})  # named model -> the supervisor's host of it
        self._guest_hosts: dict[str, ModelHost] = {}  # worker -> the host of its guests' loads
        self._lock = threading.Lock()
        self._closing = threading.Event()  # ends the waits for model servers

    def is_linked(self, name: str) -> bool:
        """The model is hosted by the supervisor of several serving processes, not loaded here."""
        return name in self._links

    def load(self, cfg: ModelConfig) -> None:
        """Read and compile a model (blocking; seconds for large models), or wait for a remote model's
        server to have it ready (blocking until it has, or the registry closes)."""
        with self._lock:
            if cfg.name in self._graphs:
                raise ModelLoadError(f"model {cfg.name!r}: a model of this name is already loaded")
        if cfg.remote is not None:
            self._load_remote(cfg)
            return
        if cfg.name in self._links:
            self._load_linked(cfg, self._links[cfg.name])
            return
        files = ", ".join(str(f) for f in cfg.files)
        for f in cfg.files:
            if not f.is_file():
                raise ModelLoadError(f"model {cfg.name!r}: file {f} does not exist")
        self.metrics.model_ready.labels(cfg.name).set(0)
        backend_name = cfg.resolved_backend
        log.info("loading model %s (%s on %s %s) from %s", cfg.name, cfg.format.value, backend_name.value,
                 cfg.device.value, files)
        started = time.perf_counter()
        try:
            hosted = self.isolation == "process" and cfg.format in formats.HOSTED
            graph = self._load_hosted(cfg) if hosted else get_backend(backend_name).load_model(cfg)
        except BackendError as err:
            raise ModelLoadError(f"model {cfg.name!r} ({files}): {err}") from None
        elapsed = time.perf_counter() - started
        with self._lock:
            self._graphs[cfg.name] = graph
            self._configs[cfg.name] = cfg
        self.metrics.model_load_seconds.labels(cfg.name).set(elapsed)
        self.metrics.model_ready.labels(cfg.name).set(1)
        log.info("model %s ready in %.2f s", cfg.name, elapsed)

    def _load_remote(self, cfg: ModelConfig) -> None:
        from wasminfer_runtime.oip.client import RemoteModelGraph  # only runtimes with remote models need it

        self.metrics.model_ready.labels(cfg.name).set(0)
        graph = RemoteModelGraph(cfg)
        log.info("model %s is %s", cfg.name, graph.where())
        started = time.perf_counter()
        try:
            graph.wait_ready(self._closing)
        except BackendError as err:
            raise ModelLoadError(f"model {cfg.name!r}: {err}") from None
        with self._lock:
            self._graphs[cfg.name] = graph
            self._configs[cfg.name] = cfg
        self.metrics.model_load_seconds.labels(cfg.name).set(time.perf_counter() - started)
        self.metrics.model_ready.labels(cfg.name).set(1)
        log.info("model %s ready: %s answers", cfg.name, graph.where())

    def _load_linked(self, cfg: ModelConfig, link: HostLink) -> None:
        """A model the supervisor's host loads: ready when that host is (it reports its own load)."""
        link.on_state = lambda state, reason: self._host_state(cfg.name, state, reason)
        try:
            link.wait_ready(self._closing)
        except BackendError as err:
            raise ModelLoadError(f"model {cfg.name!r}: {err}") from None
        graph = RemoteGraph(link, 0, cfg.name, ShapeBounds(cfg.options), cfg.options.pool_size, owned=False)
        with self._lock:
            self._graphs[cfg.name] = graph
            self._configs[cfg.name] = cfg
        self.metrics.model_ready.labels(cfg.name).set(1)

    def _load_hosted(self, cfg: ModelConfig) -> Graph:
        # The host's working directory is its own: hand it absolute paths.
        absolute = cfg.model_copy(update={"files": [f.resolve() for f in cfg.files]})
        memory = (cfg.memory_mib or 0) * _MIB
        host = ModelHost(cfg.name, backends=[cfg.resolved_backend], memory_bytes=memory, model=absolute,
                         on_state=lambda state, reason: self._host_state(cfg.name, state, reason),
                         poll_seconds=self.poll_seconds)
        with self._lock:
            self._hosts[cfg.name] = host
        host.start()
        host.wait_ready(None)
        return RemoteGraph(host, 0, cfg.name, ShapeBounds(cfg.options), cfg.options.pool_size, owned=False)

    def _host_state(self, model: str, state: str, reason: str | None) -> None:
        """A named model's host changed state: the metrics and the runtime's status follow."""
        if self.watch is not None:
            self.watch(model, state, reason)
        host: ModelHost | HostLink | None = self._hosts.get(model)
        if host is not None and state == "restarting":  # a shared host's restarts are its supervisor's to count
            self.metrics.model_host_restarts.labels(model).inc()
        host = host or self._links.get(model)
        if host is not None and host.restarts:  # the first start is reported by load()
            self.metrics.model_ready.labels(model).set(1 if state == "ready" else 0)
            if self.on_state is not None:
                self.on_state(model, state, reason)

    def is_loaded(self, name: str) -> bool:
        return name in self._graphs

    def names(self) -> list[str]:
        return sorted(self._graphs)

    def get(self, name: str) -> Graph | None:
        """The graph of a named model; a lookup, called on the request path."""
        return self._graphs.get(name)

    def config(self, name: str) -> ModelConfig | None:
        return self._configs.get(name)

    def mark_missing(self, cfg: ModelConfig) -> None:
        """A model named on `wasminfer run`'s command line whose file is not there: its guest finds out at
        load_by_name (WasmEdge's model_not_found), as it would under WasmEdge."""
        with self._lock:
            self._configs[cfg.name] = cfg

    def is_missing(self, name: str) -> bool:
        return name in self._configs and name not in self._graphs

    def host(self, name: str) -> ModelHost | None:
        """The process a named model runs in (None in-process)."""
        return self._hosts.get(name)

    def guest_backend(self, worker: str, name: BackendName, allowed: Sequence[BackendName],
                      memory_bytes: int) -> Backend:
        """What loads the models a worker's guests pass to `load`."""
        if self.isolation != "process":
            return get_backend(name)
        with self._lock:
            host = self._guest_hosts.get(worker)
            if host is None:
                host = ModelHost(f"{worker}.load", backends=allowed, memory_bytes=memory_bytes,
                                 poll_seconds=self.poll_seconds)
                self._guest_hosts[worker] = host
        return _HostedBackend(host, name)

    def close(self) -> None:
        """Stop every model host (each exits once its lifeline closes), and every wait for a model server."""
        self._closing.set()
        with self._lock:
            remote = [g for name, g in self._graphs.items() if self._configs[name].remote is not None]
            hosts = list(self._hosts.values()) + list(self._guest_hosts.values())
        for graph in remote:
            graph.close()
        for h in hosts:  # all at once: shutdown has a grace period to keep
            h.stop()
        end = time.monotonic() + STOP_SECONDS
        for h in hosts:
            h.wait_stopped(end - time.monotonic())


class _HostedBackend(Backend):
    """A backend inside a worker's model host, for the models its guests load."""

    def __init__(self, host: ModelHost, name: BackendName) -> None:
        self.host = host
        self.name = name.value
        self._backend = name

    def load_model(self, cfg: ModelConfig) -> Graph:
        raise BackendError("named models load in their own hosts")

    def load_bytes(self, fmt: ModelFormat, parts: Sequence[bytes], device: Device) -> Graph:
        return self.host.load_bytes(self._backend, fmt, parts, device, f"(load:{fmt.value})")
