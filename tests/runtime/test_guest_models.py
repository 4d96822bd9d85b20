"""Models passed to wasi-nn `load` must be self-contained: ONNX external data and IR that names
files are refused before a library sees them; anything unreadable is InvalidModel, never a crash."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import set_external_data

from wasminfer_runtime.backends import guest_models
from wasminfer_runtime.backends.base import InvalidModel
from wasminfer_runtime.backends.guest_models import check_self_contained
from wasminfer_runtime.backends.onnxruntime import OnnxRuntimeBackend
from wasminfer_runtime.backends.openvino import OpenVinoBackend
from wasminfer_runtime.config import Device, ModelFormat

N = 16  # floats in the weight the attack fills from a file
ONNX, IR = ModelFormat.onnx, ModelFormat.openvino


def _weight(name: str = "w", location: str | None = None) -> TensorProto:
    """A [1,N] f32 initializer: ones, or (with `location`) data read from that file."""
    w = numpy_helper.from_array(np.ones((1, N), np.float32), name)
    if location is not None:
        set_external_data(w, location, offset=0, length=4 * N)
        w.ClearField("raw_data")
    return w


def _io(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, N])


def _model(graph: onnx.GraphProto, **extra: Any) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], **extra)
    model.ir_version = 8
    data: bytes = model.SerializeToString()
    return data


def add_model(w: TensorProto) -> bytes:
    """y = x + w."""
    return _model(helper.make_graph([helper.make_node("Add", ["x", w.name], ["y"])], "add", [_io("x")], [_io("y")], [w]))


def if_model(w: TensorProto) -> bytes:
    """y = x + w when c, else x; w is an initializer of the then-branch only."""
    then = helper.make_graph([helper.make_node("Add", ["x", w.name], ["t"])], "then", [], [_io("t")], [w])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [], [_io("e")])
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    node = helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)
    return _model(helper.make_graph([node], "if", [_io("x"), cond], [_io("y")]))


def loop_constant_model(w: TensorProto) -> bytes:
    """A Loop whose body holds a Constant node with w as its `value` attribute."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Constant", [], ["k"], value=w),
         helper.make_node("Add", ["v_in", "k"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []), _io("v_in")],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), _io("v_out")],
    )
    trip = numpy_helper.from_array(np.array(1, np.int64), "trip")
    node = helper.make_node("Loop", ["trip", "", "x"], ["y"], body=body)
    return _model(helper.make_graph([node], "loop", [_io("x")], [_io("y")], [trip]))


def sparse_model(w: TensorProto) -> bytes:
    """w as the values of a sparse initializer."""
    w.dims[:] = [N]
    indices = numpy_helper.from_array(np.arange(N, dtype=np.int64), "idx")
    sparse = helper.make_sparse_tensor(w, indices, [1, N])
    return _model(helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "sparse", [_io("x")], [_io("y")],
                                    sparse_initializer=[sparse]))


def function_model(w: TensorProto) -> bytes:
    """w as a Constant inside a model-local function's body."""
    fn = helper.make_function("local", "AddW", ["a"], ["b"],
                              [helper.make_node("Constant", [], ["k"], value=w), helper.make_node("Add", ["a", "k"], ["b"])],
                              [helper.make_opsetid("", 13)])
    graph = helper.make_graph([helper.make_node("AddW", ["x"], ["y"], domain="local")], "fn", [_io("x")], [_io("y")])
    return _model(graph, functions=[fn])


def x_zeros() -> np.ndarray[Any, Any]:
    return np.zeros((1, N), np.float32)


@pytest.fixture
def secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """A file the process can read, in its working directory: what a guest must never see."""
    data = b"TOP SECRET: this file was never granted to any worker."[:4 * N].ljust(4 * N, b"!")
    (tmp_path / "secret.bin").write_bytes(data)
    monkeypatch.chdir(tmp_path)
    return data


# -- the rule -----------------------------------------------------------------------------------

def test_a_self_contained_model_is_accepted_and_runs() -> None:
    model = add_model(_weight())
    check_self_contained(ONNX, [model])
    for backend in (OnnxRuntimeBackend(), OpenVinoBackend()):
        graph = backend.load_bytes(ONNX, [model], Device.CPU)
        assert graph.init_context() is not None
        graph.close()


def test_external_data_reads_a_file_through_the_libraries_and_is_refused(
        secret: bytes, caplog: pytest.LogCaptureFixture) -> None:
    model = add_model(_weight(location="secret.bin"))
    # The attack is real: both libraries fill the weight from the file in the working directory.
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": x_zeros()})[0].tobytes() == secret
    core = ov.Core()
    assert core.compile_model(core.read_model(model), "CPU")({0: x_zeros()})[0].tobytes() == secret

    with caplog.at_level(logging.WARNING, logger="wasminfer_runtime.backends.guest_models"):
        with pytest.raises(InvalidModel, match=r"tensor 'w' takes its data from file 'secret\.bin' \(external data\)"):
            check_self_contained(ONNX, [model])
    assert "refused" in caplog.text and "secret.bin" in caplog.text
    for backend in (OnnxRuntimeBackend(), OpenVinoBackend()):
        with pytest.raises(InvalidModel, match="self-contained"):
            backend.load_bytes(ONNX, [model], Device.CPU)


