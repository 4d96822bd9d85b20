"""Pure rendering: a WasmWorker, its models and a device profile in; Kubernetes objects out.

Every child is a plain dict ready for server-side apply. Each carries a hash of its own content
(`wasminfer.dev/render-hash`) so the reconciler can tell, from its watch cache alone, whether an apply
is needed; the pod template carries the hash of the runtime configuration so that pods roll whenever
the worker or one of its models changes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

from kubernetes.utils import parse_quantity

from wasminfer_operator import api
from wasminfer_operator.names import (
    COMPONENT_LABEL,
    CONFIG_HASH,
    INSTANCE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    NAME_LABEL,
    PROFILE_LABEL,
    RENDER_HASH,
    RUNTIME_APP,
    TEMPLATE_HASH,
    WORKER_LABEL,
    config_map_name,
    model_server_name,
    pool_name,
)
from wasminfer_operator.profiles import DeviceProfile, OperatorConfig
from wasminfer_runtime.config import (
    BackendName,
    Device,
    FolderConfig,
    HttpRequestsConfig,
    KvConfig,
    Limits,
    ModelConfig,
    ModelOptions,
    RemoteModel,
    RuntimeConfig,
    ServerConfig,
    WasiNnConfig,
    WorkerConfig,
    dump_runtime_config,
)
from wasminfer_operator.trust import TrustPolicy, inline_key_name, inline_root_name, policies_for
from wasminfer_runtime.fetch import FetchArtifact, FetchFile, FetchIdentity, FetchPlan, FetchPolicy, dump_fetch_plan
from wasminfer_runtime.formats import needs_no_profile


HTTP_PORT = 8080
SERVICE_PORT = 80
MODEL_SERVER_HTTP_PORT = 8000  # the protocol's usual ports (wasminfer model-server's defaults)
MODEL_SERVER_GRPC_PORT = 8001
CONFIG_DIR = PurePosixPath("/etc/wasminfer")
DATA_DIR = PurePosixPath("/var/lib/wasminfer")
SOURCES_DIR = PurePosixPath("/var/run/wasminfer/sources")
CLAIMS_DIR = PurePosixPath("/var/run/wasminfer/claims")
REGISTRY_DIR = PurePosixPath("/var/run/wasminfer/registry")  # pull Secrets of OCI sources
FOLDERS_DIR = PurePosixPath("/var/lib/wasminfer-folders")
RUNTIME_YAML = "runtime.yaml"
FETCH_YAML = "fetch.yaml"
TERMINATION_LOG = "/dev/termination-log"


@dataclass(frozen=True)
class ObjectRef:
    """Identity of the object that owns the children: a WasmWorker, or an InferenceModel's model servers."""

    name: str
    namespace: str
    uid: str
    kind: str = "WasmWorker"


@dataclass(frozen=True)
class PoolRoute:
    """Where a pool's model is called: the replicas holding it, as the pool's placement says."""

    urls: tuple[str, ...]
    timeout_seconds: float


@dataclass(frozen=True)
class NamedModel:
    name: str
    spec: api.InferenceModelSpec
    route: PoolRoute | None = None  # for a model of a ModelPool (spec.pool)


@dataclass(frozen=True)
class Rendered:
    config_map: dict[str, Any]
    service: dict[str, Any]
    deployment: dict[str, Any]
    config_hash: str

    @property
    def children(self) -> list[dict[str, Any]]:
        """In apply order: configuration first, so new pods never start with an old one."""
        return [self.config_map, self.service, self.deployment]


def content_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def selector_labels(worker: str) -> dict[str, str]:
    return {WORKER_LABEL: worker}


def selector_string(worker: str) -> str:
    return ",".join(f"{k}={v}" for k, v in selector_labels(worker).items())


def worker_url(ref: ObjectRef, route: str) -> str:
    return f"http://{ref.name}.{ref.namespace}.svc{route}"


def common_labels(worker: str) -> dict[str, str]:
    return {
        NAME_LABEL: RUNTIME_APP,
        INSTANCE_LABEL: worker,
        COMPONENT_LABEL: "worker",
        MANAGED_BY_LABEL: MANAGED_BY,
        WORKER_LABEL: worker,
    }


def owner_reference(ref: ObjectRef) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": ref.kind,
        "name": ref.name,
        "uid": ref.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(ref: ObjectRef, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": ref.namespace,
        "labels": labels if labels is not None else common_labels(ref.name),
        "ownerReferences": [owner_reference(ref)],
    }


