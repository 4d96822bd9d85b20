"""The wasi-nn host with real guests, OpenVINO and ONNX Runtime: answers, errnos, permissions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import pytest
from openvino import opset13 as ops

from wasminfer_runtime.backends.openvino import OpenVinoGraph
from wasminfer_runtime.wasinn.host import MAX_CONTEXTS

from .conftest import Runtime, errnos, fetch_models_module, parse_output

NN_ALL = {"enabled": True, "allowed_backends": ["openvino", "onnxruntime"],
          "models": ["fc256", "fc256-onnx", "fc256-ovonnx"]}
X = (np.arange(256, dtype=np.float32) / 256.0).reshape(1, 256)


def fc256_expected(x: np.ndarray[Any, Any] = X) -> np.ndarray[Any, Any]:
    """The layer computed in float64 by numpy from the weights the model was built with."""
    w, b = fetch_models_module().fc256_weights()
    expected: np.ndarray[Any, Any] = (x.astype(np.float64) @ w.T.astype(np.float64) + b).astype(np.float32)
    return expected


# -- answers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["fc256", "fc256-onnx", "fc256-ovonnx"])
def test_named_models_on_both_backends_compute_the_layer(runtime: Runtime, guests: Path, model: str) -> None:
    result = runtime.run(guests / "nn_infer.wasm", ["name", model, "1,256"], stdin=X.tobytes(), wasi_nn=NN_ALL)
    assert result.outcome == "ok", (result.message, result.stdout, result.stderr)
    got = np.frombuffer(parse_output(result.stdout), dtype=np.float32).reshape(1, 256)
    np.testing.assert_allclose(got, fc256_expected(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("mode", "where", "backends"), [
    ("ir", "/m/fc256", ["openvino"]),
    ("onnx", "/m/fc256-onnx/model.onnx", ["onnxruntime"]),
    ("onnx", "/m/fc256-onnx/model.onnx", ["openvino"]),
])
def test_load_from_guest_bytes(runtime: Runtime, guests: Path, models: Path, mode: str, where: str,
                               backends: list[str]) -> None:
    result = runtime.run(guests / "nn_infer.wasm", [mode, where, "1,256"], stdin=X.tobytes(),
                         folders=[{"from": str(models), "to": "/m"}],
                         wasi_nn={"enabled": True, "allowed_backends": backends})
    assert result.outcome == "ok", (result.message, result.stdout)
    got = np.frombuffer(parse_output(result.stdout), dtype=np.float32).reshape(1, 256)
    np.testing.assert_allclose(got, fc256_expected(), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def typed_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """IR models taking u8 and i32 input [1,4] and returning 2*x as f32."""
    folder = tmp_path_factory.mktemp("typed")
    for name, etype in (("u8", ov.Type.u8), ("i32", ov.Type.i32)):
        x = ops.parameter([1, 4], etype, name="input")
        y = ops.multiply(ops.convert(x, ov.Type.f32), ops.constant(np.full((1, 4), 2.0, np.float32)))
        (folder / name).mkdir()
        ov.save_model(ov.Model([y], [x], name), folder / name / "model.xml", compress_to_fp16=False)
    return folder


@pytest.mark.parametrize(("model", "dtype", "code"), [
    ("u8", np.uint8, 2),  # wasi-nn 0.4/0.5, WasmEdge
    ("u8", np.uint8, 3),  # wasmtime witx, wasi-nn 0.6
    ("i32", np.int32, 3),  # legacy
    ("i32", np.int32, 4),  # witx
])
def test_both_tensor_type_numberings(runtime: Runtime, guests: Path, typed_models: Path, model: str,
                                     dtype: type, code: int) -> None:
    x: np.ndarray[Any, Any] = np.array([[1, 7, 42, 200]], dtype=dtype)
    result = runtime.run(guests / "nn_infer.wasm", ["ir", f"/m/{model}", "1,4", str(code)], stdin=x.tobytes(),
                         folders=[{"from": str(typed_models), "to": "/m"}],
                         wasi_nn={"enabled": True, "allowed_backends": ["openvino"]})
    assert result.outcome == "ok", result.message
    got = np.frombuffer(parse_output(result.stdout), dtype=np.float32)
    assert got.tolist() == [2.0, 14.0, 84.0, 400.0]


# -- hostile guests -----------------------------------------------------------------------------

HOSTILE_EXPECTED = {
    **{f"load.{c}": 1 for c in ("builders_wild", "builders_len_huge", "builders_none", "builder_data_wild",
                                "builder_len_huge", "graph_out_wild", "target_unknown", "junk_model")},
    "load.encoding_unknown": 2, "load.encoding_tensorflow": 2,
    **{f"load_by_name.{c}": 1 for c in ("name_wild", "name_len_huge", "name_across_end", "graph_out_wild",
                                        "not_utf8")},
    "load_by_name.unknown": 8, "load_by_name.forbidden": 8, "load_by_name.with_nul": 8,
    "load_by_name.ok": 0, "load_by_name.second": 0,
    "init_execution_context.bad_graph": 1, "init_execution_context.ctx_out_wild": 1,
    "init_execution_context.ok": 0,
    **{f"set_input.{c}": 1 for c in ("bad_context", "tensor_wild", "tensor_across_end", "dims_wild",
                                     "dims_len_huge", "dims_len_1000", "data_wild", "data_len_huge",
                                     "data_across_end", "wrong_shape", "wrong_type", "unknown_type",
                                     "length_mismatch", "bad_index")},
    "set_input.ok": 0,
    "compute.bad_context": 1, "compute.ok": 0,
    **{f"get_output.{c}": 1 for c in ("bad_context", "out_wild", "written_wild", "out_across_end", "bad_index")},
    "get_output.buffer_too_small": 7, "get_output.ok": 0, "get_output.written": 1024,
    "set_input.grown_memory": 0, "get_output.grown_memory": 0,
    "init_execution_context.second": 0,
    "compute.inputs_never_set": 1, "get_output.before_compute": 1,
    "final.set_input": 0, "final.compute": 0, "final.get_output": 0,
}

WASMEDGE_EXPECTED = {
    **{f"load_by_name_with_config.{c}": 1 for c in ("config_wild", "config_not_json", "name_wild",
                                                     "graph_out_wild")},
    "load_by_name_with_config.unknown": 8, "load_by_name_with_config.ok": 0,
    "load_by_name_with_config.empty_config": 0,
    "init_execution_context.ok": 0, "set_input.ok": 0,
    "compute_single.bad_context": 1, "compute_single.ok": 0,
    "get_output_single.bad_context": 1, "get_output_single.out_wild": 1, "get_output_single.written_wild": 1,
    "get_output_single.buffer_too_small": 7, "get_output_single.ok": 0, "get_output_single.written": 1024,
    "fini_single.bad_context": 1, "fini_single.ok": 0,
    "init_execution_context.second": 0,
    "finalize_execution_context.bad": 1, "finalize_execution_context.ok": 0,
    "finalize_execution_context.twice": 1, "compute.finalized_context": 1,
    "unload.bad": 1, "unload.ok": 0, "unload.twice": 1, "init_execution_context.unloaded_graph": 1,
    "final.compute": 0, "final.get_output": 0,
}


def test_hostile_arguments_to_every_import_get_errnos(runtime: Runtime, guests: Path) -> None:
    worker = runtime.worker(guests / "nn_hostile.wasm", wasi_nn=NN_ALL)
    result = worker.invoke(b"", ["all", "fc256", "secret"])
    assert result.outcome == "ok", (result.message, result.stderr)
    assert errnos(result.stdout) == HOSTILE_EXPECTED
    final = [ln for ln in result.stdout.decode().splitlines() if ln.startswith("final.output ")][0]
    got = np.frombuffer(bytes.fromhex(final.split()[1]), dtype=np.float32).reshape(1, 256)
    np.testing.assert_allclose(got, fc256_expected(), rtol=1e-5, atol=1e-5)
    # the host is intact: the same worker answers the same way again
    assert errnos(worker.invoke(b"", ["all", "fc256", "secret"]).stdout) == HOSTILE_EXPECTED


def test_hostile_arguments_to_the_wasmedge_extensions(runtime: Runtime, guests: Path) -> None:
    result = runtime.run(guests / "nn_hostile_wasmedge.wasm", ["fc256"], wasi_nn=NN_ALL)
    assert result.outcome == "ok", result.message
    assert errnos(result.stdout) == WASMEDGE_EXPECTED


def test_context_count_is_capped_and_pooled_requests_come_back(runtime: Runtime, guests: Path) -> None:
    graph = runtime.registry.get("fc256")
    assert isinstance(graph, OpenVinoGraph)
    worker = runtime.worker(guests / "nn_hostile.wasm", wasi_nn=NN_ALL)
    for _ in range(2):
        result = worker.invoke(b"", ["contexts", "fc256"])
        assert result.stdout == f"contexts {MAX_CONTEXTS} 7\n".encode()
        # every request went back to the pool (which keeps at most pool_size) when the instance ended
        assert len(graph._pool) == graph.pool_size


def test_models_loaded_by_a_guest_are_bounded_by_its_memory_limit(runtime: Runtime, guests: Path,
                                                                   tmp_path: Path) -> None:
    x = ops.parameter([1, 1024], ov.Type.f32, name="input")
    w = np.random.default_rng(1).standard_normal((1024, 1024)).astype(np.float32)  # 4 MiB of weights
    ov.save_model(ov.Model([ops.matmul(x, ops.constant(w), False, True)], [x], "wide"), tmp_path / "model.xml",
                  compress_to_fp16=False)
    result = runtime.run(guests / "nn_hostile.wasm", ["loads", "/m"], folders=[{"from": str(tmp_path), "to": "/m"}],
                         limits={"memory_mib": 32}, wasi_nn={"enabled": True, "allowed_backends": ["openvino"]})
    assert result.outcome == "ok", result.message
    # 32 MiB allows seven 4 MiB models; the eighth is refused, and the host is fine
    assert result.stdout == b"loads 7 7\n"


@pytest.mark.parametrize(("backends", "expected"), [
    ([], {"load.openvino": 2, "load.onnx": 2}),
    (["onnxruntime"], {"load.openvino": 2, "load.onnx": 1}),
    (["openvino"], {"load.openvino": 0, "load.onnx": 1}),
])
def test_load_only_reaches_allowed_backends(runtime: Runtime, guests: Path, backends: list[str],
                                            expected: dict[str, int]) -> None:
    result = runtime.run(guests / "nn_hostile.wasm", ["load"],
                         wasi_nn={"enabled": True, "allowed_backends": backends})
    assert result.outcome == "ok", result.message
    assert errnos(result.stdout) == expected


def test_named_models_need_permission(runtime: Runtime, guests: Path) -> None:
    result = runtime.run(guests / "nn_infer.wasm", ["name", "fc256", "1,256"], stdin=X.tobytes(),
                         wasi_nn={"enabled": True, "allowed_backends": ["openvino"], "models": ["fc256-onnx"]})
    assert result.stdout == b"error load 8\n"
    assert result.outcome == "exit"


def test_calls_and_inference_time_are_counted(runtime: Runtime, guests: Path) -> None:
    reg = runtime.metrics.registry

    def calls(fn: str, errno: str) -> float:
        return reg.get_sample_value("wasminfer_wasi_nn_calls_total", {"function": fn, "errno": errno}) or 0.0

    def inferences() -> float:
        return reg.get_sample_value("wasminfer_inference_duration_seconds_count", {"model": "fc256"}) or 0.0

    before = (calls("set_input", "invalid_argument"), calls("get_output", "too_large"), inferences())
    result = runtime.run(guests / "nn_hostile.wasm", ["all", "fc256", "secret"], wasi_nn=NN_ALL)
    assert result.outcome == "ok"
    after = (calls("set_input", "invalid_argument"), calls("get_output", "too_large"), inferences())
    assert after[0] - before[0] == 14
    assert after[1] - before[1] == 1
    assert after[2] - before[2] == 2  # compute.ok and final.compute
