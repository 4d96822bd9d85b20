"""The operator against the real control plane: example YAML applied with the real kubectl lands on
the right (kwok-simulated, hence `_mocked_gpu`) nodes, status tells the truth, `kubectl get/wait/scale`
work, invalid objects are refused naming the field, and a missing model is waited for."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from operator_objects import SHA, chart_operator, install_crds, model_yaml, worker_yaml
from operator_process import REPO, OperatorProcess

from wasminfer_runtime import modelpool

from kube import Cluster, KubectlError

pytestmark = pytest.mark.cluster

EXAMPLES = REPO / "examples" / "kubernetes"
PREFIX = "opw-"  # namespaces this module's operator watches

# A profile for a device no node has: what falling back looks like.
OPERATOR_CONFIG = """
profiles:
  amd-gpu:
    device: GPU
    backends: [onnxruntime]
    resources: {amd.com/gpu: 1}
    tolerations: [{key: amd.com/gpu, operator: Exists, effect: NoSchedule}]
    automatic: false
"""


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> None:
    install_crds(cluster)


@pytest.fixture(scope="module")
def operator(cluster: Cluster, crds: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    with chart_operator(cluster, tmp_path_factory.mktemp("operator"), PREFIX, OPERATOR_CONFIG) as op:
        yield op


@pytest.fixture
def ns(cluster: Cluster, operator: OperatorProcess, request: pytest.FixtureRequest) -> Iterator[str]:
    name = cluster.new_namespace(PREFIX + request.node.name[5:30])
    yield name
    cluster.delete_namespace(name)


def status(cluster: Cluster, ns: str, kind: str, name: str) -> dict[str, Any]:
    s: dict[str, Any] = cluster.get_json(kind, name, namespace=ns).get("status") or {}
    return s


def condition(cluster: Cluster, ns: str, kind: str, name: str, type_: str) -> dict[str, Any]:
    for c in status(cluster, ns, kind, name).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}


def wait_condition(cluster: Cluster, ns: str, kind: str, name: str, type_: str, status_: str, reason: str, timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        c = condition(cluster, ns, kind, name, type_)
        return c if (c.get("status"), c.get("reason")) == (status_, reason) else None

    return cluster.wait_until(check, timeout, f"{kind}/{name} {type_}={status_} ({reason})")


def pods(cluster: Cluster, ns: str, worker: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json("pods", "-l", f"wasminfer.dev/worker={worker}", namespace=ns)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def events(cluster: Cluster, ns: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json("events", "--field-selector", f"involvedObject.name={name}", namespace=ns)["items"]
    return items


ACCELERATOR_LABELS = ("nvidia.com/gpu.present", "intel.feature.node.kubernetes.io/gpu", "intel.feature.node.kubernetes.io/npu")


def cpu_nodes(cluster: Cluster) -> set[str]:
    """Nodes without an accelerator (the fleet's cpu-1 and cpu-2, and any a benchmark added)."""
    return {n["metadata"]["name"] for n in cluster.nodes() if not set(ACCELERATOR_LABELS) & set(n["metadata"].get("labels", {}))}


def ready(cluster: Cluster, ns: str, worker: str, timeout: float = 90) -> None:
    cluster.wait(f"wasmworker/{worker}", "Ready", timeout=timeout, namespace=ns)


def on_the_nvidia_node(cluster: Cluster, ns: str, example: str, worker: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Applies an example and waits for its worker: its one pod is on the NVIDIA node, and its runtime
    container (returned with the pod) asks for one GPU and runs the runtime-nvidia image."""
    cluster.apply((EXAMPLES / example).read_text(), namespace=ns)
    ready(cluster, ns, worker)
    (pod,) = pods(cluster, ns, worker)
    assert pod["spec"]["nodeName"] == "gpu-nvidia-1"
    runtime = next(c for c in pod["spec"]["containers"] if c["name"] == "runtime")
    assert runtime["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert runtime["image"] == "ghcr.io/wasminfer/runtime-nvidia:0.1.0"
    return pod, runtime


def test_nvidia_worker_lands_on_the_nvidia_node_mocked_gpu(cluster: Cluster, ns: str) -> None:
    pod, runtime = on_the_nvidia_node(cluster, ns, "nvidia-gpu.yaml", "resnet")
    assert runtime["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"]["tolerations"]
    assert status(cluster, ns, "wasmworker", "resnet")["profile"] == "nvidia-gpu"
    assert status(cluster, ns, "inferencemodel", "resnet50-onnx")["profile"] == "nvidia-gpu"


def test_gguf_model_on_gpu_lands_on_the_nvidia_node_with_llamacpp_mocked_gpu(cluster: Cluster, ns: str) -> None:
    on_the_nvidia_node(cluster, ns, "llm-gpu.yaml", "chat")
    model = status(cluster, ns, "inferencemodel", "tinyllama")
    assert model["profile"] == "nvidia-gpu", model
    config = yaml.safe_load(cluster.get_json("configmap", "chat-runtime", namespace=ns)["data"]["runtime.yaml"])
    (m,) = config["models"]
    assert (m["name"], m["format"], m["device"], m.get("backend")) == ("tinyllama", "ggml", "GPU", "llamacpp"), m


def test_intel_gpu_worker_waits_for_its_configmap_then_lands_on_the_intel_node_mocked_gpu(cluster: Cluster, ns: str) -> None:
    cluster.apply((EXAMPLES / "intel-gpu.yaml").read_text(), namespace=ns)
    c = wait_condition(cluster, ns, "inferencemodel", "tiny-net", "Ready", "False", "SourceNotFound")
    assert "ConfigMap tiny-net not found" in c["message"]
    wait_condition(cluster, ns, "wasmworker", "tiny", "ModelsReady", "False", "ModelNotReady")
    assert not cluster.exists("deployment", "tiny", namespace=ns), "no pods while the model cannot be fetched"
    cluster.kubectl("create", "configmap", "tiny-net", "-n", ns, "--from-literal=model.xml=<net/>", "--from-literal=model.bin=0", "--from-literal=worker.wasm=0")
    cluster.kubectl("create", "secret", "generic", "tiny-secrets", "-n", ns, "--from-literal=token=t0k3n")
    ready(cluster, ns, "tiny", timeout=120)
    (pod,) = pods(cluster, ns, "tiny")
    assert pod["spec"]["nodeName"] == "gpu-intel-1"
    runtime = next(c for c in pod["spec"]["containers"] if c["name"] == "runtime")
    assert runtime["resources"]["limits"] == {"gpu.intel.com/i915": "1"}
    assert {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "tiny-secrets", "key": "token"}}} in runtime["env"]
    assert condition(cluster, ns, "inferencemodel", "tiny-net", "Ready")["reason"] == "SourceResolved"


def test_cpu_worker_lands_on_cpu_nodes(cluster: Cluster, ns: str) -> None:
    cluster.apply((EXAMPLES / "cpu.yaml").read_text(), namespace=ns)
    ready(cluster, ns, "classify-cpu")
    nodes = {p["spec"]["nodeName"] for p in pods(cluster, ns, "classify-cpu")}
    assert len(pods(cluster, ns, "classify-cpu")) == 2 and nodes <= cpu_nodes(cluster), nodes
    assert {"cpu-1", "cpu-2"} <= cpu_nodes(cluster)


def test_falls_back_when_no_node_has_the_first_profile_and_says_so(cluster: Cluster, ns: str) -> None:
    cluster.apply(worker_yaml("fb", placement={"profile": "amd-gpu", "fallbacks": ["cpu"], "fallbackAfterSeconds": 4}), namespace=ns)
    c = wait_condition(cluster, ns, "wasmworker", "fb", "Scheduled", "False", "Unschedulable")
    assert "amd.com/gpu" in c["message"] and "falling back to profile cpu at" in c["message"]
    c = wait_condition(cluster, ns, "wasmworker", "fb", "Scheduled", "True", "FellBack", timeout=90)
    assert "fallback profile cpu" in c["message"] and "amd-gpu" in c["message"]
    ready(cluster, ns, "fb")
    assert status(cluster, ns, "wasmworker", "fb")["profile"] == "cpu"
    (pod,) = pods(cluster, ns, "fb")
    assert pod["spec"]["nodeName"] in cpu_nodes(cluster)
    assert pod["metadata"]["labels"]["wasminfer.dev/profile"] == "cpu"
    reasons = {(e["type"], e["reason"]) for e in events(cluster, ns, "fb")}
    assert ("Warning", "Unschedulable") in reasons and ("Warning", "FellBack") in reasons, reasons


def test_kubectl_get_shows_the_state(cluster: Cluster, ns: str) -> None:
    cluster.apply(model_yaml("m1") + "---\n" + worker_yaml("shown", ["m1"], replicas=2), namespace=ns)
    ready(cluster, ns, "shown")
    out = cluster.kubectl("get", "ww", "-n", ns).stdout.splitlines()
    assert out[0].split() == ["NAME", "READY", "MODELS", "PROFILE", "URL", "REASON", "AGE"]
    assert out[1].split()[:6] == ["shown", "2/2", "1/1", "cpu", f"http://shown.{ns}.svc/shown", "Available"]
    out = cluster.kubectl("get", "im", "-n", ns).stdout.splitlines()
    assert out[0].split() == ["NAME", "FORMAT", "BACKEND", "DEVICE", "READY", "REASON", "WORKERS", "SERVING", "AGE"]
    assert out[1].split()[:7] == ["m1", "onnx", "openvino", "CPU", "True", "SourceDeclared", "1"]
    both = cluster.kubectl("get", "wasminfer", "-n", ns, "-o", "name").stdout.split()
    assert sorted(both) == ["inferencemodel.wasminfer.dev/m1", "wasmworker.wasminfer.dev/shown"]
    explained = cluster.kubectl("explain", "wasmworker.spec.placement.fallbacks").stdout
    assert "Profiles to move to, in order" in explained


def test_kubectl_wait_and_scale(cluster: Cluster, ns: str) -> None:
    cluster.apply(worker_yaml("scaled"), namespace=ns)
    ready(cluster, ns, "scaled")
    cluster.kubectl("scale", "wasmworker/scaled", "--replicas=3", "-n", ns)
    cluster.wait_until(lambda: status(cluster, ns, "wasmworker", "scaled").get("readySummary") == "3/3", 90, "3/3 ready replicas")
    assert cluster.get_json("deployment", "scaled", namespace=ns)["spec"]["replicas"] == 3
    scale = cluster.get_json("wasmworker", "scaled", "--subresource=scale", namespace=ns)
    assert scale["spec"]["replicas"] == 3 and scale["status"]["replicas"] == 3
    assert scale["status"]["selector"] == "wasminfer.dev/worker=scaled"
    cluster.kubectl("scale", "ww/scaled", "--replicas=0", "-n", ns)
    c = wait_condition(cluster, ns, "wasmworker", "scaled", "Ready", "True", "ScaledToZero")
    assert c["observedGeneration"] == cluster.get_json("ww", "scaled", namespace=ns)["metadata"]["generation"]


def server_pods(cluster: Cluster, ns: str, model: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json("pods", "-l", f"wasminfer.dev/model-server={model}", namespace=ns)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def test_a_served_gpu_model_runs_its_model_servers_on_the_nvidia_node_and_its_worker_on_cpu_mocked_gpu(cluster: Cluster, ns: str) -> None:
    cluster.apply((EXAMPLES / "served-model.yaml").read_text(), namespace=ns)
    model, worker = "resnet50-served", "resnet-remote"
    c = wait_condition(cluster, ns, "inferencemodel", model, "Ready", "True", "Serving", timeout=90)
    endpoint = f"http://{model}-model-server.{ns}.svc:8000"
    assert c["message"].endswith(f"of 2 model-server pods serve the model at {endpoint}"), c
    ready(cluster, ns, worker)
    servers = server_pods(cluster, ns, model)
    assert [p["spec"]["nodeName"] for p in servers] == ["gpu-nvidia-1"] * 2
    container = servers[0]["spec"]["containers"][0]
    assert container["command"][:2] == ["wasminfer", "model-server"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    workers = pods(cluster, ns, worker)
    assert len(workers) == 2 and {p["spec"]["nodeName"] for p in workers} <= cpu_nodes(cluster), "the worker calls the model: no GPU for it"
    assert "nvidia.com/gpu" not in json.dumps([p["spec"]["containers"] for p in workers])
    runtime_yaml = yaml.safe_load(cluster.get_json("configmap", f"{worker}-runtime", namespace=ns)["data"]["runtime.yaml"])
    remote = runtime_yaml["models"][0]["remote"]
    assert (remote["url"], remote["timeout_seconds"]) == (endpoint, 10) and not runtime_yaml["models"][0].get("files")
    assert cluster.get_json("service", f"{model}-model-server", namespace=ns)["spec"]["selector"] == {"wasminfer.dev/model-server": model}
    cluster.wait_until(lambda: status(cluster, ns, "inferencemodel", model).get("readySummary") == "2/2", 60, "2/2 model servers")
    s = status(cluster, ns, "inferencemodel", model)
    assert (s["profile"], s["endpoint"], s["grpcEndpoint"]) == ("nvidia-gpu", endpoint, f"grpc://{model}-model-server.{ns}.svc:8001")
    assert [(x["state"], x["node"]) for x in s["servers"]] == [("Ready", "gpu-nvidia-1")] * 2
    assert status(cluster, ns, "wasmworker", worker)["profile"] == "cpu"

    # kubectl scale works on the model: it scales its model servers.
    cluster.kubectl("scale", f"inferencemodel/{model}", "--replicas=3", "-n", ns)
    cluster.wait_until(lambda: status(cluster, ns, "inferencemodel", model).get("readySummary") == "3/3", 90, "3/3 model servers")
    scale = cluster.get_json("inferencemodel", model, "--subresource=scale", namespace=ns)
    assert scale["spec"]["replicas"] == 3 and scale["status"]["replicas"] == 3
    assert scale["status"]["selector"] == f"wasminfer.dev/model-server={model}"
    assert cluster.get_json("deployment", f"{model}-model-server", namespace=ns)["spec"]["replicas"] == 3
    row = cluster.kubectl("get", "im", model, "-n", ns, "--no-headers").stdout.split()
    assert row[:8] == [model, "onnx", "onnxruntime", "GPU", "True", "Serving", "1", "3/3"], row
    # Scaled to zero, nothing serves it: said on the model and on the worker waiting for it.
    cluster.kubectl("scale", f"im/{model}", "--replicas=0", "-n", ns)
    wait_condition(cluster, ns, "inferencemodel", model, "Ready", "False", "ScaledToZero")
    c = wait_condition(cluster, ns, "wasmworker", worker, "ModelsReady", "False", "ModelNotReady")
    assert f"{model}: ScaledToZero" in c["message"]


def test_a_served_model_falls_back_to_cpu_and_removing_serving_removes_its_servers(cluster: Cluster, ns: str) -> None:
    serving = {"placement": {"profile": "amd-gpu", "fallbacks": ["cpu"], "fallbackAfterSeconds": 4}}
    cluster.apply(model_yaml("fbm", backend="onnxruntime", device="GPU", serving=serving), namespace=ns)
    c = wait_condition(cluster, ns, "inferencemodel", "fbm", "Ready", "False", "Unschedulable")
    assert "amd.com/gpu" in c["message"] and "profile cpu is tried at" in c["message"]
    wait_condition(cluster, ns, "inferencemodel", "fbm", "Ready", "True", "Serving", timeout=90)
    assert status(cluster, ns, "inferencemodel", "fbm")["profile"] == "cpu"
    (server,) = server_pods(cluster, ns, "fbm")
    assert server["spec"]["nodeName"] in cpu_nodes(cluster)
    runtime_yaml = yaml.safe_load(cluster.get_json("configmap", "fbm-model-server", namespace=ns)["data"]["runtime.yaml"])
    assert runtime_yaml["models"][0]["device"] == "CPU", "on the fallback the model loads on the CPU"
    cluster.kubectl("patch", "im/fbm", "-n", ns, "--type=json", "-p", '[{"op": "remove", "path": "/spec/serving"}]')
    cluster.wait_until(lambda: not cluster.exists("deployment", "fbm-model-server", namespace=ns), 60, "model servers removed")
    assert not cluster.exists("service", "fbm-model-server", namespace=ns)
    assert not cluster.exists("configmap", "fbm-model-server", namespace=ns)
    wait_condition(cluster, ns, "inferencemodel", "fbm", "Ready", "True", "SourceDeclared")
    s = status(cluster, ns, "inferencemodel", "fbm")
    assert "endpoint" not in s and "servers" not in s and s["profile"] == "nvidia-gpu", s


def test_a_horizontal_pod_autoscaler_scales_a_served_model_through_its_scale_subresource(cluster: Cluster, ns: str) -> None:
    """The controller manager's HPA controller reads and writes /scale of an InferenceModel: below its
    minReplicas it scales the model servers up, as it would on a request-rate metric."""
    cluster.apply(model_yaml("auto", serving={"replicas": 1}), namespace=ns)
    wait_condition(cluster, ns, "inferencemodel", "auto", "Ready", "True", "Serving")
    hpa = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "auto"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "wasminfer.dev/v1alpha1", "kind": "InferenceModel", "name": "auto"},
            "minReplicas": 2, "maxReplicas": 4,
            "metrics": [{"type": "Pods", "pods": {"metric": {"name": "wasminfer_inferences_per_second"},
                                                  "target": {"type": "AverageValue", "averageValue": "50"}}}],
        },
    }  # fmt: skip
    cluster.apply(json.dumps(hpa), namespace=ns)
    cluster.wait_until(lambda: status(cluster, ns, "inferencemodel", "auto").get("readySummary") == "2/2", 120, "the HPA's 2 model servers")
    assert cluster.get_json("inferencemodel", "auto", namespace=ns)["spec"]["serving"]["replicas"] == 2
    got = cluster.get_json("hpa", "auto", namespace=ns)["status"]
    able = next(c for c in got["conditions"] if c["type"] == "AbleToScale")
    assert able["status"] == "True", got


def pool_yaml(name: str, **spec: Any) -> str:
    return yaml.safe_dump({"apiVersion": "wasminfer.dev/v1alpha1", "kind": "ModelPool", "metadata": {"name": name}, "spec": spec})


def model_servers(cluster: Cluster, ns: str, models: list[str]) -> dict[str, tuple[str, ...]]:
    """Each model's replicas, as its status lists them, once it is Ready (else absent)."""
    out = {}
    for item in cluster.get_json("inferencemodels", namespace=ns)["items"]:
        name, s = item["metadata"]["name"], item.get("status") or {}
        ready = next((c for c in s.get("conditions") or [] if c["type"] == "Ready"), {})
        if name in models and (ready.get("status"), ready.get("reason")) == ("True", "Serving"):
            out[name] = tuple(x["pod"] for x in s.get("servers") or [])
    return out


def test_a_pool_of_50_models_over_4_replicas_spreads_as_the_ring_says_and_losing_one_moves_only_its_share(cluster: Cluster, ns: str) -> None:
    models = [f"pm{i:02d}" for i in range(50)]
    docs = [pool_yaml("shared", replicas=4, copies=2)] + [model_yaml(m, pool="shared") for m in models]
    docs.append(worker_yaml("pooled", models[:3]))
    cluster.apply("---\n".join(docs), namespace=ns)
    replicas = [f"shared-pool-{i}" for i in range(4)]
    ring = modelpool.place(models, replicas, 2)
    cluster.wait_until(lambda: model_servers(cluster, ns, models) == {m: tuple(sorted(h)) for m, h in ring.items()}, 180,
                       "every model Ready on the replicas the ring places it on")  # fmt: skip
    pool = status(cluster, ns, "modelpool", "shared")
    assert (pool["readySummary"], pool["modelCount"], pool["models"]) == ("4/4", 50, models)
    shares = modelpool.loads(ring, replicas)
    assert {x["pod"]: x["models"] for x in pool["servers"]} == shares and max(shares.values()) <= modelpool.capacity(50, 4)
    assert {p["spec"]["nodeName"] for p in cluster.get_json("pods", "-l", "wasminfer.dev/model-pool=shared", namespace=ns)["items"]} <= cpu_nodes(cluster)
    ready(cluster, ns, "pooled")
    runtime_yaml = yaml.safe_load(cluster.get_json("configmap", "pooled-runtime", namespace=ns)["data"]["runtime.yaml"])
    urls = {m["name"]: m["remote"]["urls"] for m in runtime_yaml["models"]}
    assert urls == {m: [f"http://{h}.shared-pool.{ns}.svc:8000" for h in ring[m]] for m in models[:3]}
    row = cluster.kubectl("get", "modelpool", "shared", "-n", ns, "--no-headers").stdout.split()
    assert row[:6] == ["shared", "4/4", "50", "2", "cpu", "Serving"], row

    # One replica fewer: only the models it held (and a few the load cap moves) change replicas.
    cluster.kubectl("scale", "modelpool/shared", "--replicas=3", "-n", ns)
    after = modelpool.place(models, replicas[:3], 2)
    moved = modelpool.moved_copies(ring, after)
    assert moved <= 1.5 * 100 / 4, f"{moved} of 100 copies moved"
    changed = {m for m in models if set(ring[m]) != set(after[m])}
    assert changed >= {m for m in models if "shared-pool-3" in ring[m]}
    cluster.wait_until(lambda: model_servers(cluster, ns, models) == {m: tuple(sorted(h)) for m, h in after.items()}, 240,
                       "every model Ready on the replicas of the smaller ring")  # fmt: skip
    assert status(cluster, ns, "modelpool", "shared")["readySummary"] == "3/3"
    cluster.wait_until(
        lambda: {m["name"]: m["remote"]["urls"] for m in yaml.safe_load(cluster.get_json("configmap", "pooled-runtime", namespace=ns)["data"]["runtime.yaml"])["models"]}
        == {m: [f"http://{h}.shared-pool.{ns}.svc:8000" for h in after[m]] for m in models[:3]},
        60, "the worker calling the new replicas",
    )  # fmt: skip


def test_the_model_pool_example_serves_its_models_and_worker(cluster: Cluster, ns: str) -> None:
    cluster.apply((EXAMPLES / "model-pool.yaml").read_text(), namespace=ns)
    ready(cluster, ns, "ocr")
    pool = status(cluster, ns, "modelpool", "shared-models")
    assert (pool["readySummary"], pool["models"]) == ("3/3", ["text-detector", "text-recognizer"])
    assert sum(x["models"] for x in pool["servers"]) == 4, "two models, two copies each"
    for model in ("text-detector", "text-recognizer"):
        c = condition(cluster, ns, "inferencemodel", model, "Ready")
        assert (c["status"], c["reason"]) == ("True", "Serving") and "of ModelPool shared-models" in c["message"], c
    out = cluster.kubectl("get", "mp", "-n", ns).stdout.splitlines()
    assert out[0].split() == ["NAME", "READY", "MODELS", "COPIES", "PROFILE", "REASON", "AGE"]


@pytest.mark.parametrize(
    ("doc", "needles"),
    [
        (model_yaml("m" * 51, serving={}), ["spec.serving", "at most 50 characters"]),
        (model_yaml("both", serving={}, pool="p"), ["spec.pool", "set at most one of serving"]),
        (pool_yaml("p" * 48), ["a ModelPool has a name of at most 47 characters"]),
        (pool_yaml("p", copies=0), ["spec.copies"]),
        (worker_yaml("bad", route="hello"), ["spec.route", "route must start with '/'"]),
        (worker_yaml("bad", replicas=-1), ["spec.replicas"]),
        (
            worker_yaml("bad", module={"https": {"files": [{"url": "http://example.com/a.wasm", "sha256": SHA}]}}),
            ["spec.module.https.files[0].url", "url must be an https:// URL"],
        ),
        (
            worker_yaml("bad", module={"https": {"files": [{"url": "https://example.com/a.wasm", "sha256": "123"}]}}),
            ["spec.module.https.files[0].sha256", "sha256 must be 64 lowercase hex digits"],
        ),
        (
            worker_yaml("bad", module={"https": {"files": [{"url": "https://e.com/a.wasm", "sha256": SHA}]}, "pvc": {"claimName": "c", "files": [{"path": "a"}]}}),
            ["spec.module", "set exactly one of https, configMap, pvc or oci"],
        ),
        (
            worker_yaml("bad", module={"oci": {"reference": "models/m:v1"}}),
            ["spec.module.oci.reference", "should match"],
        ),
        (
            model_yaml("bad", source={"oci": {"reference": "registry.example.com/m:v1", "layer": "sha256:" + "0" * 64}}),
            ["spec.source", "oci.layer chooses a module's Wasm layer"],
        ),
        (
            worker_yaml("bad", signatures={"keys": []}),
            ["spec.signatures", "set keys, sigstore or both"],
        ),
        (worker_yaml("Bad-Name"), ["metadata.name", "DNS-1035"]),
        (worker_yaml("bad", placement={"profile": "cpu", "fallbacks": ["cpu"]}), ["spec.placement.fallbacks", "fallbacks must not repeat profile"]),
        (worker_yaml("bad", env=[{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]), ["spec.env[0]", "mutually exclusive"]),
        (model_yaml("bad", backend="onnxruntime", device="NPU"), ["spec.device", "onnxruntime runs on device CPU or GPU"]),
        (model_yaml("bad", format="openvino", backend="onnxruntime"), ["spec.backend", "can only be served by backend openvino"]),
        (model_yaml("bad", device="TPU"), ["spec.device", "Unsupported value"]),
    ],
)
def test_invalid_objects_are_refused_naming_the_field(cluster: Cluster, crds: None, doc: str, needles: list[str]) -> None:
    with pytest.raises(KubectlError) as info:
        cluster.apply(doc, namespace="default")
    for needle in needles:
        assert needle in info.value.stderr, info.value.stderr


def test_missing_model_is_waited_for_and_recovers_when_created(cluster: Cluster, ns: str) -> None:
    cluster.apply(worker_yaml("waits", ["later"]), namespace=ns)
    c = wait_condition(cluster, ns, "wasmworker", "waits", "Ready", "False", "ModelNotFound")
    assert "later" in c["message"]
    assert status(cluster, ns, "wasmworker", "waits")["modelsSummary"] == "0/1"
    assert not cluster.exists("deployment", "waits", namespace=ns)
    assert ("Warning", "ModelNotFound") in {(e["type"], e["reason"]) for e in events(cluster, ns, "waits")}
    cluster.apply(model_yaml("later"), namespace=ns)
    ready(cluster, ns, "waits")
    assert status(cluster, ns, "inferencemodel", "later")["workers"] == ["waits"]
    assert ("Normal", "Available") in {(e["type"], e["reason"]) for e in events(cluster, ns, "waits")}


def test_model_change_rolls_the_pods_and_model_deletion_waits_for_the_worker(cluster: Cluster, ns: str) -> None:
    cluster.apply(model_yaml("m") + "---\n" + worker_yaml("w", ["m"]), namespace=ns)
    ready(cluster, ns, "w")

    def config_hash() -> str:
        tmpl = cluster.get_json("deployment", "w", namespace=ns)["spec"]["template"]
        return str(tmpl["metadata"]["annotations"]["wasminfer.dev/config-hash"])

    before = config_hash()
    cluster.kubectl("patch", "inferencemodel", "m", "-n", ns, "--type=merge", "-p", json.dumps({"spec": {"options": {"precision": "f16"}}}))
    cluster.wait_until(lambda: config_hash() != before, 60, "the pod template to change with the model")
    runtime_yaml = yaml.safe_load(cluster.get_json("configmap", "w-runtime", namespace=ns)["data"]["runtime.yaml"])
    assert runtime_yaml["models"][0]["options"]["precision"] == "f16"
    ready(cluster, ns, "w")

    # A model in use is protected: its deletion waits, naming the worker, which keeps running.
    cluster.kubectl("delete", "inferencemodel", "m", "-n", ns, "--wait=false")
    c = wait_condition(cluster, ns, "inferencemodel", "m", "Deleting", "True", "InUse")
    assert "using this model: w;" in c["message"], c
    assert cluster.get_json("inferencemodel", "m", namespace=ns)["metadata"].get("deletionTimestamp")
    assert condition(cluster, ns, "wasmworker", "w", "ModelsReady")["status"] == "True"
    assert cluster.exists("deployment", "w", namespace=ns)

    cluster.kubectl("delete", "wasmworker", "w", "-n", ns)
    cluster.wait_until(lambda: not cluster.exists("inferencemodel", "m", namespace=ns), 30, "the model to go with its last worker")
    for kind, name in (("deployment", "w"), ("service", "w"), ("configmap", "w-runtime")):
        cluster.wait_until(lambda: not cluster.exists(kind, name, namespace=ns), 60, f"{kind}/{name} to be garbage-collected")


def test_operator_writes_status_only_and_pods_are_hardened(cluster: Cluster, ns: str) -> None:
    cluster.apply(worker_yaml("plain"), namespace=ns)
    ready(cluster, ns, "plain")
    ww = cluster.get_json("wasmworker", "plain", "--show-managed-fields", namespace=ns)
    ours = [f for f in ww["metadata"]["managedFields"] if f["manager"] == "wasminfer-operator"]
    assert ours and all(f.get("subresource") == "status" for f in ours), ours
    assert not ww["metadata"].get("finalizers")
    assert set(ww["metadata"].get("annotations") or {}) <= {"kubectl.kubernetes.io/last-applied-configuration"}
    (pod,) = pods(cluster, ns, "plain")
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod["spec"]["containers"] + pod["spec"]["initContainers"]:
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
    owner = cluster.get_json("deployment", "plain", namespace=ns)["metadata"]["ownerReferences"]
    assert owner == [{"apiVersion": "wasminfer.dev/v1alpha1", "kind": "WasmWorker", "name": "plain", "uid": ww["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]


def test_conflicting_models_give_a_condition_not_a_guess(cluster: Cluster, ns: str) -> None:
    intel = model_yaml("vino", device="GPU")
    nvidia = model_yaml("ort", backend="onnxruntime", device="GPU")
    cluster.apply(intel + "---\n" + nvidia + "---\n" + worker_yaml("torn", ["vino", "ort"]), namespace=ns)
    c = wait_condition(cluster, ns, "wasmworker", "torn", "Ready", "False", "ConflictingModels")
    assert "intel-gpu: vino" in c["message"] and "nvidia-gpu: ort" in c["message"]
    assert not cluster.exists("deployment", "torn", namespace=ns)
    cluster.kubectl("patch", "ww", "torn", "-n", ns, "--type=merge", "-p", '{"spec": {"placement": {"profile": "nvidia-gpu"}}}')
    ready(cluster, ns, "torn")
    runtime_yaml = yaml.safe_load(cluster.get_json("configmap", "torn-runtime", namespace=ns)["data"]["runtime.yaml"])
    devices = {m["name"]: m["device"] for m in runtime_yaml["models"]}
    assert devices == {"vino": "CPU", "ort": "GPU"}, "the Intel-GPU model runs on CPU in an NVIDIA pod"


def test_deleted_child_is_recreated(cluster: Cluster, ns: str) -> None:
    cluster.apply(worker_yaml("heal"), namespace=ns)
    ready(cluster, ns, "heal")
    uid = cluster.get_json("service", "heal", namespace=ns)["metadata"]["uid"]
    cluster.kubectl("delete", "service", "heal", "-n", ns)

    def recreated() -> bool:
        return cluster.exists("service", "heal", namespace=ns) and cluster.get_json("service", "heal", namespace=ns)["metadata"]["uid"] != uid

    cluster.wait_until(recreated, 60, "the Service to be recreated")


def test_status_stays_put_when_nothing_changes(cluster: Cluster, ns: str) -> None:
    """Level-triggered, but quiet: a settled worker is not rewritten (no churn for Argo CD or etcd)."""
    cluster.apply(worker_yaml("calm"), namespace=ns)
    ready(cluster, ns, "calm")
    time.sleep(2)
    rv = cluster.get_json("wasmworker", "calm", namespace=ns)["metadata"]["resourceVersion"]
    dep_rv = cluster.get_json("deployment", "calm", namespace=ns)["metadata"]["resourceVersion"]
    time.sleep(5)
    assert cluster.get_json("wasmworker", "calm", namespace=ns)["metadata"]["resourceVersion"] == rv
    assert cluster.get_json("deployment", "calm", namespace=ns)["metadata"]["resourceVersion"] == dep_rv
