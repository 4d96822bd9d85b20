"""An InferenceModel with spec.serving: its model servers rendered on the model's device profile (with
fallbacks), workers using it given a remote entry and placed on CPU, and the model's status telling
how many model servers hold it."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import yaml
from opbuilders import https_source, worker_spec

from wasminfer_operator import api
from wasminfer_operator.controllers.model import ModelController
from wasminfer_operator.controllers.pool import PoolController
from wasminfer_operator.controllers.shared import Indexes, SpecCache, StatusWriter
from wasminfer_operator.handmade.informer import ByWorker
from wasminfer_operator.handmade.workqueue import WorkQueue
from wasminfer_operator.names import MODEL_SERVER_LABEL
from wasminfer_operator.observe import ChildView, PodView, object_view
from wasminfer_operator.placement import decide
from wasminfer_operator.profiles import OperatorConfig, load_operator_config
from wasminfer_operator.render import NamedModel, ObjectRef, PoolRoute, render_worker
from wasminfer_operator.render_serving import render_model_pool, render_model_server
from wasminfer_operator.status import ModelObservation, ServingObservation, model_condition, model_status
from wasminfer_runtime import modelpool
from wasminfer_runtime.config import parse_runtime_config

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)
NV = {"format": "onnx", "backend": "onnxruntime", "device": "GPU", "source": https_source("resnet.onnx")}


@pytest.fixture
def cfg() -> OperatorConfig:
    return load_operator_config(env={})


def served(**serving: Any) -> api.InferenceModelSpec:
    return api.InferenceModelSpec.model_validate({**NV, "serving": serving})


def test_the_model_servers_land_on_the_models_device_profile(cfg: OperatorConfig) -> None:
    spec = served(replicas=2, threads=3)
    d = decide(spec.serving, [NamedModel("resnet", spec.model_copy(update={"serving": None}))], cfg, None, [], NOW)  # type: ignore[arg-type]
    assert d.profile == "nvidia-gpu"
    r = render_model_server(ObjectRef("resnet", "team-a", "uid-m", kind="InferenceModel"), spec, "nvidia-gpu", cfg)
    dep = r.deployment
    assert dep["metadata"]["name"] == r.service["metadata"]["name"] == r.config_map["metadata"]["name"] == "resnet-model-server"
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "InferenceModel"
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["selector"]["matchLabels"] == {MODEL_SERVER_LABEL: "resnet"}
    pod = dep["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert server["command"][:3] == ["wasminfer", "model-server", "/etc/wasminfer/runtime.yaml"]
    assert "--exit-on-load-failure" in server["command"] and server["command"][-2:] == ["--threads", "3"]
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert server["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert [p["port"] for p in r.service["spec"]["ports"]] == [8000, 8001]
    runtime = parse_runtime_config(yaml.safe_load(r.config_map["data"]["runtime.yaml"]), "runtime.yaml")
    assert [(m.name, m.device.value, m.backend.value if m.backend else None) for m in runtime.models] == [("resnet", "GPU", "onnxruntime")]
    assert runtime.workers == [] and runtime.server.exit_on_load_failure
    assert "resnet.onnx" in r.config_map["data"]["fetch.yaml"]


def test_a_fallback_to_cpu_loads_the_model_on_the_cpu(cfg: OperatorConfig) -> None:
    spec = served(placement={"fallbacks": ["cpu"], "fallbackAfterSeconds": 30})
    stuck = PodView("resnet-model-server-1", "", "nvidia-gpu", False, (NOW - timedelta(seconds=31)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "0/3 nodes are available: 3 Insufficient nvidia.com/gpu", False, False, None, server="resnet")  # fmt: skip
    d = decide(spec.serving, [NamedModel("resnet", spec.model_copy(update={"serving": None}))], cfg, "nvidia-gpu", [stuck], NOW)  # type: ignore[arg-type]
    assert (d.profile, d.switched_from) == ("cpu", "nvidia-gpu")
    r = render_model_server(ObjectRef("resnet", "team-a", "uid-m", kind="InferenceModel"), spec, "cpu", cfg)
    runtime = parse_runtime_config(yaml.safe_load(r.config_map["data"]["runtime.yaml"]), "runtime.yaml")
    assert runtime.models[0].device.value == "CPU"
    pod = r.deployment["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in str(pod["containers"]) and "tolerations" not in pod


def test_a_worker_using_a_served_model_calls_it_and_runs_on_cpu(cfg: OperatorConfig) -> None:
    model = NamedModel("resnet", served(protocol="grpc", timeoutSeconds=4))
    spec = api.WasmWorkerSpec.model_validate(worker_spec(models=["resnet"]))
    d = decide(spec, [model], cfg, None, [], NOW)
    assert d.profile == "cpu", "the model's GPU is the model servers' business"
    r = render_worker(ObjectRef("classify", "team-a", "uid-w"), spec, [model], "cpu", cfg)
    runtime = parse_runtime_config(yaml.safe_load(r.config_map["data"]["runtime.yaml"]), "runtime.yaml")
    remote = runtime.models[0].remote
    assert remote is not None and runtime.models[0].files == []
    assert remote.url == "grpc://resnet-model-server.team-a.svc:8001" and remote.timeout_seconds == 4
    assert "resnet.onnx" not in r.config_map["data"]["fetch.yaml"], "nothing of the model is fetched by the worker"
    assert "nvidia.com/gpu" not in str(r.deployment["spec"]["template"]["spec"]["containers"])
    rest = NamedModel("resnet", served())
    r = render_worker(ObjectRef("classify", "team-a", "uid-w"), spec, [rest], "cpu", cfg)
    runtime = parse_runtime_config(yaml.safe_load(r.config_map["data"]["runtime.yaml"]), "runtime.yaml")
    assert runtime.models[0].remote is not None and runtime.models[0].remote.url == "http://resnet-model-server.team-a.svc:8000"


def pod(name: str, *, ready: bool = False, scheduled: bool = True, problem: tuple[str, str] | None = None, terminating: bool = False) -> PodView:
    return PodView(name, "", "nvidia-gpu", scheduled, None, "", ready, terminating, problem, server="resnet", node="gpu-nvidia-1" if scheduled else "")


def observation(cfg: OperatorConfig, replicas: int, pods: list[PodView]) -> ModelObservation:
    spec = served(replicas=replicas)
    d = decide(spec.serving, [NamedModel("resnet", spec.model_copy(update={"serving": None}))], cfg, None, pods, NOW)  # type: ignore[arg-type]
    sv = ServingObservation(replicas, "http://resnet-model-server.ns.svc:8000", "grpc://resnet-model-server.ns.svc:8001",
                            "wasminfer.dev/model-server=resnet", d, pods)  # fmt: skip
    return ModelObservation(generation=1, backend="onnxruntime", profile="nvidia-gpu", serving=sv)


def test_ready_once_a_model_server_holds_the_model(cfg: OperatorConfig) -> None:
    starting = model_condition(observation(cfg, 2, [pod("a"), pod("b", scheduled=False)]))
    assert (starting.status, starting.reason) == ("False", "ServerStarting")
    failed = model_condition(observation(cfg, 2, [pod("a", problem=("FetchFailed", "sha256 mismatch")), pod("b")]))
    assert (failed.status, failed.reason) == ("False", "FetchFailed") and "model-server pod a: sha256 mismatch" in failed.message
    obs = observation(cfg, 2, [pod("a", ready=True), pod("b"), pod("old", ready=True, terminating=True)])
    ready = model_condition(obs)
    assert (ready.status, ready.reason) == ("True", "Serving")
    assert ready.message == "1 of 2 model-server pods serve the model at http://resnet-model-server.ns.svc:8000"
    status, _ = model_status(obs, {}, NOW)
    wire = status.wire()
    assert (wire["replicas"], wire["readyReplicas"], wire["readySummary"]) == (2, 1, "1/2")
    assert wire["selector"] == "wasminfer.dev/model-server=resnet"
    assert wire["grpcEndpoint"] == "grpc://resnet-model-server.ns.svc:8001"
    assert [(s["pod"], s["state"]) for s in wire["servers"]] == [("a", "Ready"), ("b", "Loading"), ("old", "Terminating")]
    zero = model_condition(observation(cfg, 0, []))
    assert (zero.status, zero.reason) == ("False", "ScaledToZero")


class RecordingKube:
    def __init__(self) -> None:
        self.applied: list[dict[str, Any]] = []
        self.deleted: list[tuple[str, str]] = []
        self.statuses: list[dict[str, Any]] = []

    async def apply(self, obj: dict[str, Any], force: bool = False) -> None:
        self.applied.append(obj)

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        self.deleted.append((kind, name))

    async def patch_status(self, plural: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.statuses.append(patch)

    async def set_model_finalizers(self, *_: Any) -> None:
        pass


def controller_for(spec: dict[str, Any], name: str = "resnet") -> tuple[ModelController, RecordingKube, ByWorker[ChildView]]:
    view = object_view({
        "apiVersion": "wasminfer.dev/v1alpha1", "kind": "InferenceModel", "spec": spec,
        "metadata": {"namespace": "ns", "name": name, "uid": "uid-m", "generation": 1, "resourceVersion": "1",
                     "finalizers": ["wasminfer.dev/in-use-protection"]},
    })  # fmt: skip
    deployments: ByWorker[ChildView] = ByWorker()
    ix = Indexes(workers={}, models={view.key: [view]}, model_users={},
                 deployments=deployments, services=ByWorker(), config_maps=ByWorker(), pods=ByWorker())  # fmt: skip
    kube = RecordingKube()
    writer = StatusWriter(kube, lambda: NOW, post_event=lambda *_: None)  # type: ignore[arg-type]
    queue: WorkQueue[tuple[str, str, str]] = WorkQueue()
    return ModelController(load_operator_config(env={}), kube, ix, SpecCache(), writer, queue), kube, deployments  # type: ignore[arg-type]


async def test_the_controller_applies_the_model_servers_and_removes_them_with_spec_serving() -> None:
    controller, kube, _ = controller_for({**NV, "serving": {"replicas": 1}})
    await controller.reconcile("ns", "resnet")
    assert [(o["kind"], o["metadata"]["name"]) for o in kube.applied] == [
        ("ConfigMap", "resnet-model-server"), ("Service", "resnet-model-server"), ("Deployment", "resnet-model-server")
    ]
    ready = next(c for c in kube.statuses[-1]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ServerStarting")
    assert kube.statuses[-1]["profile"] == "nvidia-gpu" and kube.statuses[-1]["endpoint"].startswith("http://resnet-model-server.ns.svc")
    controller.queue.close()

    plain, kube, deployments = controller_for(dict(NV))
    deployments.put("ns", ChildView("Deployment", "resnet-model-server", "", "uid-m", "h", server="resnet"))
    await plain.reconcile("ns", "resnet")
    assert kube.applied == []
    assert kube.deleted == [("Deployment", "resnet-model-server")]
    assert "endpoint" not in kube.statuses[-1] or kube.statuses[-1]["endpoint"] is None
    plain.queue.close()


async def test_a_name_too_long_for_the_service_is_an_invalid_spec() -> None:
    controller, kube, _ = controller_for({**NV, "serving": {}}, name="m" * 51)
    await controller.reconcile("ns", "m" * 51)
    ready = next(c for c in kube.statuses[-1]["conditions"] if c["type"] == "Ready")
    assert (ready["reason"], kube.applied) == ("InvalidSpec", [])
    assert "at most 50 characters" in ready["message"]
    controller.queue.close()


# --- model pools -----------------------------------------------------------------------------------


def pool_model(name: str, **extra: Any) -> NamedModel:
    spec = {"format": "onnx", "source": https_source(f"{name}.onnx"), **extra}
    return NamedModel(name, api.InferenceModelSpec.model_validate(spec))


def test_a_pool_renders_a_stateful_set_whose_replicas_fetch_and_load_their_share(cfg: OperatorConfig) -> None:
    spec = api.ModelPoolSpec.model_validate({"replicas": 3, "copies": 2, "threads": 2})
    members = [pool_model(f"m{i}") for i in range(6)]
    r = render_model_pool(ObjectRef("shared", "team-a", "uid-p", kind="ModelPool"), spec, members, "cpu", cfg)
    sts = r.stateful_set
    assert (sts["kind"], sts["metadata"]["name"], sts["spec"]["serviceName"], sts["spec"]["replicas"]) == ("StatefulSet", "shared-pool", "shared-pool", 3)
    assert sts["metadata"]["ownerReferences"][0]["kind"] == "ModelPool"
    assert r.service["spec"]["clusterIP"] == "None", "headless: one DNS name per replica"
    pod = sts["spec"]["template"]["spec"]
    pool_args = ["--pool-replicas", "shared-pool-0,shared-pool-1,shared-pool-2", "--pool-replica", "$(POD_NAME)", "--pool-copies", "2"]
    for container in (pod["initContainers"][0], pod["containers"][0]):
        assert container["command"][-6:] == pool_args, container["command"]
        assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]
    runtime = parse_runtime_config(yaml.safe_load(r.config_map["data"]["runtime.yaml"]), "runtime.yaml")
    assert [m.name for m in runtime.models] == [f"m{i}" for i in range(6)]
    plan = yaml.safe_load(r.config_map["data"]["fetch.yaml"])
    assert [f["model"] for f in plan["files"]] == [f"m{i}" for i in range(6)], "each file names its model: replicas fetch their share"


def test_a_worker_calls_the_replicas_of_the_pool_that_hold_its_model(cfg: OperatorConfig) -> None:
    route = PoolRoute(("http://shared-pool-0.shared-pool.team-a.svc:8000", "http://shared-pool-2.shared-pool.team-a.svc:8000"), 7.0)
    model = NamedModel("m1", api.InferenceModelSpec.model_validate({**NV, "pool": "shared"}), route)
    spec = api.WasmWorkerSpec.model_validate(worker_spec(models=["m1"]))
    assert decide(spec, [model], cfg, None, [], NOW).profile == "cpu"
    r = render_worker(ObjectRef("w", "team-a", "uid-w"), spec, [model], "cpu", cfg)
    runtime = parse_runtime_config(yaml.safe_load(r.config_map["data"]["runtime.yaml"]), "runtime.yaml")
    remote = runtime.models[0].remote
    assert remote is not None and remote.urls == list(route.urls) and remote.timeout_seconds == 7.0
    with pytest.raises(ValueError, match="set at most one of serving"):
        api.InferenceModelSpec.model_validate({**NV, "pool": "shared", "serving": {}})


async def test_the_pool_places_its_models_and_each_model_knows_its_replicas() -> None:
    pool = object_view({
        "apiVersion": "wasminfer.dev/v1alpha1", "kind": "ModelPool", "spec": {"replicas": 4, "copies": 2},
        "metadata": {"namespace": "ns", "name": "shared", "uid": "uid-p", "generation": 1, "resourceVersion": "1"},
    })  # fmt: skip
    models = {
        ("ns", f"m{i}"): [object_view({
            "apiVersion": "wasminfer.dev/v1alpha1", "kind": "InferenceModel",
            "spec": {"format": "onnx", "source": https_source(f"m{i}.onnx"), "pool": "shared"},
            "metadata": {"namespace": "ns", "name": f"m{i}", "uid": f"uid-{i}", "generation": 1, "resourceVersion": "1"},
        })] for i in range(10)
    }  # fmt: skip
    ix = Indexes(workers={}, models=models, model_users={}, deployments=ByWorker(), services=ByWorker(), config_maps=ByWorker(),
                 pods=ByWorker(), pools={pool.key: [pool]}, pool_members={("ns", "shared"): [m for _, m in models]},
                 stateful_sets=ByWorker())  # fmt: skip
    kube = RecordingKube()
    writer = StatusWriter(kube, lambda: NOW, post_event=lambda *_: None)  # type: ignore[arg-type]
    queue: WorkQueue[tuple[str, str, str]] = WorkQueue()
    cfg, specs = load_operator_config(env={}), SpecCache()
    model_controller = ModelController(cfg, kube, ix, specs, writer, queue)  # type: ignore[arg-type]
    pools = PoolController(cfg, kube, ix, specs, writer, queue, model_controller)  # type: ignore[arg-type]
    await pools.reconcile("ns", "shared")
    assert [(o["kind"], o["metadata"]["name"]) for o in kube.applied] == [
        ("ConfigMap", "shared-pool"), ("Service", "shared-pool"), ("StatefulSet", "shared-pool")
    ]
    status = kube.statuses[-1]
    placed = [f"m{i}" for i in range(10)]
    assert (status["models"], status["modelCount"], status["profile"]) == (placed, 10, "cpu")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ReplicasStarting")
    # The model controller reads the placement from the pool's status, as the replicas were told it.
    ix.pools = {pool.key: [dataclasses.replace(pool, status=status)]}
    holders, route, _ = model_controller.pool_route("ns", "m3", "shared")
    replicas = [f"shared-pool-{i}" for i in range(4)]
    assert holders == modelpool.place(placed, replicas, 2)["m3"] and len(holders) == 2
    assert route is not None and route.urls == tuple(f"http://{h}.shared-pool.ns.svc:8000" for h in holders)
    obs = (await model_controller.evaluate(models[("ns", "m3")][0]))[1]
    c = model_condition(obs)
    assert (c.status, c.reason) == ("False", "ServerStarting") and "ModelPool shared" in c.message
    queue.close()


class RoomyKube(RecordingKube):
    """An API with one NVIDIA node that has room (for the capacity check before a move back)."""

    async def list_nodes(self, label_selector: str = "") -> list[dict[str, Any]]:
        return [{
            "metadata": {"name": "gpu-nvidia-1", "labels": {"nvidia.com/gpu.present": "true"}},
            "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110", "nvidia.com/gpu": "8"},
                       "conditions": [{"type": "Ready", "status": "True"}]},
        }]  # fmt: skip

    async def list_pods_on_node(self, node: str) -> list[dict[str, Any]]:
        return []


async def test_model_servers_on_a_fallback_move_back_once_their_profile_has_room() -> None:
    spec = {**NV, "serving": {"placement": {"fallbacks": ["cpu"], "fallbackAfterSeconds": 5}}}
    controller, writes, _ = controller_for(spec)
    kube = RoomyKube()
    controller.kube = controller.applier.kube = kube  # type: ignore[assignment]
    controller.cfg = controller.move_backs.cfg = controller.cfg.model_copy(
        update={"move_back_after_seconds": 0, "move_back_stable_seconds": 0}
    )
    controller.move_backs.kube = kube  # type: ignore[assignment]
    view = controller.ix.models[("ns", "resnet")][0]  # type: ignore[index]
    # On the cpu fallback since a while, as the status says:
    fell_back = {"profile": "cpu", "conditions": [{"type": "Ready", "status": "True", "reason": "Serving",
                                                   "lastTransitionTime": "2026-12-02T11:00:00Z"}]}  # fmt: skip
    controller.ix.models[("ns", "resnet")] = [dataclasses.replace(view, status=fell_back)]  # type: ignore[index]
    await controller.reconcile("ns", "resnet")  # the first check finds room and starts the stable period
    await controller.reconcile("ns", "resnet")
    deployment = [o for o in kube.applied if o["kind"] == "Deployment"][-1]
    assert deployment["spec"]["template"]["metadata"]["labels"]["wasminfer.dev/profile"] == "nvidia-gpu"
    assert writes.statuses[-1]["profile"] == "nvidia-gpu"
    controller.queue.close()
