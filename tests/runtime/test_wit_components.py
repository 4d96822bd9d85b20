"""Components through the WIT `wasi:nn@0.2.0-rc-2024-10-28` interfaces: the same answers as the
reference (`wasmtime run -S nn` on the same component, model and input), the same named models
and grants as core modules, and hostile components stopped with a reason while a good request
on the same worker is served."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from wasminfer_runtime.engine import WorkerLoadError

from .conftest import Reference, Runtime, RunWasminfer
from .test_differential import FC_INPUT, both

NN = {"wasi_nn": {"enabled": True, "models": ["fc256", "fc256-onnx"]}}


def fc256_reference(models: Path) -> bytes:
    """fc256 computed by OpenVINO directly: the bytes every path must print."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(models / "fc256" / "model.xml"), "CPU")
    out = compiled(np.frombuffer(FC_INPUT, np.float32).reshape(1, 256))[0]
    return np.asarray(out, np.float32).tobytes()


def test_named_model_same_as_reference(wasmtime_reference: Reference, wasminfer_run: RunWasminfer, guests: Path,
                                       models: Path) -> None:
    args = ["-S", "nn", "-S", f"nn-graph=openvino::{models / 'fc256'}", str(guests / "nn_component.wasm"),
            "name", "fc256", "input", "1,256"]
    out = both(wasmtime_reference, wasminfer_run, args, args, FC_INPUT)
    expected = fc256_reference(models)
    assert out == f"output 0 1 1,256 {len(expected)} {expected.hex()}\n".encode(), out[:200]


def test_loaded_model_same_as_reference(wasmtime_reference: Reference, wasminfer_run: RunWasminfer, guests: Path,
                                        models: Path) -> None:
    args = ["-S", "nn", "--dir", f"{models / 'fc256'}::/m", str(guests / "nn_component.wasm"), "ir", "/m", "input",
            "1,256", "3"]
    out = both(wasmtime_reference, wasminfer_run, args, args, FC_INPUT)
    assert out.startswith(b"output 0 1 1,256 1024 ")


def test_unknown_name_is_not_found_in_both(wasmtime_reference: Reference, wasminfer_run: RunWasminfer, guests: Path,
                                           models: Path) -> None:
    args = ["-S", "nn", "-S", f"nn-graph=openvino::{models / 'fc256'}", str(guests / "nn_component.wasm"),
            "name", "nope", "input", "1,256"]
    theirs, ours = wasmtime_reference.run(args, FC_INPUT), wasminfer_run(args, FC_INPUT)
    assert theirs.stdout.startswith(b"error load 6 ") and ours.stdout.startswith(b"error load 6 "), (theirs.stdout, ours.stdout)
    assert ours.returncode == theirs.returncode == 1
    assert b"no model named 'nope'" in ours.stderr


def test_trap_exit_status_matches_reference(wasmtime_reference: Reference, wasminfer_run: RunWasminfer,
                                            guests: Path, models: Path) -> None:
    """A tensor used after its drop: both hosts stop the component, and exit 1 (a component's trap)."""
    args = ["-S", "nn", "-S", f"nn-graph=openvino::{models / 'fc256'}", str(guests / "nn_component.wasm"),
            "dropped", "fc256", "input", "1,256"]
    theirs, ours = wasmtime_reference.run(args, FC_INPUT), wasminfer_run(args, FC_INPUT)
    assert theirs.returncode == ours.returncode == 1, (theirs.returncode, ours.returncode)
    assert b"unknown handle index" in ours.stderr, ours.stderr[-500:]


def test_onnx_outputs_carry_the_models_names_and_types(runtime: Runtime, guests: Path, models: Path) -> None:
    onnx_file = models / "fc256-onnx" / "model.onnx"
    session = ort.InferenceSession(str(onnx_file))
    feed = {session.get_inputs()[0].name: np.frombuffer(FC_INPUT, np.float32).reshape(1, 256)}
    expected = np.asarray(session.run(None, feed)[0], np.float32)
    name = session.get_outputs()[0].name
    def inferences() -> float:
        value = runtime.metrics.registry.get_sample_value("wasminfer_inference_duration_seconds_count", {"model": "fc256-onnx"})
        return value or 0.0

    before = inferences()
    inv = runtime.run(guests / "nn_component.wasm", ["name", "fc256-onnx", session.get_inputs()[0].name, "1,256", "2"],
                      FC_INPUT, **NN)
    assert inv.ok, (inv.message, inv.stdout, inv.stderr)
    assert inferences() == before + 2, "the component's inferences are in the metrics"
    dims = ",".join(str(d) for d in expected.shape)
    assert inv.stdout == f"output {name} 1 {dims} {expected.nbytes} {expected.tobytes().hex()}\n".encode()


