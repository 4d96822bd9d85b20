"""wws 1.7's reading of wasi-nn inputs: in a wws folder a 4-D input of an OpenVINO IR model declared
N,C,H,W arrives interleaved (N,H,W,C), unless the worker's TOML says `input_layout = "model"`.

The models here run in model host processes, as `wasminfer serve` runs them; tests/runtime covers
the same rule in-process (runtime.yaml, `wasminfer run`, guest `load`, hostile byte counts).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import openvino as ov
import pytest
from onnx import TensorProto, helper, numpy_helper
from openvino import opset13 as ops

from wasminfer_runtime.config import InputLayout
from wasminfer_runtime.wws import load_wws_folder

from .support import ROOT, ServerThread, put_worker, request, wait_ready

MOBILENET = ROOT / "examples" / "_models" / "mobilenet"


def text_safe_picture(shape: tuple[int, ...], seed: int) -> np.ndarray[Any, Any]:
    """Random f32 values in 0.125..3 whose bytes are all printable ASCII, in any element order: the
    request body reaches a wws worker as text whatever the server does with binary bodies."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0x30, 0x7B, size=(*shape, 4), dtype=np.uint8)
    raw[..., 3] = rng.choice(np.array([0x3E, 0x3F, 0x40], np.uint8), size=shape)  # sign 0, exponent near 127
    return raw.view(np.float32).reshape(shape)


def nhwc(picture: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The same picture, interleaved (N,H,W,C) in memory."""
    return np.ascontiguousarray(picture.transpose(0, 2, 3, 1))


PLANAR = text_safe_picture((1, 3, 2, 2), seed=1)
INTERLEAVED = nhwc(PLANAR)


def write_first_channel_models(folder: Path) -> None:
    """`first` (IR) and `first-onnx`: input [1,3,2,2] f32, output its channel 0 ([1,2,2]). What the
    output holds shows how the host ordered the guest's bytes (tests/runtime/test_wasinn_layout.py
    has more models: other element types and ranks)."""
    x = ops.parameter([1, 3, 2, 2], ov.Type.f32, name="input")
    y = ops.gather(x, ops.constant(np.int64(0)), ops.constant(np.int64(1)))
    (folder / "first").mkdir(parents=True)
    ov.save_model(ov.Model([y], [x], "first"), folder / "first" / "model.xml", compress_to_fp16=False)
    node = helper.make_node("Gather", ["x", "i"], ["y"], axis=1)
    graph = helper.make_graph(
        [node], "first", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2])],
        [numpy_helper.from_array(np.array(0, np.int64), "i")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    (folder / "first-onnx").mkdir()
    onnx.save(model, str(folder / "first-onnx" / "model.onnx"))


def worker_toml(model: str, dims: str, layout: str | None = None) -> str:
    line = f'input_layout = "{layout}"\n' if layout else ""
    return f"""[vars]
MODEL = "{model}"
INPUT_DIMS = "{dims}"
[features.wasi_nn]
allowed_backends = ["openvino"]
{line}[[features.wasi_nn.preload_models]]
backend = "openvino"
provider = {{ type = "local", dir = "./_models/{model}" }}
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, guests: dict[str, Path]) -> Path:
    assert (MOBILENET / "model.xml").is_file(), "run `python examples/fetch_models.py mobilenet` first"
    root = tmp_path_factory.mktemp("layout-site")
    write_first_channel_models(root / "_models")
    (root / "_models" / "mobilenet").symlink_to(MOBILENET)
    guest = guests["nn_named"]
    put_worker(root, "wws.wasm", guest, worker_toml("first", "1,3,2,2"))
    put_worker(root, "planar.wasm", guest, worker_toml("first", "1,3,2,2", "model"))
    put_worker(root, "explicit.wasm", guest, worker_toml("first", "1,3,2,2", "nhwc"))
    put_worker(root, "onnx.wasm", guest, worker_toml("first-onnx", "1,3,2,2"))
    put_worker(root, "mobilenet.wasm", guest, worker_toml("mobilenet", "1,3,224,224"))
    put_worker(root, "mobilenet-planar.wasm", guest, worker_toml("mobilenet", "1,3,224,224", "model"))
    return root


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[ServerThread]:
    with ServerThread(load_wws_folder(site)) as s:
        wait_ready(s.url)
        yield s


def infer(server: ServerThread, route: str, tensor: np.ndarray[Any, Any]) -> dict[str, Any]:
    body = tensor.tobytes()
    body.decode("ascii")
    reply = request(f"{server.url}/{route}", "POST", body, {"content-type": "application/octet-stream"})
    assert reply.status == 200, reply.body
    doc: dict[str, Any] = reply.json()
    assert "error" not in doc, doc
    return doc


def first(server: ServerThread, route: str, tensor: np.ndarray[Any, Any]) -> list[float]:
    """The first output values the worker prints (%.9g: each f32 exactly)."""
    return np.array(infer(server, route, tensor)["first"], np.float32).tolist()  # type: ignore[no-any-return]


def test_wws_folders_default_to_nhwc_and_the_toml_opts_out(site: Path) -> None:
    layouts = {w.name: w.wasi_nn.input_layout for w in load_wws_folder(site).workers}
    assert layouts["wws"] is InputLayout.nhwc and layouts["planar"] is InputLayout.model


def test_an_interleaved_picture_reads_as_the_planar_one(server: ServerThread) -> None:
    channel0 = PLANAR[0, 0].ravel().tolist()
    assert first(server, "wws", INTERLEAVED) == channel0
    assert first(server, "explicit", INTERLEAVED) == channel0
    # Opted out: the bytes are read in the order of the dims, as wasmtime reads them today.
    assert first(server, "planar", PLANAR) == channel0
    assert first(server, "planar", INTERLEAVED) == INTERLEAVED.ravel()[:4].tolist()


def test_a_real_model_gives_the_same_answer_for_either_order(server: ServerThread) -> None:
    picture = text_safe_picture((1, 3, 224, 224), seed=7)
    planar = infer(server, "mobilenet-planar", picture)
    assert planar["output_bytes"] == 4000
    assert infer(server, "mobilenet", nhwc(picture)) == planar  # the backend got the very same bytes
    assert infer(server, "mobilenet", picture)["first"] != planar["first"]  # and the order matters


def test_onnx_models_are_read_as_declared(server: ServerThread) -> None:
    # wws had no ONNX backend: an ONNX model takes its own layout, even on OpenVINO in a wws folder.
    assert first(server, "onnx", PLANAR) == PLANAR[0, 0].ravel().tolist()


def test_a_bad_input_layout_costs_that_worker_only(tmp_path: Path, guests: dict[str, Path]) -> None:
    write_first_channel_models(tmp_path / "_models")
    put_worker(tmp_path, "bad.wasm", guests["nn_named"], worker_toml("first", "1,3,2,2", "nchw"))
    put_worker(tmp_path, "good.wasm", guests["nn_named"], worker_toml("first", "1,3,2,2"))
    cfg = load_wws_folder(tmp_path)
    (reason,) = cfg.worker_errors.values()
    assert str(tmp_path.resolve() / "bad.toml") in reason and "features.wasi_nn.input_layout" in reason, reason
    assert "'model'" in reason and "'nhwc'" in reason, reason