def stamp(obj: dict[str, Any]) -> dict[str, Any]:
    obj["metadata"].setdefault("annotations", {})[RENDER_HASH] = content_hash(obj)
    return obj


# --- artifacts: where each file comes from and where the runtime finds it ------------------------


class Volumes:
    """Pod volumes for sources, one per ConfigMap, claim and pull Secret, shared by module and models; and
    the namespace policy's trusted keys, written into the pod's own ConfigMap."""

    def __init__(self) -> None:
        self.config_maps: dict[str, set[str]] = {}
        self.claims: list[str] = []
        self.secrets: list[str] = []
        self.inline_keys: dict[str, str] = {}  # child ConfigMap key -> PEM

    def secret_path(self, secret: str, key: str) -> PurePosixPath:
        if secret not in self.secrets:
            self.secrets.append(secret)
        return REGISTRY_DIR / self._secret_volume(secret) / key

    def _secret_volume(self, secret: str) -> str:
        return f"pull-{content_hash(secret)[:10]}"

    def config_map_path(self, cm: str, key: str) -> PurePosixPath:
        self.config_maps.setdefault(cm, set()).add(key)
        return SOURCES_DIR / self._cm_volume(cm) / key

    def claim_path(self, claim: str, path: str) -> PurePosixPath:
        if claim not in self.claims:
            self.claims.append(claim)
        return CLAIMS_DIR / self._claim_volume(claim) / path

    def _cm_volume(self, cm: str) -> str:
        return f"src-{content_hash(cm)[:10]}"

    def _claim_volume(self, claim: str) -> str:
        return f"claim-{content_hash(claim)[:10]}"

    def volumes(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for cm in sorted(self.config_maps):
            items = [{"key": k, "path": k} for k in sorted(self.config_maps[cm])]
            out.append({"name": self._cm_volume(cm), "configMap": {"name": cm, "items": items}})
        for claim in sorted(self.claims):
            out.append({"name": self._claim_volume(claim), "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        for secret in sorted(self.secrets):
            out.append({"name": self._secret_volume(secret), "secret": {"secretName": secret}})
        return out

    def mounts(self) -> list[dict[str, Any]]:
        out = [{"name": self._cm_volume(cm), "mountPath": str(SOURCES_DIR / self._cm_volume(cm)), "readOnly": True} for cm in sorted(self.config_maps)]
        out += [{"name": self._claim_volume(c), "mountPath": str(CLAIMS_DIR / self._claim_volume(c)), "readOnly": True} for c in sorted(self.claims)]
        out += [{"name": self._secret_volume(s), "mountPath": str(REGISTRY_DIR / self._secret_volume(s)), "readOnly": True} for s in sorted(self.secrets)]
        return out

    def claim_mounts(self) -> list[dict[str, Any]]:
        return [m for m in self.mounts() if m["name"].startswith("claim-")]


def fetch_policies(policies: list[TrustPolicy], vols: Volumes) -> list[FetchPolicy]:
    """The trust policies as the fetch step reads them: each key a file in the pod."""
    out = []
    for p in policies:
        keys = [CONFIG_DIR / inline_key_name(pem) for pem in p.pem]
        for pem in p.pem:
            vols.inline_keys[inline_key_name(pem)] = pem
        keys += [vols.config_map_path(cm, key) for cm, key in p.config_map_keys]
        root = vols.config_map_path(*p.trusted_root) if p.trusted_root is not None else None
        if p.trusted_root_json is not None:
            vols.inline_keys[inline_root_name(p.trusted_root_json)] = p.trusted_root_json
            root = CONFIG_DIR / inline_root_name(p.trusted_root_json)
        out.append(FetchPolicy(
            keys=[Path(k) for k in keys], trusted_root=Path(root) if root is not None else None,
            identities=[FetchIdentity(identity=i, issuer=o) for i, o in p.identities], required=p.required, origin=p.origin,
        ))  # fmt: skip
    return out


@dataclass
class Placed:
    """What fetching one source takes, and where the runtime finds it afterwards."""

    files: list[FetchFile]
    artifacts: list[FetchArtifact]
    paths: list[PurePosixPath]  # the files, in source order (none for a model artifact: see folder)
    folder: PurePosixPath | None = None  # a model artifact's folder, its files picked by the runtime


def place_source(
    source: api.Source, dest_dir: PurePosixPath, vols: Volumes, policies: list[TrustPolicy], module_name: str | None = None,
) -> Placed:
    """Fetch steps for one source (a module when module_name is given) under the trust policies."""
    trust = fetch_policies(policies, vols)
    files: list[FetchFile] = []
    paths: list[PurePosixPath] = []
    if source.oci is not None:
        oci = source.oci
        auth = vols.secret_path(oci.pull_secret, ".dockerconfigjson") if oci.pull_secret else None
        ca = vols.config_map_path(oci.ca.name, oci.ca.key) if oci.ca else None
        common = {"oci": oci.reference, "policies": trust, "registry_config": auth and Path(auth), "ca_file": ca and Path(ca)}
        if module_name is not None:
            dest = dest_dir / module_name
            return Placed([], [FetchArtifact(dest=Path(dest), kind="module", layer=oci.layer, **common)], [dest])
        return Placed([], [FetchArtifact(dest=Path(dest_dir), kind="folder", **common)], [], folder=dest_dir)
    if source.https is not None:
        for hf in source.https.files:
            dest = dest_dir / hf.file_name
            files.append(FetchFile(url=hf.url, sha256=hf.sha256, dest=Path(dest), signature=hf.signature, policies=trust))
            paths.append(dest)
    elif source.config_map is not None:
        for cf in source.config_map.files:
            dest = dest_dir / cf.key
            mounted = vols.config_map_path(source.config_map.name, cf.key)
            files.append(FetchFile(path=Path(mounted), sha256=cf.sha256, dest=Path(dest), signature=cf.signature, policies=trust))
            paths.append(dest)
    else:
        assert source.pvc is not None
        for pf in source.pvc.files:
            on_claim = vols.claim_path(source.pvc.claim_name, pf.path)
            files.append(FetchFile(path=Path(on_claim), sha256=pf.sha256, signature=pf.signature, policies=trust))
            paths.append(on_claim)
    return Placed(files, [], paths)


def model_device(spec: api.InferenceModelSpec, profile: DeviceProfile) -> Device:
    """The device a model runs on under a profile: its own when the profile serves it, else CPU."""
    if needs_no_profile(spec.device):
        return spec.device
    if profile.serves(spec.device, spec.resolved_backend):
        return spec.device
    return Device.CPU


def model_server_urls(namespace: str, model: str) -> tuple[str, str]:
    """The REST and gRPC addresses of a model's own model servers, through their Service."""
    host = f"{model_server_name(model)}.{namespace}.svc"
    return f"http://{host}:{MODEL_SERVER_HTTP_PORT}", f"grpc://{host}:{MODEL_SERVER_GRPC_PORT}"


def local_model_config(name: str, spec: api.InferenceModelSpec, placed: Placed, profile: DeviceProfile) -> ModelConfig:
    """A model loaded from its files in the pod (a worker's, or a model server's) under `profile`."""
    o = spec.options
    return ModelConfig(
        name=name,
        format=spec.format,
        backend=spec.resolved_backend,
        device=model_device(spec, profile),
        files=[Path(p) for p in placed.paths],
        folder=Path(placed.folder) if placed.folder is not None else None,
        options=ModelOptions(
            precision=o.precision, performance_hint=o.performance_hint, streams=o.streams, pool_size=o.pool_size,
            max_dynamic_dim=o.max_dynamic_dim, max_output_bytes=o.max_output_bytes,
        ),
        memory_mib=spec.memory_mib,
    )  # fmt: skip


def pool_replica_url(namespace: str, pool: str, replica: str, protocol: str) -> str:
    """A pool replica's address, through the pool's headless Service (one DNS name per pod)."""
    host = f"{replica}.{pool_name(pool)}.{namespace}.svc"
    return f"grpc://{host}:{MODEL_SERVER_GRPC_PORT}" if protocol == "grpc" else f"http://{host}:{MODEL_SERVER_HTTP_PORT}"


def remote_model_config(namespace: str, m: NamedModel) -> ModelConfig:
    """A worker's entry for a model that model servers serve: its own (spec.serving), or the replicas of
    its pool that hold it (m.route)."""
    serving = m.spec.serving
    if serving is not None:
        rest, grpc = model_server_urls(namespace, m.name)
        remote = RemoteModel(url=grpc if serving.protocol == "grpc" else rest, timeout_seconds=serving.timeout_seconds)
    else:
        assert m.route is not None, f"model {m.name} of pool {m.spec.pool}: no route"
        remote = RemoteModel(urls=list(m.route.urls), timeout_seconds=m.route.timeout_seconds)
    return ModelConfig(
        name=m.name,
        format=m.spec.format,
        backend=m.spec.resolved_backend,
        device=Device.CPU,  # nothing of the model runs in the worker's pod
        remote=remote,
    )


def allowed_backends(spec: api.WasmWorkerSpec, models: list[NamedModel]) -> list[BackendName]:
    if spec.allowed_backends is not None:
        return sorted(spec.allowed_backends, key=lambda b: b.value)
    return sorted({m.spec.resolved_backend for m in models}, key=lambda b: b.value)


def http_requests_config(grant: api.HttpRequests | None) -> HttpRequestsConfig | None:
    """The worker's outbound HTTP grant in runtime.yaml; none (every call refused) unless the spec has one."""
    if grant is None:
        return None
    return HttpRequestsConfig(
        allowed_hosts=list(grant.allowed_hosts), allowed_methods=list(grant.allowed_methods), allow_http=grant.allow_http,
        timeout_seconds=grant.timeout_seconds, max_request_body_bytes=grant.max_request_body_bytes,
        max_response_body_bytes=grant.max_response_body_bytes,
    )


def runtime_config(
    ref: ObjectRef, spec: api.WasmWorkerSpec, models: list[NamedModel], profile: DeviceProfile, cfg: OperatorConfig
) -> tuple[RuntimeConfig, FetchPlan, Volumes]:
    """The runtime.yaml contract for one worker, and the fetch plan that fills in its files."""
    vols = Volumes()
    steps: list[FetchFile] = []
    artifacts: list[FetchArtifact] = []
    model_cfgs: list[ModelConfig] = []
    for m in models:
        if m.spec.served:  # model servers hold it (its own, or a pool's): called, not loaded here
            model_cfgs.append(remote_model_config(ref.namespace, m))
            continue
        placed = place_source(m.spec.source, DATA_DIR / "models" / m.name, vols, policies_for(cfg, ref.namespace, m.spec.signatures))
        steps += placed.files
        artifacts += placed.artifacts
        model_cfgs.append(local_model_config(m.name, m.spec, placed, profile))
    module = place_source(spec.module, DATA_DIR / "modules", vols, policies_for(cfg, ref.namespace, spec.signatures), f"{ref.name}.wasm")
    steps += module.files
    artifacts += module.artifacts
    module_paths = module.paths
    vars_ = dict(spec.vars)
    for e in spec.env:
        vars_.setdefault(e.name, f"${e.name}")  # the runtime expands $NAME from its environment
    backends = allowed_backends(spec, models)
    worker = WorkerConfig(
        name=ref.name,
        module=Path(module_paths[0]),
        route=spec.route,
        vars=vars_,
        folders=[
            FolderConfig.model_validate({"from": str(FOLDERS_DIR / str(i)), "to": f.path, "writable": f.writable})
            for i, f in enumerate(spec.folders)
        ],
        limits=Limits(
            memory_mib=spec.limits.memory_mib, timeout_seconds=spec.limits.timeout_seconds, max_body_bytes=spec.limits.max_body_bytes,
            max_kv_bytes=spec.limits.max_kv_bytes,
        ),
        wasi_nn=WasiNnConfig(enabled=bool(models or backends), allowed_backends=backends, models=[m.name for m in models]),
        kv=KvConfig(namespace=spec.kv.namespace) if spec.kv is not None else None,
        http_requests=http_requests_config(spec.http_requests),
    )
    runtime = RuntimeConfig(
        # A pod whose worker or model cannot load never gets ready: it exits and says why, so the
        # restart and its termination message reach the WasmWorker's status.
        server=ServerConfig.model_validate(
            {
                "host": "0.0.0.0",
                "port": HTTP_PORT,
                "cache_dir": str(DATA_DIR / "cache"),
                "exit_on_load_failure": True,
                "termination_log": TERMINATION_LOG,
                "processes": serving_processes(spec),
            }
        ),
        models=model_cfgs,
        workers=[worker],
    )
    return runtime, FetchPlan(files=steps, artifacts=artifacts, allow_http=False), vols


# --- children -------------------------------------------------------------------------------------


def render_config_map(ref: ObjectRef, runtime_yaml: str, fetch_yaml: str, vols: Volumes) -> dict[str, Any]:
    return stamp(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": child_metadata(ref, config_map_name(ref.name)),
            "data": {RUNTIME_YAML: runtime_yaml, FETCH_YAML: fetch_yaml, **vols.inline_keys},
        }
    )


def render_service(ref: ObjectRef) -> dict[str, Any]:
    return stamp(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": child_metadata(ref, ref.name),
            "spec": {
                "type": "ClusterIP",
                "selector": selector_labels(ref.name),
                "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
            },
        }
    )


def hardened_container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _quantity(v: int | str) -> str:
    return str(v)


def serving_processes(spec: api.WasmWorkerSpec) -> int:
    """Serving processes per pod: one per CPU of the worker's limit (else its request), rounded up;
    one without either (a pod that asked for no CPU gets no more than one core's worth of
    processes), and one for a worker with a key/value store (it lives in one process's memory)."""
    cpu = spec.resources.limits.get("cpu", spec.resources.requests.get("cpu"))
    if cpu is None or spec.kv is not None:
        return 1
    cores: Decimal = parse_quantity(cpu)  # type: ignore[no-untyped-call]
    return max(1, math.ceil(cores))


def container_resources(resources: api.ResourceRequirements, profile: DeviceProfile) -> dict[str, Any]:
    """The spec's resources plus the profile's device resources (requested and limited alike)."""
    requests = {k: _quantity(v) for k, v in resources.requests.items()}
    limits = {k: _quantity(v) for k, v in resources.limits.items()}
    for name, qty in profile.resources.items():
        requests[name] = limits[name] = _quantity(qty)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = dict(sorted(requests.items()))
    if limits:
        out["limits"] = dict(sorted(limits.items()))
    return out


def _env(spec: api.WasmWorkerSpec) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"name": "HOME", "value": "/tmp"}]
    for e in spec.env:
        if e.name == "HOME":
            out = [x for x in out if x["name"] != "HOME"]
        out.append(e.wire())
    return out


