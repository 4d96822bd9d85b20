"""Prometheus metrics of the runtime, served at /metrics.

One registry per server (a module-level one would make tests that start several servers share
counters); everything that records takes a `Metrics` instance.

With several serving processes (`serve --processes N`), every process, and the supervisor that
runs the pod's model hosts, writes its values to files in one folder (prometheus-client's
multiprocess mode, `PROMETHEUS_MULTIPROC_DIR`), and `/metrics` in any process reads them all:
counters and histograms are summed over the processes, a ready gauge is the lowest over those
alive (ready only where every process is), a load time the highest.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def share_between_processes(folder: str) -> None:
    """Write this process's values to `folder`, for the pod's /metrics; before any Metrics exists."""
    os.environ[MULTIPROCESS_DIR] = folder
    # prometheus-client picks its value class at import, and this process imported it before it
    # knew the folder.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "wasminfer_requests", "HTTP requests served by workers", ["worker", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "wasminfer_request_duration_seconds",
            "Time to serve one request, per worker and status",
            ["worker", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.wasi_nn_calls = Counter(
            "wasminfer_wasi_nn_calls", "wasi-nn host calls, per function and errno", ["function", "errno"], registry=r
        )
        self.model_load_seconds = Gauge(
            "wasminfer_model_load_seconds", "Time it took to load and compile a named model", ["model"], registry=r,
            multiprocess_mode="livemax",
        )
        self.model_ready = Gauge("wasminfer_model_ready", "1 when a named model is loaded", ["model"], registry=r,
                                 multiprocess_mode="livemin")
        self.model_host_restarts = Counter(
            "wasminfer_model_host_restarts", "Restarts of a named model's host process after it died", ["model"],
            registry=r,
        )
        self.inference_seconds = Histogram(
            "wasminfer_inference_duration_seconds",
            "Time of one compute() per model",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.worker_ready = Gauge("wasminfer_worker_ready", "1 when a worker's module is compiled", ["worker"], registry=r,
                                  multiprocess_mode="livemin")

    def exposition(self) -> bytes:
        folder = os.environ.get(MULTIPROCESS_DIR)
        if not folder:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess  # only a pod of several processes reads the folder

        pod = CollectorRegistry()
        multiprocess.MultiProcessCollector(pod, folder)  # type: ignore[no-untyped-call]
        return generate_latest(pod)


def forget_process(pid: int) -> None:
    """A serving process died: its gauges no longer count (its counters do)."""
    folder = os.environ.get(MULTIPROCESS_DIR)
    if folder:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, folder)  # type: ignore[no-untyped-call]
