"""A component as a wws worker under `wasminfer serve`: the same protocol, TOML and wasi-nn grants
as a core module, through the WIT wasi:nn interfaces; a failing call is an error the worker
reports, and the next request is served."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from wasminfer_runtime.config import RuntimeConfig
from wasminfer_runtime.wws import load_wws_folder

from .support import ROOT, ServerThread, put_worker, request, wait_ready
from .test_guest_models import N, add_model

Serve = Callable[[RuntimeConfig], ServerThread]

TOML = """name = "component"
binary_body = "base64"
[vars]
INPUT_DIMS = "1,{n}"
[features.wasi_nn]
allowed_backends = ["onnxruntime"]
"""


def test_component_worker_serves_over_the_wws_protocol(guests: dict[str, Path], tmp_path: Path, serve: Serve) -> None:
    site = tmp_path / "site"
    put_worker(site, "component.wasm", guests["wws_component"], TOML.format(n=N))
    server = serve(load_wws_folder(site))
    wait_ready(server.url)

    reply = request(server.url + "/component", method="POST", body=add_model(None))
    assert reply.status == 200, reply.body
    assert reply.json() == {"output": np.ones(N, np.float32).tobytes().hex(), "name": "y"}

    bad = request(server.url + "/component", method="POST", body=b"not a model")
    assert bad.status == 200, bad.body
    failure = bad.json()
    assert (failure["step"], failure["code"]) == ("load", 0), failure  # invalid-argument
    assert "not ONNX" in failure["data"], failure

    again = request(server.url + "/component", method="POST", body=add_model(None))
    assert again.status == 200 and again.json()["name"] == "y", again.body


NAMED_TOML = """name = "named"
[vars]
INPUT_DIMS = "1,256"
MODEL = "fc256"
[features.wasi_nn]
allowed_backends = ["openvino"]
[[features.wasi_nn.preload_models]]
backend = "openvino"
provider = { type = "local", dir = "./_models/fc256" }
"""


def test_component_uses_a_named_model_held_by_its_model_host(guests: dict[str, Path], tmp_path: Path, serve: Serve) -> None:
    """Named models live in model-host processes: the named-tensor API asks them for the model's
    signature and its outputs' shapes."""
    import openvino as ov

    folder = ROOT / "examples" / "_models" / "fc256"
    site = tmp_path / "site"
    shutil.copytree(folder, site / "_models" / "fc256")
    put_worker(site, "named.wasm", guests["wws_component"], NAMED_TOML)
    server = serve(load_wws_folder(site))
    wait_ready(server.url)
    reply = request(server.url + "/named", method="POST", body=b"")
    assert reply.status == 200, reply.body
    expected = ov.Core().compile_model(str(folder / "model.xml"), "CPU")(np.zeros((1, 256), np.float32))[0]
    assert reply.json() == {"output": np.asarray(expected, np.float32).tobytes().hex(), "name": "0"}