def _folder_volume(i: int, f: api.Folder) -> dict[str, Any]:
    name = f"folder-{i}"
    if f.config_map is not None:
        return {"name": name, "configMap": {"name": f.config_map.name}}
    if f.secret is not None:
        return {"name": name, "secret": {"secretName": f.secret.secret_name}}
    if f.persistent_volume_claim is not None:
        return {"name": name, "persistentVolumeClaim": {"claimName": f.persistent_volume_claim.claim_name, "readOnly": not f.writable}}
    assert f.empty_dir is not None
    return {"name": name, "emptyDir": f.empty_dir.wire()}


def _tolerations(placement: api.Placement, profile: DeviceProfile) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for t in [*profile.tolerations, *placement.tolerations]:
        w = t.wire()
        if w not in out:
            out.append(w)
    return out


def _affinity(placement: api.Placement, profile: DeviceProfile) -> dict[str, Any]:
    """The spec's affinity with the profile's required node expressions added to every term."""
    affinity = copy.deepcopy(placement.affinity or {})
    required = [r.wire() for r in profile.node_affinity]
    if required:
        node = affinity.setdefault("nodeAffinity", {})
        selector = node.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
        terms = selector.get("nodeSelectorTerms") or [{}]
        selector["nodeSelectorTerms"] = [{**t, "matchExpressions": [*(t.get("matchExpressions") or []), *required]} for t in terms]
    return affinity


