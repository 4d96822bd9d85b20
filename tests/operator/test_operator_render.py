"""Rendering: a worker, its models and a profile in; ConfigMap, Service and Deployment out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from opbuilders import SHA, https_source, model_spec, worker_spec

from wasminfer_operator import api
from wasminfer_operator.profiles import OperatorConfig, load_operator_config, parse_operator_config
from wasminfer_operator.render import (
    CONFIG_HASH,
    MANAGED_BY_LABEL,
    PROFILE_LABEL,
    RENDER_HASH,
    TEMPLATE_HASH,
    WORKER_LABEL,
    NamedModel,
    ObjectRef,
    PoolRoute,
    Rendered,
    render_worker,
    selector_string,
    worker_url,
)
from wasminfer_runtime import modelpool
from wasminfer_runtime.config import parse_runtime_config
from wasminfer_runtime.fetch import FetchPlan

REF = ObjectRef("hello", "team-a", "0f3c-uid")


@pytest.fixture
def cfg() -> OperatorConfig:
    return load_operator_config(env={})


def model(name: str = "mobilenet", **overrides: Any) -> NamedModel:
    return NamedModel(name, api.InferenceModelSpec.model_validate(model_spec(**overrides)))


def render(cfg: OperatorConfig, profile: str = "cpu", named: list[NamedModel] | None = None, **overrides: Any) -> Rendered:
    """Render a worker spec (the defaults plus `overrides`) that uses the `named` models."""
    named = named or []
    overrides.setdefault("models", [m.name for m in named])
    spec = api.WasmWorkerSpec.model_validate(worker_spec(**overrides))
    return render_worker(REF, spec, named, profile, cfg)


def pod(r: Rendered) -> dict[str, Any]:
    spec: dict[str, Any] = r.deployment["spec"]["template"]["spec"]
    return spec


def container(r: Rendered, name: str = "runtime") -> dict[str, Any]:
    p = pod(r)
    found: dict[str, Any] = next(c for c in p["containers"] + p["initContainers"] if c["name"] == name)
    return found


def runtime_yaml(r: Rendered) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(r.config_map["data"]["runtime.yaml"])
    return data


def test_children_have_names_labels_and_owner(cfg: OperatorConfig) -> None:
    r = render(cfg)
    assert [c["kind"] for c in r.children] == ["ConfigMap", "Service", "Deployment"]
    assert r.config_map["metadata"]["name"] == "hello-runtime"
    for child in r.children:
        meta = child["metadata"]
        assert meta["namespace"] == "team-a"
        assert meta["labels"][MANAGED_BY_LABEL] == "wasminfer-operator" and meta["labels"][WORKER_LABEL] == "hello"
        assert meta["ownerReferences"] == [
            {"apiVersion": "wasminfer.dev/v1alpha1", "kind": "WasmWorker", "name": "hello", "uid": "0f3c-uid", "controller": True, "blockOwnerDeletion": True}
        ]
        assert len(meta["annotations"][RENDER_HASH]) == 16
    dep = r.deployment["spec"]
    assert dep["selector"] == {"matchLabels": {WORKER_LABEL: "hello"}}
    assert r.service["spec"]["selector"] == {WORKER_LABEL: "hello"}
    assert selector_string("hello") == f"{WORKER_LABEL}=hello"
    assert worker_url(REF, "/hello") == "http://hello.team-a.svc/hello"
    assert r.service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]


def test_pods_are_hardened(cfg: OperatorConfig) -> None:
    r = render(cfg)
    p = pod(r)
    assert p["securityContext"]["runAsNonRoot"] is True and p["securityContext"]["runAsUser"] != 0
    assert p["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert p["automountServiceAccountToken"] is False
    for c in p["containers"] + p["initContainers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        writable = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
        assert writable <= {"/var/lib/wasminfer", "/tmp"}, writable


def test_init_container_fetches_then_runtime_serves(cfg: OperatorConfig) -> None:
    r = render(cfg, named=[model()])
    fetch = container(r, "fetch")
    assert fetch["command"][:4] == ["wasminfer", "fetch", "--plan", "/etc/wasminfer/fetch.yaml"]
    assert fetch["terminationMessagePolicy"] == "FallbackToLogsOnError"
    runtime = container(r)
    assert runtime["command"] == ["wasminfer", "serve", "--config", "/etc/wasminfer/runtime.yaml"]
    assert runtime["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert runtime["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert runtime["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert runtime["image"] == fetch["image"] == "ghcr.io/wasminfer/runtime:0.1.0"


def test_runtime_yaml_is_the_runtime_contract(cfg: OperatorConfig) -> None:
    """The ConfigMap's runtime.yaml is accepted by the runtime's own parser, with the right content."""
    r = render(
        cfg,
        named=[model(options={"precision": "f16", "performanceHint": "THROUGHPUT", "streams": 2, "maxDynamicDim": 8,
                              "maxOutputBytes": 4096}, memoryMiB=512)],
        vars={"A": "1"},
        limits={"memoryMiB": 64, "timeoutSeconds": 3, "maxBodyBytes": 1000},
    )
    cfg_rt = parse_runtime_config(yaml.safe_load(r.config_map["data"]["runtime.yaml"]), "runtime.yaml")
    assert cfg_rt.server.host == "0.0.0.0" and cfg_rt.server.port == 8080
    (m,) = cfg_rt.models
    assert m.name == "mobilenet" and m.backend is not None and m.backend.value == "openvino" and m.device.value == "CPU"
    assert [str(f) for f in m.files] == ["/var/lib/wasminfer/models/mobilenet/model.xml", "/var/lib/wasminfer/models/mobilenet/model.bin"]
    assert (m.options.precision.value, m.options.performance_hint.value, m.options.streams) == ("f16", "THROUGHPUT", 2)
    assert (m.options.max_dynamic_dim, m.options.max_output_bytes) == (8, 4096)
    assert m.memory_mib == 512
    (w,) = cfg_rt.workers
    assert (w.name, w.route, str(w.module)) == ("hello", "/hello", "/var/lib/wasminfer/modules/hello.wasm")
    assert w.vars == {"A": "1"}
    assert (w.limits.memory_mib, w.limits.timeout_seconds, w.limits.max_body_bytes) == (64, 3.0, 1000)
    assert w.wasi_nn.enabled and w.wasi_nn.models == ["mobilenet"] and [b.value for b in w.wasi_nn.allowed_backends] == ["openvino"]


def test_worker_without_models_has_wasi_nn_off(cfg: OperatorConfig) -> None:
    (w,) = runtime_yaml(render(cfg))["workers"]
    assert w["wasi_nn"] == {"enabled": False, "allowed_backends": [], "models": [], "input_layout": "model"}


def test_fetch_plan_downloads_https_and_copies_config_maps(cfg: OperatorConfig) -> None:
    cm_model = model("cm-model", source={"configMap": {"name": "weights", "files": [{"key": "model.xml", "sha256": SHA}, {"key": "model.bin"}]}})
    r = render(cfg, named=[cm_model])
    plan = FetchPlan.model_validate(yaml.safe_load(r.config_map["data"]["fetch.yaml"]))
    steps = [(f.url, str(f.path) if f.path else None, f.sha256, str(f.dest) if f.dest else None) for f in plan.files]
    vol = next(v for v in pod(r)["volumes"] if v.get("configMap", {}).get("name") == "weights")
    mounted = f"/var/run/wasminfer/sources/{vol['name']}"
    assert steps == [
        (None, f"{mounted}/model.xml", SHA, "/var/lib/wasminfer/models/cm-model/model.xml"),
        (None, f"{mounted}/model.bin", None, "/var/lib/wasminfer/models/cm-model/model.bin"),
        ("https://models.example.com/m/hello.wasm", None, SHA, "/var/lib/wasminfer/modules/hello.wasm"),
    ]
    assert vol["configMap"]["items"] == [{"key": "model.bin", "path": "model.bin"}, {"key": "model.xml", "path": "model.xml"}]
    fetch_mounts = {m["mountPath"]: m for m in container(r, "fetch")["volumeMounts"]}
    assert fetch_mounts[mounted]["readOnly"] is True
    assert mounted not in {m["mountPath"] for m in container(r)["volumeMounts"]}, "the runtime reads the copies"


def test_claim_sources_are_verified_in_place_and_mounted_read_only(cfg: OperatorConfig) -> None:
    pvc_model = model("big", format="onnx", source={"pvc": {"claimName": "models", "files": [{"path": "big/model.onnx", "sha256": SHA}]}})
    module = {"pvc": {"claimName": "models", "files": [{"path": "workers/w.wasm"}]}}
    r = render(cfg, named=[pvc_model], module=module)
    claim_volumes = [v for v in pod(r)["volumes"] if "persistentVolumeClaim" in v]
    assert len(claim_volumes) == 1, "one volume per claim, shared by module and model"
    assert claim_volumes[0]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    root = f"/var/run/wasminfer/claims/{claim_volumes[0]['name']}"
    plan = FetchPlan.model_validate(yaml.safe_load(r.config_map["data"]["fetch.yaml"]))
    assert [(str(f.path), f.sha256, f.dest) for f in plan.files] == [(f"{root}/big/model.onnx", SHA, None), (f"{root}/workers/w.wasm", None, None)]
    rt = runtime_yaml(r)
    assert rt["models"][0]["files"] == [f"{root}/big/model.onnx"] and rt["workers"][0]["module"] == f"{root}/workers/w.wasm"
    assert {"name": claim_volumes[0]["name"], "mountPath": root, "readOnly": True} in container(r)["volumeMounts"]


def test_nvidia_profile_requests_the_gpu_tolerates_its_taint_and_uses_its_image(cfg: OperatorConfig) -> None:
    m = model("resnet", format="onnx", backend="onnxruntime", device="GPU", source=https_source("model.onnx"))
    r = render(cfg, "nvidia-gpu", [m], resources={"requests": {"cpu": "1"}, "limits": {"memory": "2Gi"}})
    runtime = container(r)
    assert runtime["resources"] == {"requests": {"cpu": "1", "nvidia.com/gpu": "1"}, "limits": {"memory": "2Gi", "nvidia.com/gpu": "1"}}
    assert pod(r)["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert runtime["image"] == "ghcr.io/wasminfer/runtime-nvidia:0.1.0"
    assert r.deployment["spec"]["template"]["metadata"]["labels"][PROFILE_LABEL] == "nvidia-gpu"
    assert runtime_yaml(r)["models"][0]["device"] == "GPU"


def test_intel_gpu_profile_and_fallback_to_cpu_rewrites_the_device(cfg: OperatorConfig) -> None:
    m = model("det", device="GPU")
    gpu = render(cfg, "intel-gpu", [m])
    assert container(gpu)["resources"]["limits"] == {"gpu.intel.com/i915": "1"}
    assert runtime_yaml(gpu)["models"][0]["device"] == "GPU"
    assert "tolerations" not in pod(gpu)
    cpu = render(cfg, "cpu", [m])
    assert "resources" not in container(cpu)
    assert runtime_yaml(cpu)["models"][0]["device"] == "CPU", "a GPU model compiles for CPU on the cpu profile"
    assert cpu.deployment["spec"]["template"]["metadata"]["labels"][PROFILE_LABEL] == "cpu"


def test_placement_and_image_override(cfg: OperatorConfig) -> None:
    r = render(
        cfg,
        "nvidia-gpu",
        image="registry.example.com/rt:9",
        placement={
            "nodeSelector": {"zone": "a"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}, {"key": "spot", "operator": "Exists"}],
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        },
    )
    p = pod(r)
    assert p["nodeSelector"] == {"zone": "a"}
    assert p["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}, {"key": "spot", "operator": "Exists"}]
    assert p["affinity"] == {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}
    assert container(r)["image"] == "registry.example.com/rt:9"


def test_env_reaches_the_container_and_the_guest(cfg: OperatorConfig) -> None:
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "t"}}}, {"name": "MODE", "value": "fast"}]
    r = render(cfg, env=env, vars={"MODE": "explicit"})
    assert container(r)["env"] == [{"name": "HOME", "value": "/tmp"}, *env]
    assert runtime_yaml(r)["workers"][0]["vars"] == {"MODE": "explicit", "TOKEN": "$TOKEN"}


def test_folders_are_mounted_read_only_unless_writable(cfg: OperatorConfig) -> None:
    folders = [{"path": "/labels", "configMap": {"name": "labels"}}, {"path": "/scratch", "writable": True, "emptyDir": {"sizeLimit": "1Gi"}}]
    r = render(cfg, folders=folders)
    mounts = {m["name"]: m for m in container(r)["volumeMounts"]}
    assert mounts["folder-0"]["readOnly"] is True and mounts["folder-1"]["readOnly"] is False
    volumes = {v["name"]: v for v in pod(r)["volumes"]}
    assert volumes["folder-0"]["configMap"] == {"name": "labels"} and volumes["folder-1"]["emptyDir"] == {"sizeLimit": "1Gi"}
    assert runtime_yaml(r)["workers"][0]["folders"] == [
        {"from": "/var/lib/wasminfer-folders/0", "to": "/labels", "writable": False},
        {"from": "/var/lib/wasminfer-folders/1", "to": "/scratch", "writable": True},
    ]


def test_config_hash_rolls_pods_when_a_model_changes_and_only_then(cfg: OperatorConfig) -> None:
    base = render(cfg, named=[model()])
    same = render(cfg, named=[model()])
    assert base.deployment == same.deployment and base.config_map == same.config_map
    changed = render(cfg, named=[model(options={"precision": "f16"})])
    annotation = base.deployment["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH]
    assert annotation == base.config_hash
    assert changed.deployment["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH] != annotation
    assert changed.deployment["metadata"]["annotations"][RENDER_HASH] != base.deployment["metadata"]["annotations"][RENDER_HASH]
    scaled = render(cfg, named=[model()], replicas=5)
    assert scaled.config_hash == base.config_hash, "scaling does not roll pods"
    assert scaled.deployment["spec"]["replicas"] == 5
    assert scaled.deployment["metadata"]["annotations"][RENDER_HASH] != base.deployment["metadata"]["annotations"][RENDER_HASH]


def test_allowed_backends_default_to_the_models_backends(cfg: OperatorConfig) -> None:
    ort = model("o", format="onnx", backend="onnxruntime", source=https_source("m.onnx"))
    r = render(cfg, named=[model("v"), ort])
    assert runtime_yaml(r)["workers"][0]["wasi_nn"]["allowed_backends"] == ["onnxruntime", "openvino"]
    r = render(cfg, allowedBackends=["onnxruntime"])
    assert runtime_yaml(r)["workers"][0]["wasi_nn"] == {"enabled": True, "allowed_backends": ["onnxruntime"], "models": [],
                                                       "input_layout": "model"}


def test_examples_render(cfg: OperatorConfig) -> None:
    """Every example InferenceModel and WasmWorker parses, and each worker renders with its models."""
    folder = Path(__file__).resolve().parents[2] / "examples/kubernetes"
    docs = [d for f in sorted(folder.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    models = {d["metadata"]["name"]: api.InferenceModelSpec.model_validate(d["spec"]) for d in docs if d.get("kind") == "InferenceModel"}
    workers = [d for d in docs if d.get("kind") == "WasmWorker"]
    assert len(workers) >= 4 and len(models) >= 4
    pools = {d["metadata"]["name"]: api.ModelPoolSpec.model_validate(d["spec"]) for d in docs if d.get("kind") == "ModelPool"}
    routes = {}
    for pool, pool_spec in pools.items():
        members = sorted(n for n, m in models.items() if m.pool == pool)
        holders = modelpool.place(members, [f"{pool}-pool-{i}" for i in range(pool_spec.replicas)], pool_spec.copies)
        routes |= {m: PoolRoute(tuple(f"http://{h}.{pool}-pool.examples.svc:8000" for h in holders[m]), 30.0) for m in members}
    for d in workers:
        spec = api.WasmWorkerSpec.model_validate(d["spec"])
        named = [NamedModel(n, models[n], routes.get(n)) for n in spec.models]
        r = render_worker(ObjectRef(d["metadata"]["name"], "examples", "uid"), spec, named, spec.placement.profile or "cpu", cfg)
        parse_runtime_config(yaml.safe_load(r.config_map["data"]["runtime.yaml"]), d["metadata"]["name"])


def test_cpu_pods_stay_off_accelerator_nodes_and_keep_the_workers_affinity(cfg: OperatorConfig) -> None:
    avoid = [
        {"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"},
        {"key": "intel.feature.node.kubernetes.io/gpu", "operator": "DoesNotExist"},
        {"key": "intel.feature.node.kubernetes.io/npu", "operator": "DoesNotExist"},
    ]
    plain = pod(render(cfg))["affinity"]
    assert plain == {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": avoid}]}}}
    zone = {"key": "zone", "operator": "In", "values": ["a"]}
    anti = {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}}]}
    mine = {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [zone]}, {"matchFields": []}]}},
        "podAntiAffinity": anti,
    }
    merged = pod(render(cfg, placement={"affinity": mine}))["affinity"]
    terms = merged["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [zone, *avoid]}, {"matchFields": [], "matchExpressions": avoid}], "each OR-ed term also avoids accelerators"
    assert merged["podAntiAffinity"] == anti
    assert "affinity" not in pod(render(cfg, "intel-gpu"))


def test_device_profiles_replace_pods_without_surging(cfg: OperatorConfig) -> None:
    # A surge pod would ask for a device a one-device node does not have: the rollout would wait forever.
    for profile in ("intel-gpu", "intel-npu", "nvidia-gpu"):
        dep = render(cfg, profile).deployment["spec"]
        assert dep["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}, profile
    default = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
    assert render(cfg).deployment["spec"]["strategy"] == default, "CPU workers keep the Deployment default (25% surge), written out"
    assert render(cfg).deployment["spec"]["progressDeadlineSeconds"] == 600
    own = parse_operator_config(
        {
            "progressDeadlineSeconds": 30,
            "profiles": {
                "npu-recreate": {"device": "NPU", "backends": ["openvino"], "resources": {"npu.intel.com/accel": 1}, "rollout": {"strategy": "Recreate"}},
                "gpu-surge": {"device": "GPU", "backends": ["openvino"], "resources": {"gpu.intel.com/i915": 1}, "rollout": {"maxSurge": "50%", "maxUnavailable": 0}},
                "cpu": {"device": "CPU", "backends": ["openvino"], "rollout": {"maxSurge": 0, "maxUnavailable": 1}},
            },
        },
        "operator.yaml",
    )
    assert render(own, "npu-recreate").deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert render(own, "gpu-surge").deployment["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "50%", "maxUnavailable": 0}}
    assert render(own).deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert render(own).deployment["spec"]["progressDeadlineSeconds"] == 30


def test_pods_carry_the_hash_of_their_template(cfg: OperatorConfig) -> None:
    def template_hash(r: Rendered) -> str:
        value: str = r.deployment["spec"]["template"]["metadata"]["annotations"][TEMPLATE_HASH]
        return value

    base = render(cfg, named=[model()])
    assert len(template_hash(base)) == 16 and template_hash(base) == template_hash(render(cfg, named=[model()]))
    assert template_hash(render(cfg, named=[model()], replicas=5)) == template_hash(base), "scaling keeps the pods' revision"
    # Changes the runtime configuration does not see still make a new revision.
    assert template_hash(render(cfg, named=[model()], image="mine:2")) != template_hash(base)
    assert template_hash(render(cfg, named=[model()], resources={"limits": {"memory": "1Gi"}})) != template_hash(base)
    assert template_hash(render(cfg, "intel-gpu", named=[model()])) != template_hash(base)


@pytest.mark.parametrize(("resources", "kv", "processes"), [
    ({}, None, 1),  # asked for no CPU: one process
    ({"requests": {"cpu": "500m"}}, None, 1),
    ({"requests": {"cpu": "1500m"}}, None, 2),
    ({"requests": {"cpu": "1"}, "limits": {"cpu": "4"}}, None, 4),  # the limit, when there is one
    ({"limits": {"cpu": "2.5"}}, None, 3),
    ({"limits": {"cpu": "4"}}, {"namespace": "counts"}, 1),  # a key/value store lives in one process
])
def test_serving_processes_follow_the_workers_cpu(cfg: OperatorConfig, resources: dict[str, Any],
                                                  kv: dict[str, str] | None, processes: int) -> None:
    extra = {"kv": kv} if kv is not None else {}
    r = render(cfg, resources=resources, **extra)
    assert runtime_yaml(r)["server"]["processes"] == processes
