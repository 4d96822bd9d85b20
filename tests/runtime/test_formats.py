"""runtime.yaml follows the format/backend/device table: a model the table refuses is refused at start,
naming the file and the key (models.0.backend or models.0.device), and one it admits is served."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from wasminfer_runtime import formats
from wasminfer_runtime.config import BackendName, ConfigError, Device, ModelFormat
from wasminfer_runtime.server import load_config

FILES = {fmt: [f"model{suffix}" for suffix in formats.MODEL_FILES[fmt]] for fmt in ModelFormat}  # model.xml, model.onnx, ...
COMBINATIONS = list(itertools.product(ModelFormat, BackendName, Device))


def write_runtime_yaml(folder: Path, fmt: ModelFormat, backend: BackendName, device: Device) -> Path:
    for name in FILES[fmt]:
        (folder / name).write_bytes(b"")
    cfg = folder / "runtime.yaml"
    cfg.write_text(f"models:\n  - {{name: m, format: {fmt.value}, backend: {backend.value}, device: {device.value}, "
                   f"files: [{', '.join(FILES[fmt])}]}}\n")
    return cfg


@pytest.mark.parametrize(("fmt", "backend", "device"), COMBINATIONS, ids=["-".join(v.value for v in c) for c in COMBINATIONS])
def test_runtime_yaml_follows_the_table(tmp_path: Path, fmt: ModelFormat, backend: BackendName, device: Device) -> None:
    cfg = write_runtime_yaml(tmp_path, fmt, backend, device)
    reads, runs = backend in formats.READERS[fmt], device in formats.DEVICES[backend]
    if reads and runs:
        loaded = load_config(None, cfg)
        assert (loaded.models[0].resolved_backend, loaded.models[0].device) == (backend, device)
        return
    with pytest.raises(ConfigError) as err:
        load_config(None, cfg)
    key, message = ("backend", formats.format_message(fmt)) if not reads else ("device", formats.device_message(backend))
    assert str(err.value) == f"{cfg}: invalid configuration\n  models.0.{key}: Value error, {message}"


def test_serve_refuses_onnxruntime_on_npu_naming_the_file_and_key(tmp_path: Path) -> None:
    cfg = write_runtime_yaml(tmp_path, ModelFormat.onnx, BackendName.onnxruntime, Device.NPU)
    proc = subprocess.run([sys.executable, "-m", "wasminfer_runtime", "serve", "--config", str(cfg), "--port", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"{cfg}: invalid configuration\n  models.0.device: Value error, backend onnxruntime runs on device " in proc.stderr