def fetch_container(image: str, cfg: OperatorConfig, vols: Volumes) -> dict[str, Any]:
    """The init container that fetches and verifies the files named in the fetch plan."""
    return {
        "name": "fetch",
        "image": image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": ["wasminfer", "fetch", "--plan", str(CONFIG_DIR / FETCH_YAML), "--termination-log", TERMINATION_LOG],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "env": [{"name": "HOME", "value": "/tmp"}],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": hardened_container_security(),
        "volumeMounts": [CONFIG_MOUNT, DATA_MOUNT, TMP_MOUNT, *vols.mounts()],
    }


CONFIG_MOUNT = {"name": "config", "mountPath": str(CONFIG_DIR), "readOnly": True}
DATA_MOUNT = {"name": "data", "mountPath": str(DATA_DIR)}
TMP_MOUNT = {"name": "tmp", "mountPath": "/tmp"}


def pod_spec(
    cfg: OperatorConfig, config_map: str, placement: api.Placement, profile: DeviceProfile, vols: Volumes,
    init: dict[str, Any], main: dict[str, Any], extra_volumes: list[dict[str, Any]],
) -> dict[str, Any]:
    """A hardened pod: the fetch step, the main container, the configuration and data volumes, and
    the scheduling constraints of the profile and the spec's placement."""
    out: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": cfg.run_as_user,
            "runAsGroup": cfg.run_as_user,
            "fsGroup": cfg.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": [init],
        "containers": [main],
        "volumes": [
            {"name": "config", "configMap": {"name": config_map}},
            {"name": "data", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            *vols.volumes(),
            *extra_volumes,
        ],
    }  # fmt: skip
    node_selector = {**profile.node_selector, **placement.node_selector}
    if node_selector:
        out["nodeSelector"] = dict(sorted(node_selector.items()))
    tolerations = _tolerations(placement, profile)
    if tolerations:
        out["tolerations"] = tolerations
    affinity = _affinity(placement, profile)
    if affinity:
        out["affinity"] = affinity
    return out


