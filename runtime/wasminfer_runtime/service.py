"""What a serving runtime holds: the engine, the named models, the compiled workers and their state.

Models and workers load in background threads so the HTTP server answers /healthz at once; a
worker or model that fails to load is reported (logs, /readyz, 503 on its routes) and the others
are served. Invocations run in their own thread pool: wasm execution releases the GIL.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from wasminfer_runtime import capi
from wasminfer_runtime.admission import WorkerGate, concurrency_for
from wasminfer_runtime.config import ConfigError, ModelConfig, RuntimeConfig, WorkerConfig
from wasminfer_runtime.engine import RuntimeEngine
from wasminfer_runtime.component_executor import new_executor
from wasminfer_runtime.executor import WorkerExecutor
from wasminfer_runtime.kv import KvStores
from wasminfer_runtime.metrics import Metrics
from wasminfer_runtime.modelhost.link import HostLink
from wasminfer_runtime.models import ModelRegistry
from wasminfer_runtime.runtimes import SourceStore
from wasminfer_runtime.supply.sources import Supply
from wasminfer_runtime.workpool import WorkPool

log = logging.getLogger(__name__)

# Requests still running this long before the shutdown grace ends are stopped (504), so their
# answers go out within the grace (at most a quarter of it).
STOP_MARGIN_SECONDS = 1.0

State = Literal["loading", "ready", "restarting", "failed"]


def default_threads(processes: int = 1) -> int:
    """Concurrent invocations of one of `processes` serving processes: enough to overlap a few slow
    guests with fast ones, the machine's share of each process."""
    return max(4, -(-2 * (os.cpu_count() or 1) // processes))


@dataclass
class Status:
    state: State = "loading"
    error: str | None = None
    seconds: float | None = None

    def as_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"state": self.state}
        if self.error is not None:
            doc["error"] = self.error
        if self.seconds is not None:
            doc["seconds"] = round(self.seconds, 3)
        return doc


@dataclass(frozen=True)
class Readiness:
    workers: dict[str, Status]
    models: dict[str, Status]
    pending: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return not self.pending and not self.failed

    def as_json(self) -> dict[str, object]:
        return {
            "ready": self.ready,
            "pending": self.pending,
            "failed": self.failed,
            "workers": {n: s.as_json() for n, s in self.workers.items()},
            "models": {n: s.as_json() for n, s in self.models.items()},
        }


@dataclass(frozen=True)
class Unavailable:
    """Why a worker cannot take a request now."""

    reason: str
    failed: bool  # False while something is still loading


class Service:
    def __init__(self, cfg: RuntimeConfig, metrics: Metrics, *, threads: int | None = None,
                 links: Mapping[str, HostLink] | None = None) -> None:
        """links: the named models whose hosts a supervisor runs for several serving processes."""
        self.cfg = cfg
        self.metrics = metrics
        self.engine = RuntimeEngine(cfg.server.cache_dir, metrics)
        self.models = ModelRegistry(metrics, cfg.server.model_isolation, on_state=self._model_host_state,
                                    poll_us=cfg.server.model_host_poll_us, links=links)
        self.on_change: Callable[[Readiness], None] | None = None  # readiness changed (told to the other processes)
        self._change_lock = threading.Lock()
        self.workers: dict[str, WorkerConfig] = {w.name: w for w in cfg.workers}
        self._executors: dict[str, WorkerExecutor] = {}
        self._worker_status = {w.name: Status() for w in cfg.workers}
        self._model_status = {m.name: Status() for m in cfg.models}
        self._lock = threading.Lock()
        self._remaining = len(cfg.workers) + len(cfg.models)
        self._started_at = 0.0
        self.loaded = threading.Event()  # set once every load has finished, well or badly
        self.closing = False
        # Set when running invocations must end (shutdown): guests asleep in WASI calls wake as timeouts.
        self.stopping = threading.Event()
        self._stop_timer: threading.Timer | None = None
        self.invoke_pool = WorkPool(threads or default_threads(), "wasminfer-invoke")
        self.kv = KvStores(cfg.workers)  # in memory, for this process only
        self.gates = {w.name: WorkerGate(*concurrency_for(w, threads or default_threads())) for w in cfg.workers}
        self._load_pool = ThreadPoolExecutor(2, thread_name_prefix="wasminfer-load")
        self.sources = SourceStore()  # the /src folders of workers that are scripts
        self.supply = Supply(cfg.server)  # OCI pulls and signature checks, before compiling or loading
        for w in cfg.workers:
            metrics.worker_ready.labels(w.name).set(0)
        # (worker, status) -> (request counter, latency histogram); `labels()` costs microseconds.
        self._request_metrics: dict[tuple[str, int], tuple[Any, Any]] = {}

    def record_request(self, worker: str, status: int, seconds: float) -> None:
        """Count one served request in the per-worker, per-status metrics."""
        children = self._request_metrics.get((worker, status))
        if children is None:
            label = str(status)
            children = (self.metrics.requests.labels(worker, label), self.metrics.request_seconds.labels(worker, label))
            self._request_metrics[(worker, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the epoch ticker and the background loads; returns at once."""
        self._started_at = time.monotonic()
        self.engine.start()
        if self._remaining == 0:
            self.loaded.set()
        # Models first: they take longest, and workers only compile (or load from the cache).
        for m in self.cfg.models:
            if m.remote is not None:  # waits for its model server as long as it takes: a thread of its own
                threading.Thread(target=self._load_model, args=(m,), name=f"wasminfer-remote-{m.name}", daemon=True).start()
            else:
                self._load_pool.submit(self._load_model, m)
        for w in self.cfg.workers:
            self._load_pool.submit(self._load_worker, w)

    def begin_shutdown(self) -> None:
        """The server stopped listening: requests in flight may finish within the grace, and the
        invocations still running just before it ends are stopped, so their 504s still go out."""
        grace = self.cfg.server.shutdown_grace_seconds
        with self._lock:
            if self._stop_timer is not None or self.stopping.is_set():
                return
            timer = self._stop_timer = threading.Timer(grace - min(STOP_MARGIN_SECONDS, grace / 4),
                                                       self.stop_invocations)
        timer.daemon = True
        timer.start()

    def stop_invocations(self) -> None:
        """End every running invocation now, as a timeout (they keep their deadlines otherwise)."""
        self.stopping.set()  # guests asleep in poll_oneoff (wasi_deadline.py)
        # Guests running wasm: pass every store's epoch deadline at once. A deadline is at most
        # the largest worker timeout in ticks from when its store began.
        with self._lock:
            ticks = max((e.deadline_ticks for e in self._executors.values()), default=0)
        engine = capi.address(self.engine.engine.ptr())
        for _ in range(ticks + 1):
            capi.engine_increment_epoch(engine)

    def close(self) -> None:
        """Stop taking work, and end the invocations still running: by now nobody waits for them."""
        self.closing = True
        with self._lock:
            timer = self._stop_timer
        if timer is not None:
            timer.cancel()
        self.stop_invocations()
        self._load_pool.shutdown(wait=False, cancel_futures=True)
        # The epoch ticker must outlive the invocations: it is what ends a guest that loops.
        self.invoke_pool.shutdown(wait=True)
        self.sources.close()
        self.models.close()
        self.engine.close()

    # -- loading ---------------------------------------------------------------------------------

    def _load_model(self, cfg: ModelConfig) -> None:
        t0 = time.monotonic()
        try:
            if not self.models.is_linked(cfg.name):  # a model hosted for all serving processes was pulled there
                cfg = self.supply.prepare_model(cfg)
            self.models.load(cfg)
        except Exception as err:  # a failed load is reported, never fatal to the server
            self._finish(self._model_status, cfg.name, "model", err, t0)
        else:
            self._finish(self._model_status, cfg.name, "model", None, t0)

    def _load_worker(self, cfg: WorkerConfig) -> None:
        t0 = time.monotonic()
        try:
            if cfg.name in self.cfg.worker_errors:
                raise ConfigError(self.cfg.worker_errors[cfg.name])
            cfg = self.supply.prepare_worker(cfg)
            executor = new_executor(self.engine, self.models, self.sources.prepare(cfg), stopping=self.stopping)
        except Exception as err:
            self._finish(self._worker_status, cfg.name, "worker", err, t0)
        else:
            with self._lock:
                self._executors[cfg.name] = executor
            self.metrics.worker_ready.labels(cfg.name).set(1)
            self._finish(self._worker_status, cfg.name, "worker", None, t0)

    def _model_host_state(self, model: str, state: str, reason: str | None) -> None:
        """A loaded model's host died, restarted or gave up: its status says so until it serves again."""
        if state == "ready":
            status = Status("ready")
        elif state == "failed":
            status = Status("failed", reason)
        else:
            status = Status("restarting", reason)
        with self._lock:
            self._model_status[model] = status
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            with self._change_lock:  # in order: a later state is never overwritten by an earlier one
                self.on_change(self.readiness())

    def _finish(self, table: dict[str, Status], name: str, kind: str, err: Exception | None, t0: float) -> None:
        seconds = time.monotonic() - t0
        if err is None:
            status = Status("ready", None, seconds)
            # The model registry logs its own loads.
            log.log(logging.DEBUG if kind == "model" else logging.INFO, "%s %s ready in %.2f s", kind, name, seconds)
        else:
            text = str(err) or type(err).__name__
            status = Status("failed", text, seconds)
            log.error("%s %s failed to load: %s", kind, name, text)
        with self._lock:
            table[name] = status
            self._remaining -= 1
            done = self._remaining == 0
        self._changed()
        if done:
            self._log_summary()
            self.loaded.set()

    def _log_summary(self) -> None:
        r = self.readiness()
        took = time.monotonic() - self._started_at
        if r.ready:
            log.info("ready in %.2f s: %d worker(s), %d model(s)", took, len(r.workers), len(r.models))
        else:
            log.error("started in %.2f s with failures (serving the rest): %s", took,
                      "; ".join(f"{k}: {v}" for k, v in r.failed.items()))

    # -- queries ---------------------------------------------------------------------------------

    def readiness(self) -> Readiness:
        with self._lock:
            workers = dict(self._worker_status)
            models = dict(self._model_status)
        pending = [f"worker {n}" for n, s in workers.items() if s.state == "loading"]
        pending += [f"model {n}" for n, s in models.items() if s.state in ("loading", "restarting")]
        failed = {f"worker {n}": s.error or "" for n, s in workers.items() if s.state == "failed"}
        failed.update({f"model {n}": s.error or "" for n, s in models.items() if s.state == "failed"})
        return Readiness(workers, models, pending, failed)

    def executor(self, name: str) -> WorkerExecutor | Unavailable:
        """The worker's executor, or why it cannot serve now (its module or one of its models)."""
        with self._lock:
            status = self._worker_status[name]
            executor = self._executors.get(name)
            model_status = {m: self._model_status[m] for m in self.workers[name].wasi_nn.models}
        if status.state == "failed":
            return Unavailable(f"worker {name!r} failed to load: {status.error}", failed=True)
        for model, ms in model_status.items():
            if ms.state == "failed":
                return Unavailable(f"model {model!r}, used by worker {name!r}, failed to load: {ms.error}", True)
        if executor is None:
            return Unavailable(f"worker {name!r} is still loading", failed=False)
        for model, ms in model_status.items():
            if ms.state == "loading":
                return Unavailable(f"model {model!r}, used by worker {name!r}, is still loading", failed=False)
            if ms.state == "restarting":
                return Unavailable(f"model {model!r}, used by worker {name!r}, is restarting: {ms.error}", False)
        return executor
