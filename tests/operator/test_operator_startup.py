"""Starting the operator: a liveness port already in use stops it with a clear error before it asks
for the Lease; after a start, no worker status is written before kopf's indexes are filled."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakeapi import FakeAPI
from kubernetes import client
from opbuilders import model_spec, worker_spec

from wasminfer_operator.controllers.shared import Indexes
from wasminfer_operator.handmade.informer import ByWorker
from wasminfer_operator.kube import Kube
from wasminfer_operator.observe import object_view
from wasminfer_operator.profiles import load_operator_config
from wasminfer_operator.reconcile import Reconciler

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    server = FakeAPI().start()
    yield server
    server.close()


def test_a_taken_liveness_port_stops_the_operator_before_it_asks_for_the_lease(api: FakeAPI, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "wasminfer_operator.main", "--kubeconfig", str(api.write_kubeconfig(tmp_path / "kubeconfig")),
             "--liveness", f"http://127.0.0.1:{port}/healthz", "--log-format", "text"],
            capture_output=True, text=True, timeout=60, cwd=REPO,
        )  # fmt: skip
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"--liveness http://127.0.0.1:{port}/healthz: cannot listen on 127.0.0.1 port {port}" in run.stdout + run.stderr
    assert api.lease_requests() == []


def body(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    meta = {"namespace": "ns", "name": name, "uid": f"uid-{name}", "generation": 1, "resourceVersion": "1"}
    return {"apiVersion": "wasminfer.dev/v1alpha1", "kind": kind, "metadata": meta, "spec": spec}


def worker_writes(api: FakeAPI, events: list[tuple[Any, ...]]) -> list[str]:
    """The worker's status patches and the events about it, as JSON."""
    with api.lock:
        patches = [json.dumps(b) for m, path, b in api.bodies if "/wasmworkers/w/status" in path]
    return patches + [json.dumps(e) for e in events if e[0]["metadata"]["name"] == "w"]


async def test_no_worker_status_before_the_indexes_are_filled(api: FakeAPI) -> None:
    worker = object_view(body("WasmWorker", "w", worker_spec(models=["m"])))
    model = object_view(body("InferenceModel", "m", model_spec()))
    # As right after a start: kopf has listed the workers, not yet the models.
    ix = Indexes(workers={worker.key: [worker]}, models={}, model_users={("ns", "m"): ["w"]},
                 deployments=ByWorker(), services=ByWorker(), config_maps=ByWorker(), pods=ByWorker())  # fmt: skip
    kube = Kube(client.ApiClient(client.Configuration(host=api.url)), threads=2)
    events: list[tuple[Any, ...]] = []  # what kopf.event would post
    r = Reconciler(load_operator_config(env={}), kube, ix, concurrency=2, post_event=lambda *e: events.append(e))
    r.start()
    try:
        r.become_leader()  # queues every worker the index holds
        await asyncio.sleep(0.5)
        assert worker_writes(api, events) == [], "wrote status before the models were known"

        ix.models[model.key] = [model]  # the index is filled; then kopf delivers the first events
        r.model_event(None, model)
        for _ in range(100):
            if worker_writes(api, events):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"no worker status written: {api.requests}")
        assert not any("ModelNotFound" in w for w in worker_writes(api, events)), worker_writes(api, events)
    finally:
        await r.stop()
        kube.close()
