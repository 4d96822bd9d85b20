"""`wasi_nn.input_layout`: wws 1.7's NHWC reading of 4-D inputs of OpenVINO IR models, in-process.

runtime.yaml and `wasminfer run` read a guest's bytes in the order of the dims it declares, as
wasmtime does today; `input_layout: nhwc` reads a 4-D input declared N,C,H,W as interleaved
N,H,W,C (tests/server/test_wws_layout.py: wws folders, where that is the default).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import openvino as ov
import pytest
from onnx import TensorProto, helper, numpy_helper
from openvino import opset13 as ops

from wasminfer_runtime import run
from wasminfer_runtime.backends.base import ElementType
from wasminfer_runtime.config import ConfigError, InputLayout, parse_runtime_config
from wasminfer_runtime.engine import RuntimeEngine
from wasminfer_runtime.executor import Invocation
from wasminfer_runtime.metrics import Metrics
from wasminfer_runtime.models import ModelRegistry
from wasminfer_runtime.wasinn.layout import nhwc_to_declared

from .conftest import Runtime, ir_model, onnx_model, parse_output

NHWC = {"enabled": True, "allowed_backends": ["openvino", "onnxruntime"], "input_layout": "nhwc",
        "models": ["first", "first-u8", "first-f16", "flat", "first-onnx", "first-ort"]}
DECLARED = {**NHWC, "input_layout": "model"}

PLANAR = np.arange(12, dtype=np.float32).reshape(1, 3, 2, 2) + 0.5  # channel 0 is 0.5, 1.5, 2.5, 3.5
INTERLEAVED = np.ascontiguousarray(PLANAR.transpose(0, 2, 3, 1))
CHANNEL0 = PLANAR[0, 0].ravel()


def write_models(folder: Path) -> None:
    """IR models taking [1,3,2,2] f32 / u8 / f16 and answering their channel 0 as f32, `flat` ([1,4] f32
    -> 2x) and `first-onnx`, the f32 one as ONNX."""
    for name, etype in (("first", ov.Type.f32), ("first-u8", ov.Type.u8), ("first-f16", ov.Type.f16)):
        x = ops.parameter([1, 3, 2, 2], etype, name="input")
        y = ops.convert(ops.gather(x, ops.constant(np.int64(0)), ops.constant(np.int64(1))), ov.Type.f32)
        (folder / name).mkdir(parents=True)
        ov.save_model(ov.Model([y], [x], name), folder / name / "model.xml", compress_to_fp16=False)
    v = ops.parameter([1, 4], ov.Type.f32, name="input")
    doubled = ops.multiply(v, ops.constant(np.full((1, 4), 2.0, np.float32)))
    (folder / "flat").mkdir()
    ov.save_model(ov.Model([doubled], [v], "flat"), folder / "flat" / "model.xml", compress_to_fp16=False)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["x", "i"], ["y"], axis=1)], "first",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2])],
        [numpy_helper.from_array(np.array(0, np.int64), "i")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    (folder / "first-onnx").mkdir()
    onnx.save(model, str(folder / "first-onnx" / "model.onnx"))


@pytest.fixture(scope="module")
def layout_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("layout-models")
    write_models(folder)
    return folder


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory, layout_models: Path) -> Iterator[Runtime]:
    metrics = Metrics()
    registry = ModelRegistry(metrics)
    for name in ("first", "first-u8", "first-f16", "flat"):
        registry.load(ir_model(name, layout_models / name))
    onnx_file = layout_models / "first-onnx" / "model.onnx"
    registry.load(onnx_model("first-onnx", onnx_file, backend="openvino"))
    registry.load(onnx_model("first-ort", onnx_file, backend="onnxruntime"))
    engine = RuntimeEngine(tmp_path_factory.mktemp("cache"), metrics)
    engine.start()
    yield Runtime(engine, registry, metrics)
    engine.close()


def nn_infer(rt: Runtime, guests: Path, args: list[str], data: bytes, nn: dict[str, Any],
             **cfg: object) -> Invocation:
    return rt.run(guests / "nn_infer.wasm", args, stdin=data, wasi_nn=nn, **cfg)


def output(result: Invocation) -> list[float]:
    assert result.outcome == "ok", (result.message, result.stdout)
    values: list[float] = np.frombuffer(parse_output(result.stdout), np.float32).tolist()
    return values


def test_runtime_yaml_reads_the_declared_order_unless_it_says_nhwc(rt: Runtime, guests: Path) -> None:
    worker = {"name": "w", "module": "w.wasm", "route": "/w"}
    nn = {"enabled": True, "allowed_backends": ["openvino"]}
    cfg = parse_runtime_config({"workers": [{**worker, "wasi_nn": nn}]}, "runtime.yaml")
    assert cfg.workers[0].wasi_nn.input_layout is InputLayout.model
    cfg = parse_runtime_config({"workers": [{**worker, "wasi_nn": {**nn, "input_layout": "nhwc"}}]}, "runtime.yaml")
    assert cfg.workers[0].wasi_nn.input_layout is InputLayout.nhwc
    with pytest.raises(ConfigError, match=r"runtime.yaml(.|\n)*workers\.0\.wasi_nn\.input_layout"):
        parse_runtime_config({"workers": [{**worker, "wasi_nn": {**nn, "input_layout": "NCHW"}}]}, "runtime.yaml")

    args = ["name", "first", "1,3,2,2"]
    assert output(nn_infer(rt, guests, args, INTERLEAVED.tobytes(), NHWC)) == CHANNEL0.tolist()
    assert output(nn_infer(rt, guests, args, PLANAR.tobytes(), DECLARED)) == CHANNEL0.tolist()
    assert output(nn_infer(rt, guests, args, INTERLEAVED.tobytes(), DECLARED)) == INTERLEAVED.ravel()[:4].tolist()


@pytest.mark.parametrize(("model", "dtype", "code"), [("first-u8", np.uint8, 3), ("first-u8", np.uint8, 2),
                                                      ("first-f16", np.float16, 0)])
def test_every_element_size_moves_whole(rt: Runtime, guests: Path, model: str, dtype: type, code: int) -> None:
    picture: np.ndarray[Any, Any] = INTERLEAVED.astype(dtype)
    got = nn_infer(rt, guests, ["name", model, "1,3,2,2", str(code)], picture.tobytes(), NHWC)
    assert output(got) == CHANNEL0.astype(dtype).astype(np.float32).tolist()


def test_models_a_guest_loads_are_read_the_same_way(rt: Runtime, guests: Path, layout_models: Path) -> None:
    folders = [{"from": str(layout_models), "to": "/m"}]
    ir = ["ir", "/m/first", "1,3,2,2"]
    assert output(nn_infer(rt, guests, ir, INTERLEAVED.tobytes(), NHWC, folders=folders)) == CHANNEL0.tolist()
    assert output(nn_infer(rt, guests, ir, PLANAR.tobytes(), DECLARED, folders=folders)) == CHANNEL0.tolist()
    # ONNX never ran on wws: its own layout, on either backend, loaded or named.
    loaded = ["onnx", "/m/first-onnx/model.onnx", "1,3,2,2"]
    assert output(nn_infer(rt, guests, loaded, PLANAR.tobytes(), NHWC, folders=folders)) == CHANNEL0.tolist()
    for name in ("first-onnx", "first-ort"):
        assert output(nn_infer(rt, guests, ["name", name, "1,3,2,2"], PLANAR.tobytes(), NHWC)) == CHANNEL0.tolist()


def test_other_ranks_pass_unchanged(rt: Runtime, guests: Path) -> None:
    x = np.array([[1, 2, 3, 4]], np.float32)
    assert output(nn_infer(rt, guests, ["name", "flat", "1,4"], x.tobytes(), NHWC)) == [2, 4, 6, 8]


@pytest.mark.parametrize("nn", [NHWC, DECLARED], ids=["nhwc", "model"])
def test_a_hostile_tensor_gets_the_usual_errno(rt: Runtime, guests: Path, nn: dict[str, Any]) -> None:
    cases = [
        (["name", "first", "1,3,2,2"], INTERLEAVED.tobytes()[:-1]),  # a byte short of the dims
        (["name", "first", "1,3,2,2"], INTERLEAVED.tobytes() + b"\0" * 4),  # an element over
        (["name", "first", "1,2,3,2"], INTERLEAVED.tobytes()),  # the right bytes for dims the model does not take
        (["name", "first", "1,3,2,2,1"], INTERLEAVED.tobytes()),  # rank 5
        (["name", "first", "0,3,2,2"], b""),  # no elements
    ]
    for args, data in cases:
        result = nn_infer(rt, guests, args, data, nn)
        assert result.outcome == "exit" and result.stdout == b"error set_input 1\n", (args, result.stdout)
    # The worker goes on: the next request gets its answer.
    expected = PLANAR.ravel()[0::3] if nn is NHWC else CHANNEL0
    assert output(nn_infer(rt, guests, ["name", "first", "1,3,2,2"], PLANAR.tobytes(), nn)) == expected.tolist()


def test_wasminfer_run_reads_the_declared_order(tmp_path: Path, guests: Path, layout_models: Path,
                                                capfdbinary: pytest.CaptureFixture[bytes],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    parser = argparse.ArgumentParser()
    run.add_arguments(parser)
    argv = ["--cache-dir", str(tmp_path), "--nn-graph", f"openvino::{layout_models / 'first'}",
            str(guests / "nn_infer.wasm"), "name", "first", "1,3,2,2"]
    parsed = parser.parse_args(argv)
    run.split_command(parsed)
    worker, _ = run.build(parsed)
    assert worker.wasi_nn.input_layout is InputLayout.model
    stdin = tmp_path / "stdin"
    stdin.write_bytes(INTERLEAVED.tobytes())
    with stdin.open("rb") as f:
        monkeypatch.setattr("sys.stdin", _BinaryStdin(f))
        assert run.main(parser.parse_args(argv)) == 0
    assert np.frombuffer(parse_output(capfdbinary.readouterr().out), np.float32).tolist() == \
        INTERLEAVED.ravel()[:4].tolist()


class _BinaryStdin:
    """A stand-in for sys.stdin whose `buffer` is a file (pytest replaces the real one)."""

    def __init__(self, f: Any) -> None:
        self.buffer = f

    def isatty(self) -> bool:
        return False


@pytest.mark.parametrize("etype", list(ElementType))
def test_the_reordering_itself(etype: ElementType) -> None:
    dtype = np.dtype(f"<{'f' if etype.value[0] == 'f' else etype.value[0]}{etype.size}")
    picture = (np.arange(2 * 3 * 4 * 5) % 100).astype(dtype).reshape(2, 3, 4, 5)
    interleaved = np.ascontiguousarray(picture.transpose(0, 2, 3, 1))
    planar = nhwc_to_declared(interleaved.ctypes.data, (2, 3, 4, 5), etype)
    assert planar is not None and planar.tobytes() == picture.tobytes()
    assert nhwc_to_declared(interleaved.ctypes.data, (6, 20), etype) is None
    assert nhwc_to_declared(interleaved.ctypes.data, (1, 0, 4, 5), etype) is None
