"""WasmInfer objects for end-to-end tests: the CRDs from crds/, and YAML for workers and models."""

from __future__ import annotations

from typing import Any

import yaml
from operator_process import REPO

from kube import Cluster

SHA = "ab" * 32  # kwok runs no containers, so nothing is ever downloaded


def install_crds(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for crd in ("inferencemodels.wasminfer.dev", "wasmworkers.wasminfer.dev"):
        cluster.wait(f"crd/{crd}", "Established", timeout=60)


def worker_yaml(name: str, models: list[str] | None = None, **spec: Any) -> str:
    body = {
        "apiVersion": "wasminfer.dev/v1alpha1",
        "kind": "WasmWorker",
        "metadata": {"name": name},
        "spec": {"module": {"https": {"files": [{"url": "https://example.com/w/hello.wasm", "sha256": SHA}]}}, "route": f"/{name}", "models": models or [], **spec},
    }
    return yaml.safe_dump(body)


def model_yaml(name: str, **spec: Any) -> str:
    src = {"https": {"files": [{"url": f"https://example.com/m/{name}.onnx", "sha256": SHA}]}}
    body = {"apiVersion": "wasminfer.dev/v1alpha1", "kind": "InferenceModel", "metadata": {"name": name}, "spec": {"format": "onnx", "source": src, **spec}}
    return yaml.safe_dump(body)