def pod_template(labels: dict[str, str], spec: dict[str, Any], config_hash: str) -> dict[str, Any]:
    """A pod template carrying the configuration's hash and its own."""
    template: dict[str, Any] = {"metadata": {"labels": labels, "annotations": {CONFIG_HASH: config_hash}}, "spec": spec}
    template["metadata"]["annotations"][TEMPLATE_HASH] = content_hash(template)
    return template


def deployment_spec(
    replicas: int, selector: dict[str, str], labels: dict[str, str], spec: dict[str, Any], profile: DeviceProfile,
    cfg: OperatorConfig, config_hash: str,
) -> dict[str, Any]:
    """A Deployment's spec whose pod template carries the configuration's hash and its own."""
    template = pod_template(labels, spec, config_hash)
    return {
        "replicas": replicas,
        "revisionHistoryLimit": 3,
        "progressDeadlineSeconds": cfg.progress_deadline_seconds,
        "selector": {"matchLabels": selector},
        "strategy": profile.deployment_strategy(),
        "template": template,
    }


def render_deployment(
    ref: ObjectRef,
    spec: api.WasmWorkerSpec,
    profile_name: str,
    profile: DeviceProfile,
    cfg: OperatorConfig,
    vols: Volumes,
    config_hash: str,
) -> dict[str, Any]:
    image = cfg.image_for(profile_name, spec.image)
    folder_mounts = [
        {"name": f"folder-{i}", "mountPath": str(FOLDERS_DIR / str(i)), "readOnly": not f.writable} for i, f in enumerate(spec.folders)
    ]
    # A busy node may take more than the default second to answer; a probe that times out there
    # would take a serving pod out of its Service.
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "timeoutSeconds": 5}
    runtime: dict[str, Any] = {
        "name": "runtime",
        "image": image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": ["wasminfer", "serve", "--config", str(CONFIG_DIR / RUNTIME_YAML)],
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "env": _env(spec),
        # Short periods: a pod serves within a second or two of its models and module being
        # loaded, not up to a startup period plus a readiness period later. /healthz and /readyz
        # are cheap, and the startup probe still allows ten minutes for a large model to load.
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "timeoutSeconds": 5, "periodSeconds": 2, "failureThreshold": 3},
        "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 3},
        "startupProbe": {**probe, "periodSeconds": 1, "failureThreshold": 600},
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": hardened_container_security(),
        "volumeMounts": [CONFIG_MOUNT, DATA_MOUNT, TMP_MOUNT, *vols.claim_mounts(), *folder_mounts],
    }
    resources = container_resources(spec.resources, profile)
    if resources:
        runtime["resources"] = resources
    folders = [_folder_volume(i, f) for i, f in enumerate(spec.folders)]
    pod = pod_spec(cfg, config_map_name(ref.name), spec.placement, profile, vols, fetch_container(image, cfg, vols), runtime, folders)
    pod_labels = {**common_labels(ref.name), PROFILE_LABEL: profile_name}
    body = deployment_spec(spec.replicas, selector_labels(ref.name), pod_labels, pod, profile, cfg, config_hash)
    return stamp({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": child_metadata(ref, ref.name), "spec": body})


def render_worker(
    ref: ObjectRef,
    spec: api.WasmWorkerSpec,
    models: list[NamedModel],
    profile_name: str,
    cfg: OperatorConfig,
) -> Rendered:
    """All children of one worker placed on `profile_name`; `models` in the order the spec names them."""
    profile = cfg.profiles[profile_name]
    runtime_cfg, plan, vols = runtime_config(ref, spec, models, profile, cfg)
    runtime_yaml = dump_runtime_config(runtime_cfg)
    fetch_yaml = dump_fetch_plan(plan)
    config_hash = content_hash([runtime_yaml, fetch_yaml])
    return Rendered(
        config_map=render_config_map(ref, runtime_yaml, fetch_yaml, vols),
        service=render_service(ref),
        deployment=render_deployment(ref, spec, profile_name, profile, cfg, vols, config_hash),
        config_hash=config_hash,
    )
