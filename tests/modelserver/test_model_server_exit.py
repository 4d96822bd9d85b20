"""`wasminfer model-server --exit-on-load-failure`: a model that cannot load ends the process with the
load-failure code and the reason in the termination log, where Kubernetes shows it in the pod's status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from wasminfer_runtime.config import LOAD_FAILURE_EXIT


def test_a_model_that_cannot_load_exits_with_the_reason_in_the_termination_log(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    termination = tmp_path / "termination-log"
    config = tmp_path / "runtime.yaml"
    config.write_text(
        f"server: {{termination_log: {termination}, exit_on_load_failure: true}}\n"
        f"models:\n  - {{name: broken, format: onnx, files: [{broken}]}}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "wasminfer_runtime", "model-server", str(config), "--port", "0", "--grpc-port", "-1",
         "--exit-on-load-failure"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == LOAD_FAILURE_EXIT, done.stderr[-2000:]
    said = termination.read_text()
    assert said.startswith("failed to load: ") and "broken" in said, said
