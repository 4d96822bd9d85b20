"""Named models: compiled once when the runtime starts, shared by every worker allowed to use them.

`load_by_name` from a guest is a dictionary lookup here; the graph's execution contexts come from
a pool the backend keeps, so a request never pays for compilation or buffer allocation.
"""

from __future__ import annotations

import logging
import threading
import time

from wasminfer_runtime.backends import get_backend
from wasminfer_runtime.backends.base import BackendError, Graph
from wasminfer_runtime.config import ModelConfig
from wasminfer_runtime.metrics import Metrics

log = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """A named model that cannot be served; the message names the model, its file and the reason."""


class ModelRegistry:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._graphs: dict[str, Graph] = {}
        self._configs: dict[str, ModelConfig] = {}
        self._lock = threading.Lock()

    def load(self, cfg: ModelConfig) -> None:
        """Read and compile a model (blocking; seconds for large models)."""
        with self._lock:
            if cfg.name in self._graphs:
                raise ModelLoadError(f"model {cfg.name!r}: a model of this name is already loaded")
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
            graph = get_backend(backend_name).load_model(cfg)
        except BackendError as err:
            raise ModelLoadError(f"model {cfg.name!r} ({files}): {err}") from None
        elapsed = time.perf_counter() - started
        with self._lock:
            self._graphs[cfg.name] = graph
            self._configs[cfg.name] = cfg
        self.metrics.model_load_seconds.labels(cfg.name).set(elapsed)
        self.metrics.model_ready.labels(cfg.name).set(1)
        log.info("model %s ready in %.2f s", cfg.name, elapsed)

    def is_loaded(self, name: str) -> bool:
        return name in self._graphs

    def names(self) -> list[str]:
        return sorted(self._graphs)

    def get(self, name: str) -> Graph | None:
        """The compiled graph of a named model; a lookup, called on the request path."""
        return self._graphs.get(name)

    def config(self, name: str) -> ModelConfig | None:
        return self._configs.get(name)
