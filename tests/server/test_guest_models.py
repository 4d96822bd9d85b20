"""A worker that passes a client's model to wasi-nn `load`: a model whose weights name a file
gets errno invalid_argument and never the file's bytes, and the worker serves right after."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import set_external_data

from wasminfer_runtime.config import RuntimeConfig
from wasminfer_runtime.wws import load_wws_folder

from .support import ServerThread, put_worker, request, wait_ready

Serve = Callable[[RuntimeConfig], ServerThread]
N = 64

LOAD_TOML = """name = "load"
binary_body = "base64"
[vars]
INPUT_DIMS = "1,{n}"
[features.wasi_nn]
allowed_backends = ["{backend}"]
"""


def add_model(location: str | None) -> bytes:
    """y = x + w, w [1,N] f32: ones, or read from `location` (ONNX external data)."""
    w = numpy_helper.from_array(np.ones((1, N), np.float32), "w")
    if location is not None:
        set_external_data(w, location, offset=0, length=4 * N)
        w.ClearField("raw_data")
    io = [helper.make_tensor_value_info(v, TensorProto.FLOAT, [1, N]) for v in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "add", io[:1], io[1:], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    data: bytes = model.SerializeToString()
    return data


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_model_naming_a_file_gets_invalid_argument_and_the_next_request_is_served(
        guests: dict[str, Path], tmp_path: Path, serve: Serve, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str], backend: str) -> None:
    # A file in the server's working directory that no worker was granted.
    private = tmp_path / "private"
    private.mkdir()
    secret = np.frombuffer(b"secret of the host, no worker's to read!".ljust(4 * N, b"#"), np.uint8)
    (private / "secret.bin").write_bytes(secret.tobytes())
    monkeypatch.chdir(private)
    site = tmp_path / "site"
    put_worker(site, "load.wasm", guests["nn_load"], LOAD_TOML.format(n=N, backend=backend))
    server = serve(load_wws_folder(site))
    wait_ready(server.url)

    with caplog.at_level(logging.WARNING, logger="wasminfer_runtime.backends.guest_models"):
        reply = request(server.url + "/load", method="POST", body=add_model("secret.bin"))
    assert reply.status == 200, reply.body
    assert reply.json() == {"step": "load", "errno": 1}
    assert secret.tobytes().hex() not in reply.body.decode()
    # The operator sees why: logged here, or on stderr by a model-host process that loads for workers.
    logged = caplog.text + capfd.readouterr().err
    assert "refused" in logged and "secret.bin" in logged and "self-contained" in logged

    good = request(server.url + "/load", method="POST", body=add_model(None))
    assert good.status == 200, good.body
    assert good.json() == {"output": np.ones(N, np.float32).tobytes().hex()}