def test_a_model_not_granted_is_not_found_and_wasi_nn_must_be_enabled(runtime: Runtime, guests: Path) -> None:
    inv = runtime.run(guests / "nn_component.wasm", ["name", "secret", "input", "1,256"], FC_INPUT, **NN)
    assert (inv.outcome, inv.exit_code) == ("exit", 1)
    assert inv.stdout.startswith(b"error load 6 no model named 'secret'"), inv.stdout
    with pytest.raises(WorkerLoadError, match="imports wasi:nn but wasi-nn is not enabled"):
        runtime.worker(guests / "nn_component.wasm")


def test_data_that_does_not_match_its_dimensions_is_invalid_argument(runtime: Runtime, guests: Path) -> None:
    """The reference aborts the whole process here; the guest gets an error it can read."""
    inv = runtime.run(guests / "nn_component.wasm", ["short", "fc256", "input", "1,256"], FC_INPUT, **NN)
    assert (inv.outcome, inv.exit_code) == ("exit", 1), inv.message
    assert inv.stdout == b"error compute 0 input 'input': 1021 bytes of data for 1x256 FP32 elements\n"
    assert inv.nn_errors and "invalid-argument" in inv.nn_errors[0]


def test_an_input_the_model_lacks_is_invalid_argument(runtime: Runtime, guests: Path) -> None:
    inv = runtime.run(guests / "nn_component.wasm", ["name", "fc256", "nosuch", "1,256"], FC_INPUT, **NN)
    assert inv.stdout == b"error compute 0 the model has no input 'nosuch' (its inputs: 'input')\n"


def test_a_dropped_tensor_traps_and_the_worker_serves_on(runtime: Runtime, guests: Path, models: Path) -> None:
    worker = runtime.worker(guests / "nn_component.wasm", **NN)
    inv = worker.invoke(FC_INPUT, ["dropped", "fc256", "input", "1,256"])
    assert inv.outcome == "trap" and "unknown handle index" in inv.message, inv.message
    good = worker.invoke(FC_INPUT, ["name", "fc256", "input", "1,256"])
    assert good.ok and fc256_reference(models).hex().encode() in good.stdout


def test_a_model_too_large_for_one_call_traps_with_the_way_out(runtime: Runtime, guests: Path, models: Path,
                                                             tmp_path: Path) -> None:
    """wasmtime bounds what one host call may copy (its hostcall fuel): a 4 MiB model through `load`
    ends the invocation with a reason that says what to do, and the worker serves on."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x, y = (helper.make_tensor_value_info(v, TensorProto.FLOAT, [1, 256]) for v in ("x", "y"))
    ballast = numpy_helper.from_array(np.ones((4096, 256), np.float32), "ballast")  # 4 MiB of initializer
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "double", [x], [y], [ballast])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "big.onnx")
    worker = runtime.worker(guests / "nn_component.wasm", folders=[{"from": tmp_path, "to": "/t"}], **NN)
    inv = worker.invoke(FC_INPUT, ["onnx", "/t/big.onnx", "x", "1,256"])
    assert inv.outcome == "trap" and "pass large models by name (load-by-name)" in inv.message, inv.message
    good = worker.invoke(FC_INPUT, ["name", "fc256", "input", "1,256"])
    assert good.ok and fc256_reference(models).hex().encode() in good.stdout


@pytest.mark.parametrize("mode, outcome, reason", [
    (["spin"], "timeout", "exceeded the 2 s execution timeout"),
    (["sleep"], "trap", "components cannot sleep here"),
    (["hoard"], "trap", "wasi-nn tensors of this instance would exceed 8388608 bytes (its memory limit)"),
    (["errors", "nope"], "trap", "more than 256 live wasi-nn errors in one instance"),
    (["grow"], "trap", "unreachable"),
])
def test_hostile_component_is_stopped_while_a_good_request_is_served(
        runtime: Runtime, guests: Path, models: Path, mode: list[str], outcome: str, reason: str) -> None:
    limits = {"limits": {"memory_mib": 8, "timeout_seconds": 2}}
    hostile = runtime.worker(guests / "hostile_component.wasm", **NN, **limits)
    good = runtime.worker(guests / "nn_component.wasm", **NN)
    results: dict[str, object] = {}
    thread = threading.Thread(target=lambda: results.update(bad=hostile.invoke(b"", mode)))
    thread.start()
    answers = [good.invoke(FC_INPUT, ["name", "fc256", "input", "1,256"]) for _ in range(3)]
    thread.join(30)
    assert not thread.is_alive(), "the hostile component was not stopped"
    bad = results["bad"]
    assert bad.outcome == outcome and reason in bad.message, (bad.outcome, bad.message)  # type: ignore[attr-defined]
    expected = fc256_reference(models).hex().encode()
    assert all(a.ok and expected in a.stdout for a in answers)
    again = hostile.invoke(b"", ["nothing"])  # the same worker runs again: its usage message
    # wasi:cli/exit carries success or failure only, so main's 2 reaches the host as 1 (as in wasmtime)
    assert (again.outcome, again.exit_code) == ("exit", 1) and b"usage" in again.stderr, again.message
