"""A guest picks the dynamic dimensions of its inputs; the host bounds what that makes it allocate.

The model here takes x [N, 256] and returns y = x @ W + b [N, 256] and outer = y (x) y [N, 256, 256]:
256 KiB of output per row of the batch, so a batch of 400 would have the host allocate ~100 MiB.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wasminfer_runtime.backends.base import ElementType, ExecutionContext, Graph, InvalidTensor, TooLarge
from wasminfer_runtime.backends.onnxruntime import OnnxRuntimeBackend
from wasminfer_runtime.backends.openvino import OpenVinoBackend
from wasminfer_runtime.config import Device, ModelFormat
from wasminfer_runtime.engine import RuntimeEngine
from wasminfer_runtime.formats import readers
from wasminfer_runtime.metrics import Metrics
from wasminfer_runtime.models import ModelRegistry
from wasminfer_runtime.wasinn.host import _errno_for

from .conftest import Runtime, onnx_model, parse_output

WIDTH = 256
BACKENDS = ["openvino", "onnxruntime"]
Array = np.ndarray[Any, Any]


@pytest.fixture(scope="module")
def outer_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Array, Array]:
    """The model file, W and b."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    w = (rng.standard_normal((WIDTH, WIDTH)) / 16).astype(np.float32)
    b = rng.standard_normal(WIDTH).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
            helper.make_node("Unsqueeze", ["y", "axis2"], ["column"]),
            helper.make_node("Unsqueeze", ["y", "axis1"], ["row"]),
            helper.make_node("Mul", ["column", "row"], ["outer"]),
        ],
        "outer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", WIDTH])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", WIDTH]),
            helper.make_tensor_value_info("outer", TensorProto.FLOAT, ["N", WIDTH, WIDTH]),
        ],
        [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(b, "b"),
            numpy_helper.from_array(np.array([2], np.int64), "axis2"),
            numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("outer") / "model.onnx"
    onnx.save(model, str(path))
    return path, w, b


def _load(path: Path, backend: str, **options: object) -> Graph:
    cfg = onnx_model("outer", path, backend=backend, options=options)
    return (OpenVinoBackend() if backend == "openvino" else OnnxRuntimeBackend()).load_model(cfg)


@pytest.fixture(scope="module", params=BACKENDS)
def graph(request: pytest.FixtureRequest, outer_model: tuple[Path, Array, Array]) -> Graph:
    """The model with the default options (dynamic dimensions up to 64)."""
    return _load(outer_model[0], request.param)


@pytest.fixture
def ctx(graph: Graph) -> Iterator[ExecutionContext]:
    c = graph.init_context()
    yield c
    c.close()


def _batch(n: int) -> Array:
    return (np.arange(n * WIDTH, dtype=np.float32).reshape(n, WIDTH) % 17) / 17


def _set(ctx: ExecutionContext, x: Array, dims: tuple[int, ...] | None = None, nbytes: int | None = None) -> None:
    shape = x.shape if dims is None else dims
    ctx.set_input(0, ElementType.f32, tuple(shape), x.ctypes.data, x.nbytes if nbytes is None else nbytes)


def _output(ctx: ExecutionContext, index: int, shape: tuple[int, ...]) -> Array:
    addr, nbytes = ctx.output(index)
    assert nbytes == 4 * int(np.prod(shape))
    return np.ctypeslib.as_array((ctypes.c_float * (nbytes // 4)).from_address(addr)).reshape(shape).copy()


def _infer(ctx: ExecutionContext, n: int) -> Array:
    x = _batch(n)
    _set(ctx, x)
    ctx.compute()
    return _output(ctx, 0, (n, WIDTH))


def _rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert match is not None
    return int(match.group(1)) / 1024


def test_batches_up_to_the_bound_compute_the_model_and_one_more_is_refused(
    ctx: ExecutionContext, outer_model: tuple[Path, Array, Array]
) -> None:
    _, w, b = outer_model
    for n in (1, 2, 63, 64, 3):  # growing and shrinking the same context
        x = _batch(n)
        _set(ctx, x)
        ctx.compute()
        y = (x.astype(np.float64) @ w + b).astype(np.float32)
        np.testing.assert_allclose(_output(ctx, 0, (n, WIDTH)), y, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(_output(ctx, 1, (n, WIDTH, WIDTH)), y[:, :, None] * y[:, None, :], rtol=1e-3, atol=1e-3)
    with pytest.raises(InvalidTensor, match=r"^input 0 \(x\) dimension 0 is 65; .* take 1 to 64 \(options.max_dynamic_dim\)$"):
        _set(ctx, _batch(65))


@pytest.mark.parametrize("n", [400, 0])
def test_a_dynamic_dimension_beyond_the_bound_is_refused(ctx: ExecutionContext, n: int) -> None:
    with pytest.raises(InvalidTensor) as err:
        _set(ctx, _batch(n))
    assert str(err.value) == (
        f"input 0 (x) dimension 0 is {n}; the model's dynamic dimensions take 1 to 64 (options.max_dynamic_dim)"
    )


@pytest.mark.parametrize(("dims", "message"), [
    ((WIDTH,), "input 0 (x) has rank 2 ['?', 256], not 1 [256]"),
    ((1, 1, WIDTH), "input 0 (x) has rank 2 ['?', 256], not 3 [1, 1, 256]"),
    ((2, 128), "input 0 (x) dimension 1 is 128; the model fixes it at 256"),
])
def test_a_rank_or_fixed_dimension_the_model_does_not_have_is_refused(
    ctx: ExecutionContext, dims: tuple[int, ...], message: str
) -> None:
    with pytest.raises(InvalidTensor) as err:
        _set(ctx, _batch(1), dims)
    assert str(err.value) == message


def test_dims_must_match_the_byte_count_before_anything_is_sized(ctx: ExecutionContext) -> None:
    # 64 x 256 elements, but only one row of data: refused before a 64-row buffer is made.
    with pytest.raises(InvalidTensor) as err:
        _set(ctx, _batch(1), (64, WIDTH))
    assert str(err.value) == "input 0 (x) of shape [64, 256] takes 65536 bytes, not 1024"


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_bound_is_a_model_option(outer_model: tuple[Path, Array, Array], backend: str) -> None:
    g = _load(outer_model[0], backend, max_dynamic_dim=4)
    c = g.init_context()
    assert _infer(c, 4).shape == (4, WIDTH)
    with pytest.raises(InvalidTensor, match=r"dimension 0 is 5; the model's dynamic dimensions take 1 to 4 "):
        _set(c, _batch(5))
    c.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_models_a_guest_loads_from_bytes_take_the_default_bound(
    outer_model: tuple[Path, Array, Array], backend: str
) -> None:
    be = OpenVinoBackend() if backend == "openvino" else OnnxRuntimeBackend()
    g = be.load_bytes(ModelFormat.onnx, [outer_model[0].read_bytes()], Device.CPU)
    c = g.init_context()
    assert _infer(c, 64).shape == (64, WIDTH)
    with pytest.raises(InvalidTensor, match="take 1 to 64"):
        _set(c, _batch(65))
    c.close()
    g.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_output_beyond_max_output_bytes_fails_the_compute(
    outer_model: tuple[Path, Array, Array], backend: str
) -> None:
    g = _load(outer_model[0], backend, max_output_bytes=1 << 20)
    c = g.init_context()
    _set(c, _batch(4))
    c.compute()  # outer is exactly 1 MiB
    assert c.output(1)[1] == 1 << 20
    _set(c, _batch(5))
    with pytest.raises(TooLarge) as err:
        c.compute()
    assert str(err.value) == "output 1 is 1310720 bytes, more than the model's 1048576 (options.max_output_bytes)"
    with pytest.raises(InvalidTensor, match="no output before compute"):
        c.output(0)
    c.close()


def test_host_memory_settles_and_a_refused_batch_allocates_nothing(graph: Graph) -> None:
    # Good batches of the largest size: whatever the backend keeps for them is kept once.
    ctx = graph.init_context()
    for i in range(50):
        _infer(ctx, 64)
        if i == 9:
            settled = _rss_mib()
    grown = _rss_mib() - settled
    assert grown < 8, f"RSS grew {grown:.1f} MiB between inference 10 and 50"
    ctx.close()
    # A batch of 400 (100 MiB of output) is refused before the backend allocates for it.
    ctx = graph.init_context()
    x = _batch(400)
    before = _rss_mib()
    with pytest.raises(InvalidTensor):
        _set(ctx, x)
    with pytest.raises(InvalidTensor, match="never set"):
        ctx.compute()
    grown = _rss_mib() - before
    assert grown < 4, f"RSS grew {grown:.1f} MiB on a refused batch"
    ctx.close()


# -- through a guest ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def outer_runtime(tmp_path_factory: pytest.TempPathFactory, outer_model: tuple[Path, Array, Array]) -> Iterator[Runtime]:
    """Named models `outer-openvino` and `outer-onnxruntime`, the second bounding outputs to 1 MiB."""
    metrics = Metrics()
    registry = ModelRegistry(metrics)
    registry.load(onnx_model("outer-openvino", outer_model[0], backend="openvino"))
    registry.load(onnx_model("outer-onnxruntime", outer_model[0], backend="onnxruntime",
                             options={"max_output_bytes": 1 << 20}))
    engine = RuntimeEngine(tmp_path_factory.mktemp("cache"), metrics)
    engine.start()
    yield Runtime(engine, registry, metrics)
    engine.close()


@pytest.mark.parametrize("backend", [b.value for b in readers(ModelFormat.onnx)])  # every backend that reads the model
def test_a_guest_gets_invalid_argument_for_a_batch_beyond_the_bound(
    outer_runtime: Runtime, guests: Path, outer_model: tuple[Path, Array, Array], backend: str
) -> None:
    model = f"outer-{backend}"
    nn = {"enabled": True, "models": [model]}
    _, w, b = outer_model
    x = _batch(4)
    ok = outer_runtime.run(guests / "nn_infer.wasm", ["name", model, f"4,{WIDTH}"], stdin=x.tobytes(), wasi_nn=nn)
    assert ok.outcome == "ok", (ok.message, ok.stdout)
    got = np.frombuffer(parse_output(ok.stdout), dtype=np.float32).reshape(4, WIDTH)
    np.testing.assert_allclose(got, (x.astype(np.float64) @ w + b).astype(np.float32), rtol=1e-4, atol=1e-4)

    refused = outer_runtime.run(guests / "nn_infer.wasm", ["name", model, f"400,{WIDTH}"],
                                stdin=_batch(400).tobytes(), wasi_nn=nn)
    assert refused.stdout.decode().strip() == "error set_input 1"  # invalid_argument


def test_a_guest_whose_output_is_too_large_gets_an_error_at_compute(outer_runtime: Runtime, guests: Path) -> None:
    nn = {"enabled": True, "models": ["outer-onnxruntime"]}
    result = outer_runtime.run(guests / "nn_infer.wasm", ["name", "outer-onnxruntime", f"5,{WIDTH}"],
                               stdin=_batch(5).tobytes(), wasi_nn=nn)
    assert result.stdout.decode().strip() == f"error compute {int(_errno_for(TooLarge('')))}"