def test_data_location_external_alone_is_refused() -> None:
    w = _weight()
    w.data_location = TensorProto.EXTERNAL
    with pytest.raises(InvalidModel, match=r"tensor 'w' takes its data from a file \(data_location EXTERNAL\)"):
        check_self_contained(ONNX, [add_model(w)])


def test_external_data_in_an_if_branch_is_read_by_onnx_runtime_and_refused(secret: bytes) -> None:
    model = if_model(_weight(location="secret.bin"))
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": x_zeros(), "c": np.array(True)})[0].tobytes() == secret
    with pytest.raises(InvalidModel, match=r"tensor 'w' takes its data from file 'secret\.bin'"):
        check_self_contained(ONNX, [model])


@pytest.mark.parametrize("build", [loop_constant_model, sparse_model, function_model])
def test_external_data_anywhere_a_tensor_can_be_is_refused(build: Callable[[TensorProto], bytes]) -> None:
    check_self_contained(ONNX, [build(_weight())])  # the same model, self-contained, passes
    with pytest.raises(InvalidModel, match=r"takes its data from file '\.\./\.\./etc/passwd'"):
        check_self_contained(ONNX, [build(_weight(location="../../etc/passwd"))])


# -- bytes that are no ONNX model ---------------------------------------------------------------

def test_every_truncation_of_a_model_is_invalid_model_or_accepted() -> None:
    model = if_model(_weight(location="secret.bin"))
    for cut in range(len(model)):
        try:
            check_self_contained(ONNX, [model[:cut]])
        except InvalidModel:
            pass


@pytest.mark.parametrize(("data", "why"), [
    (b"", "no graph"),
    (b"\x08\x07\x12\x04junk", "no graph"),
    (b"\x3a\xff\xff\xff\xff\x0f", "longer than the bytes left"),
    (b"\x08" + b"\xff" * 12, "longer than 10 bytes"),
    (b"\x0b\x0c", "wire type 3"),
    (b"\x00\x00", "field number 0"),
    (b'<?xml version="1.0"?><net name="ir" version="11"></net>', "wire type"),
    (b"\x10\x00\x00\x00ORTM\x00\x00\x00\x00", "ORT-format"),
    (b"\x3a\x02\x08\x00", "graph field 1 has wire type 0, not 2"),  # a node that is a number
])
def test_bytes_that_are_no_onnx_model_are_invalid_model(data: bytes, why: str) -> None:
    with pytest.raises(InvalidModel, match=why):
        check_self_contained(ONNX, [data])


def _ld(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    n, size = len(payload), bytearray()
    while True:
        size.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            break
    return bytes([number << 3 | 2]) + bytes(size) + payload


def test_deeply_nested_subgraphs_are_refused_quickly() -> None:
    inner = b""
    for _ in range(3000):  # graph -> node -> attribute -> graph ..., 9000 messages deep
        inner = _ld(1, _ld(5, _ld(6, inner)))
    started = time.monotonic()
    with pytest.raises(InvalidModel, match="nested more than"):
        check_self_contained(ONNX, [_ld(7, inner)])
    assert time.monotonic() - started < 5


def test_millions_of_tiny_fields_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guest_models, "MAX_FIELDS", 1000)
    unknown_fields = bytes([0xA0, 0x06, 0x01]) * 2000  # field 100 = 1, over and over
    with pytest.raises(InvalidModel, match="more than 1000 fields"):
        check_self_contained(ONNX, [_ld(7, unknown_fields)])


# -- OpenVINO IR --------------------------------------------------------------------------------

IR_XML = b'<?xml version="1.0"?><!-- made by hand --><net name="empty" version="11"><layers></layers></net>'


def test_plain_ir_is_accepted() -> None:
    check_self_contained(IR, [IR_XML, b""])
    OpenVinoBackend().load_bytes(IR, [IR_XML, b""], Device.CPU).close()


@pytest.mark.parametrize(("xml", "why"), [
    (b'<?xml version="1.0"?><!DOCTYPE net [<!ENTITY x SYSTEM "file:///etc/passwd">]><net name="&x;"/>',
     "DOCTYPE or ENTITY"),
    (b'<?xml version="1.0"?><!ENTITY x "y"><net/>', "DOCTYPE or ENTITY"),
    (IR_XML.replace(b"</net>", b'<rt_info><info name="__weights_path" value="/etc/passwd"/></rt_info></net>'),
     "__weights_path"),
    (IR_XML.decode().encode("utf-16-le"), "NUL"),
])
def test_ir_that_declares_entities_or_names_a_file_is_refused(xml: bytes, why: str) -> None:
    with pytest.raises(InvalidModel, match=why):
        check_self_contained(IR, [xml, b""])
    with pytest.raises(InvalidModel, match=why):
        OpenVinoBackend().load_bytes(IR, [xml, b""], Device.CPU)
