"""KServe's own Python clients (REST v2 and gRPC) against `wasminfer model-server`: health, model
readiness and inference, with the numbers the in-process backend gives. They run in their own virtual
environment (`make kserve-client`), whose pins clash with the project's."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from .conftest import ROOT, ModelServer, in_process

KSERVE_PYTHON = ROOT / ".venv-kserve" / "bin" / "python"
DRIVER = Path(__file__).with_name("kserve_driver.py")


def test_kserve_clients_get_the_in_process_numbers(model_server: ModelServer, tmp_path: Path) -> None:
    if not KSERVE_PYTHON.exists():
        pytest.fail(f"KServe's client is not installed: run `make kserve-client` (it creates {KSERVE_PYTHON.parent.parent})")
    x = np.random.default_rng(5).random((2, 3, 224, 224), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    done = subprocess.run([str(KSERVE_PYTHON), str(DRIVER), model_server.url, model_server.grpc, "orientation", "x", str(tmp_path / "x.npy")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["rest_live"] and got["rest_ready"] and got["rest_model_ready"]
    assert got["grpc_live"] and got["grpc_model_ready"]
    (want,) = in_process(model_server.config, "orientation", [x])
    assert got["rest_shapes"] == {"fetch_name_0": [2, 4]}
    np.testing.assert_array_equal(np.array(got["rest"]["fetch_name_0"], dtype=np.float32), want)
    np.testing.assert_array_equal(np.array(got["grpc"]["fetch_name_0"], dtype=np.float32), want)
    assert "input 'x' takes FP32, not INT64" in str(got["rest_error"])
