"""Prometheus metrics of the runtime, served at /metrics.

One registry per process (a module-level one would make tests that start several servers share
counters); everything that records takes a `Metrics` instance.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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
            "wasminfer_model_load_seconds", "Time it took to load and compile a named model", ["model"], registry=r
        )
        self.model_ready = Gauge("wasminfer_model_ready", "1 when a named model is loaded", ["model"], registry=r)
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
        self.worker_ready = Gauge("wasminfer_worker_ready", "1 when a worker's module is compiled", ["worker"], registry=r)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
