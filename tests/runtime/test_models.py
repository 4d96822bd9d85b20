"""Named models: loaded once, looked up by name, and refused with a message that says why."""

from __future__ import annotations

from pathlib import Path

import pytest

from wasminfer_runtime.backends.onnxruntime import CPU, CUDA, providers_for
from wasminfer_runtime.backends.openvino import OpenVinoGraph
from wasminfer_runtime.backends.base import Unsupported
from wasminfer_runtime.config import Device
from wasminfer_runtime.metrics import Metrics
from wasminfer_runtime.models import ModelLoadError, ModelRegistry

from .conftest import ir_model, onnx_model


def test_load_records_readiness_and_load_time(models: Path) -> None:
    metrics = Metrics()
    registry = ModelRegistry(metrics)
    registry.load(ir_model("fc", models / "fc256", options={"pool_size": 3}))
    assert registry.is_loaded("fc") and registry.names() == ["fc"]
    graph = registry.get("fc")
    assert isinstance(graph, OpenVinoGraph) and graph.pool_size == 3
    assert metrics.registry.get_sample_value("wasminfer_model_ready", {"model": "fc"}) == 1.0
    seconds = metrics.registry.get_sample_value("wasminfer_model_load_seconds", {"model": "fc"})
    assert seconds is not None and seconds > 0
    with pytest.raises(ModelLoadError, match="already loaded"):
        registry.load(ir_model("fc", models / "fc256"))


def test_refusals_name_the_model_the_file_and_the_reason(models: Path, tmp_path: Path) -> None:
    registry = ModelRegistry(Metrics())
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "model.xml").write_text("<net")
    (junk / "model.bin").write_bytes(b"")
    cases = [
        (ir_model("absent", tmp_path / "nowhere"), ["'absent'", "nowhere/model.xml", "does not exist"]),
        (ir_model("junk", junk), ["'junk'", "junk/model.xml", "cannot read"]),
        (ir_model("gpu", models / "fc256", device="GPU"), ["'gpu'", "GPU is not available"]),
        (onnx_model("half", models / "fc256-onnx" / "model.onnx", backend="onnxruntime",
                    options={"precision": "f16"}), ["'half'", "precision f16"]),
    ]
    for cfg, needles in cases:
        with pytest.raises(ModelLoadError) as err:
            registry.load(cfg)
        for needle in needles:
            assert needle in str(err.value), str(err.value)
        assert not registry.is_loaded(cfg.name)


def test_onnxruntime_providers_mocked_gpu() -> None:
    """CUDA is picked when the host has the provider (no GPU here: the provider list is given)."""
    with_cuda = [CUDA, CPU]
    assert providers_for(Device.GPU, with_cuda) == [CUDA, CPU]
    assert providers_for(Device.AUTO, with_cuda) == [CUDA, CPU]
    assert providers_for(Device.CPU, with_cuda) == [CPU]
    assert providers_for(Device.AUTO, [CPU]) == [CPU]
    with pytest.raises(Unsupported, match="no CUDA"):
        providers_for(Device.GPU, [CPU])
    with pytest.raises(Unsupported):
        providers_for(Device.NPU, with_cuda)
