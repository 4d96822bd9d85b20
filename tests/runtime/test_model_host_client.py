"""The model host seen through the Backend interface: same answers as in-process, refused inputs
keep no shared memory, the host cannot shrink shared memory under the runtime, and a killed host
is never taken for a ready one."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np
import pytest

from wasminfer_runtime.backends.base import ElementType, InvalidTensor
from wasminfer_runtime.config import BackendName, Device, ModelConfig, ModelFormat
from wasminfer_runtime.metrics import Metrics
from wasminfer_runtime.modelhost import wire
from wasminfer_runtime.modelhost.client import RemoteContext
from wasminfer_runtime.models import ModelRegistry


ROOT = Path(__file__).resolve().parents[2]
FC256 = ROOT / "examples" / "_models" / "fc256"


def _identity_model() -> bytes:
    """y = x, [1, 8] f32: the smallest model a guest could pass to `load`."""
    from onnx import TensorProto, helper

    io = [helper.make_tensor_value_info(v, TensorProto.FLOAT, [1, 8]) for v in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id", io[:1], io[1:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    data: bytes = model.SerializeToString()
    return data


def _fc256() -> ModelConfig:
    files = [FC256 / "model.xml", FC256 / "model.bin"]
    missing = [str(f) for f in files if not f.is_file()]
    assert not missing, f"{missing} missing: run `make models` (examples/fetch_models.py fc256)"
    return ModelConfig.model_validate({"name": "fc256", "format": "openvino", "files": files})


def _infer(registry: ModelRegistry, x: np.ndarray) -> np.ndarray:
    graph = registry.get("fc256")
    assert graph is not None
    ctx = graph.init_context()
    try:
        ctx.set_input(0, ElementType.f32, (1, 256), x.ctypes.data, x.nbytes)
        ctx.compute()
        addr, n = ctx.output(0)
        return np.frombuffer(ctypes.string_at(addr, n), np.float32).copy()
    finally:
        ctx.close()


@pytest.mark.parametrize("poll_us", [0, 1000])
def test_a_model_host_gives_the_in_process_answer(poll_us: int) -> None:
    x = np.linspace(-1, 1, 256, dtype=np.float32).reshape(1, 256)
    local = ModelRegistry(Metrics(), "in-process")
    local.load(_fc256())
    hosted = ModelRegistry(Metrics(), "process", poll_us=poll_us)
    hosted.load(_fc256())
    try:
        want = _infer(local, x)
        for _ in range(3):  # pooled contexts, reused
            assert np.array_equal(_infer(hosted, x), want)
    finally:
        hosted.close()


def test_a_refused_input_keeps_no_room_in_the_shared_arena() -> None:
    hosted = ModelRegistry(Metrics(), "process")
    hosted.load(_fc256())
    try:
        graph = hosted.get("fc256")
        assert graph is not None
        ctx = graph.init_context()
        assert isinstance(ctx, RemoteContext)
        big = np.zeros(12 << 20, np.float32)  # 48 MiB, for inputs the model does not have
        for index in range(1, 6):
            with pytest.raises(InvalidTensor):
                ctx.set_input(index, ElementType.f32, (big.size,), big.ctypes.data, big.nbytes)
            held = os.fstat(ctx.arena.fd).st_blocks * 512  # pages the shared memory really holds
            assert held < 1 << 20, f"{held} bytes of arena kept after a refused input"
        ctx.close()
    finally:
        hosted.close()


def test_a_model_host_cannot_shrink_an_arena_under_the_runtime() -> None:
    """Shrinking the file would make the runtime's next read of its map fault (SIGBUS): sealed."""
    arena = wire.Arena.create(1 << 20)
    try:
        with pytest.raises(PermissionError):
            os.ftruncate(arena.fd, 0)
        arena.grow(2 << 20)
        assert arena.file_size() == 2 << 20
        ctypes.memset(arena.addr + arena.size - 1, 7, 1)  # the whole map is backed
    finally:
        arena.close()


def test_a_load_right_after_its_host_was_killed_starts_a_new_host_and_close_leaves_nothing() -> None:
    registry = ModelRegistry(Metrics(), "process")
    backend = registry.guest_backend("w", BackendName.onnxruntime, [BackendName.onnxruntime], 256 << 20)
    host = registry._guest_hosts["w"]
    try:
        backend.load_bytes(ModelFormat.onnx, [_identity_model()], Device.CPU).close()
        first = host.pid
        host.kill("a test")
        graph = backend.load_bytes(ModelFormat.onnx, [_identity_model()], Device.CPU)
        assert host.pid not in (None, first)
        graph.close()
    finally:
        registry.close()
    # Closed: the hosts' cgroups and socket folders are gone with them.
    assert host._dir is None and (host._cap.path is None or not host._cap.path.exists())
