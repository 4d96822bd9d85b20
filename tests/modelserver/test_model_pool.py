"""A model pool: three `wasminfer model-server` replicas, each loading only the models the pool's
placement gives it, and a remote model reached on the replicas that hold it, one of them killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from wasminfer_runtime.backends.base import ElementType
from wasminfer_runtime.config import ModelConfig
from wasminfer_runtime.modelpool import place
from wasminfer_runtime.models import ModelRegistry
from wasminfer_runtime.metrics import Metrics

from .conftest import free_port, model_config, wait_ready

REPLICAS = ["pool-0", "pool-1", "pool-2"]
MODELS = ["fc256", "fc256-onnx", "orientation", "two-headed"]


def get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[str, subprocess.Popen[bytes]]]]:
    tmp = tmp_path_factory.mktemp("pool")
    config = model_config(tmp)
    servers: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
    try:
        for name in REPLICAS:
            port = free_port()
            log = tmp / f"{name}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen([sys.executable, "-m", "wasminfer_runtime", "model-server", str(config), "--port", str(port),
                                         "--grpc-port", "-1", "--pool-replicas", ",".join(REPLICAS), "--pool-replica", name],
                                        stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
            servers[name] = (f"http://127.0.0.1:{port}", proc)
            wait_ready(servers[name][0], proc, log)
        yield servers
    finally:
        for _, proc in servers.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_each_replica_loads_only_its_share(pool: dict[str, tuple[str, subprocess.Popen[bytes]]]) -> None:
    placement = place(MODELS, REPLICAS, copies=2)
    for model, holders in placement.items():
        assert len(holders) == 2
        for name, (url, _) in pool.items():
            status, doc = get(f"{url}/v2/models/{model}")
            if name in holders:
                assert status == 200 and doc["name"] == model
            else:
                assert status == 404, doc
                assert f"replica(s) {', '.join(holders)} of this pool hold it" in str(doc["error"])
    for name, (url, _) in pool.items():
        metrics = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
        loaded = {m for m in MODELS if f'wasminfer_model_ready{{model="{m}"}} 1.0' in metrics}
        assert loaded == {m for m, holders in placement.items() if name in holders}, name


def test_a_remote_model_on_its_holders_survives_one_of_them(pool: dict[str, tuple[str, subprocess.Popen[bytes]]]) -> None:
    holders = place(MODELS, REPLICAS, copies=2)["fc256"]
    cfg = ModelConfig.model_validate({"name": "fc256", "format": "openvino", "remote": {"urls": [pool[h][0] for h in holders]}})
    registry = ModelRegistry(Metrics(), "in-process")
    registry.load(cfg)
    graph = registry.get("fc256")
    assert graph is not None
    x = np.arange(256, dtype=np.float32).reshape(1, 256) / 256

    def infer() -> bytes:
        import ctypes

        ctx = graph.init_context()
        try:
            ctx.set_input(0, ElementType.f32, (1, 256), int(x.ctypes.data), x.nbytes)
            ctx.compute()
            addr, n = ctx.output(0)
            return ctypes.string_at(addr, n)
        finally:
            ctx.close()

    first = [infer() for _ in range(4)]
    assert all(answer == first[0] for answer in first), "every holder answers the same"
    # One holder dies: calls that cannot reach it go to the other, and give the same answer.
    _, proc = pool[holders[0]]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    time.sleep(0.2)
    assert [infer() for _ in range(6)] == [first[0]] * 6
    registry.close()
