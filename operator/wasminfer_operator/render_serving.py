"""Pure rendering of model servers: an InferenceModel's own (spec.serving: a ConfigMap, a Service and a
Deployment running `wasminfer model-server`), and a ModelPool's (a ConfigMap, a headless Service and a
StatefulSet whose replicas each load the share of the pool's models placed on them).

The pods fetch the model's files as a worker's pods do, load it on the profile's device, and serve it
over the Open Inference Protocol: REST on port 8000, gRPC on 8001. The readiness probe asks
`/v2/health/ready`, true once the model is loaded, so the Service sends calls only to pods holding it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wasminfer_operator import api
from wasminfer_operator.names import (
    COMPONENT_LABEL,
    INSTANCE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MODEL_POOL_LABEL,
    MODEL_SERVER_APP,
    MODEL_SERVER_LABEL,
    NAME_LABEL,
    PROFILE_LABEL,
    model_server_name,
    pool_name,
    pool_replicas,
)
from wasminfer_operator.profiles import DeviceProfile, OperatorConfig
from wasminfer_operator.render import (
    CONFIG_DIR,
    CONFIG_MOUNT,
    DATA_DIR,
    DATA_MOUNT,
    FETCH_YAML,
    MODEL_SERVER_GRPC_PORT,
    MODEL_SERVER_HTTP_PORT,
    RUNTIME_YAML,
    TERMINATION_LOG,
    TMP_MOUNT,
    NamedModel,
    ObjectRef,
    Rendered,
    Volumes,
    child_metadata,
    container_resources,
    content_hash,
    deployment_spec,
    fetch_container,
    local_model_config,
    hardened_container_security,
    place_source,
    pod_spec,
    pod_template,
    stamp,
)
from wasminfer_runtime.config import ModelConfig, RuntimeConfig, ServerConfig, dump_runtime_config
from wasminfer_operator.trust import policies_for
from wasminfer_runtime.fetch import FetchArtifact, FetchFile, FetchPlan, dump_fetch_plan


def server_selector(model: str) -> dict[str, str]:
    return {MODEL_SERVER_LABEL: model}


def server_selector_string(model: str) -> str:
    return ",".join(f"{k}={v}" for k, v in server_selector(model).items())


def _labels(owner: str, component: str, owner_label: str) -> dict[str, str]:
    return {NAME_LABEL: MODEL_SERVER_APP, INSTANCE_LABEL: owner, COMPONENT_LABEL: component, MANAGED_BY_LABEL: MANAGED_BY, owner_label: owner}


def server_labels(model: str) -> dict[str, str]:
    return _labels(model, "model-server", MODEL_SERVER_LABEL)


def _server_container(image: str, cfg: OperatorConfig, opts: api.ServerOptions, vols: Volumes, profile: DeviceProfile) -> dict[str, Any]:
    """`wasminfer model-server` on the configuration, ready once its models are loaded."""
    command = [
        "wasminfer", "model-server", str(CONFIG_DIR / RUNTIME_YAML), "--host", "0.0.0.0",
        "--port", str(MODEL_SERVER_HTTP_PORT), "--grpc-port", str(MODEL_SERVER_GRPC_PORT), "--exit-on-load-failure",
    ]  # fmt: skip
    if opts.threads is not None:
        command += ["--threads", str(opts.threads)]
    live = {"httpGet": {"path": "/v2/health/live", "port": "http"}, "timeoutSeconds": 5}
    server: dict[str, Any] = {
        "name": "model-server",
        "image": image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": command,
        "ports": [
            {"name": "http", "containerPort": MODEL_SERVER_HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": MODEL_SERVER_GRPC_PORT, "protocol": "TCP"},
        ],
        "env": [{"name": "HOME", "value": "/tmp"}],
        # Ready once the models are loaded: the Service sends calls only to pods that hold them.
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"}, "timeoutSeconds": 5, "periodSeconds": 2, "failureThreshold": 3,
        },  # fmt: skip
        "livenessProbe": {**live, "periodSeconds": 10, "failureThreshold": 3},
        "startupProbe": {**live, "periodSeconds": 1, "failureThreshold": 600},
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": hardened_container_security(),
        "volumeMounts": [CONFIG_MOUNT, DATA_MOUNT, TMP_MOUNT, *vols.claim_mounts()],
    }
    resources = container_resources(opts.resources, profile)
    if resources:
        server["resources"] = resources
    return server


def served_config(
    members: list[NamedModel], profile: DeviceProfile, cfg: OperatorConfig, namespace: str
) -> tuple[RuntimeConfig, FetchPlan, Volumes]:
    """A model server's runtime.yaml (its models, no workers) and the fetch plan of their files, each
    tagged with its model: a pool's replica fetches and loads only the models placed on it."""
    vols = Volumes()
    models: list[ModelConfig] = []
    steps: list[FetchFile] = []
    artifacts: list[FetchArtifact] = []
    for m in sorted(members, key=lambda m: m.name):
        placed = place_source(m.spec.source, DATA_DIR / "models" / m.name, vols, policies_for(cfg, namespace, m.spec.signatures))
        steps += [f.model_copy(update={"model": m.name}) for f in placed.files]
        artifacts += [a.model_copy(update={"model": m.name}) for a in placed.artifacts]
        models.append(local_model_config(m.name, m.spec, placed, profile))
    server = ServerConfig.model_validate(
        {"cache_dir": str(DATA_DIR / "cache"), "exit_on_load_failure": True, "termination_log": TERMINATION_LOG}
    )
    plan = FetchPlan(files=steps, artifacts=artifacts, allow_http=False)
    return RuntimeConfig(server=server, models=models, workers=[]), plan, vols


def render_server_service(ref: ObjectRef) -> dict[str, Any]:
    return stamp(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": child_metadata(ref, model_server_name(ref.name), server_labels(ref.name)),
            "spec": {
                "type": "ClusterIP",
                "selector": server_selector(ref.name),
                "ports": [
                    {"name": "http", "port": MODEL_SERVER_HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                    {"name": "grpc", "port": MODEL_SERVER_GRPC_PORT, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"},
                ],
            },
        }
    )


def render_model_server(ref: ObjectRef, spec: api.InferenceModelSpec, profile_name: str, cfg: OperatorConfig) -> Rendered:
    """All children of a model's serving, placed on `profile_name`."""
    serving = spec.serving
    assert serving is not None
    profile = cfg.profiles[profile_name]
    name = model_server_name(ref.name)
    runtime_cfg, plan, vols = served_config([NamedModel(ref.name, spec)], profile, cfg, ref.namespace)
    runtime_yaml, fetch_yaml = dump_runtime_config(runtime_cfg), dump_fetch_plan(plan)
    config_hash = content_hash([runtime_yaml, fetch_yaml, serving.threads])
    labels = server_labels(ref.name)
    config_map = stamp(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": child_metadata(ref, name, labels),
            "data": {RUNTIME_YAML: runtime_yaml, FETCH_YAML: fetch_yaml, **vols.inline_keys},
        }
    )
    image = cfg.image_for(profile_name, serving.image)
    server = _server_container(image, cfg, serving, vols, profile)
    pod = pod_spec(cfg, name, serving.placement, profile, vols, fetch_container(image, cfg, vols), server, [])
    body = deployment_spec(
        serving.replicas, server_selector(ref.name), {**labels, PROFILE_LABEL: profile_name}, pod, profile, cfg, config_hash
    )
    deployment = stamp({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": child_metadata(ref, name, labels), "spec": body})
    return Rendered(config_map=config_map, service=render_server_service(ref), deployment=deployment, config_hash=config_hash)



# --- model pools -----------------------------------------------------------------------------------


def pool_selector(pool: str) -> dict[str, str]:
    return {MODEL_POOL_LABEL: pool}


def pool_selector_string(pool: str) -> str:
    return ",".join(f"{k}={v}" for k, v in pool_selector(pool).items())


def pool_labels(pool: str) -> dict[str, str]:
    return _labels(pool, "model-pool", MODEL_POOL_LABEL)


@dataclass(frozen=True)
class RenderedPool:
    config_map: dict[str, Any]
    service: dict[str, Any]
    stateful_set: dict[str, Any]

    @property
    def children(self) -> list[dict[str, Any]]:
        """In apply order: configuration first, so new pods never start with an old one."""
        return [self.config_map, self.service, self.stateful_set]


def render_model_pool(
    ref: ObjectRef, spec: api.ModelPoolSpec, members: list[NamedModel], profile_name: str, cfg: OperatorConfig
) -> RenderedPool:
    """A pool's ConfigMap, headless Service (a DNS name per replica) and StatefulSet (replicas with
    stable names, the names the models are placed on)."""
    profile = cfg.profiles[profile_name]
    name = pool_name(ref.name)
    runtime_cfg, plan, vols = served_config(members, profile, cfg, ref.namespace)
    runtime_yaml, fetch_yaml = dump_runtime_config(runtime_cfg), dump_fetch_plan(plan)
    # The replicas' names are in the pods' arguments: a new replica count rolls them (one at a time).
    pool_args = [
        "--pool-replicas", ",".join(pool_replicas(ref.name, spec.replicas)), "--pool-replica", "$(POD_NAME)",
        "--pool-copies", str(spec.copies),
    ]  # fmt: skip
    config_hash = content_hash([runtime_yaml, fetch_yaml, spec.threads, pool_args])
    labels = pool_labels(ref.name)
    config_map = stamp(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": child_metadata(ref, name, labels),
         "data": {RUNTIME_YAML: runtime_yaml, FETCH_YAML: fetch_yaml, **vols.inline_keys}}
    )  # fmt: skip
    service = stamp(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": child_metadata(ref, name, labels),
            "spec": {
                "clusterIP": "None",  # headless: NAME-pool-<i>.NAME-pool.NAMESPACE.svc is replica i
                "selector": pool_selector(ref.name),
                "ports": [
                    {"name": "http", "port": MODEL_SERVER_HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                    {"name": "grpc", "port": MODEL_SERVER_GRPC_PORT, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"},
                ],
            },
        }
    )
    image = cfg.image_for(profile_name, spec.image)
    pod_name_env = {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    fetch = fetch_container(image, cfg, vols)
    fetch["command"] = [*fetch["command"], *pool_args]
    fetch["env"] = [*fetch["env"], pod_name_env]
    server = _server_container(image, cfg, spec, vols, profile)
    server["command"] = [*server["command"], *pool_args]
    server["env"] = [*server["env"], pod_name_env]
    pod = pod_spec(cfg, name, spec.placement, profile, vols, fetch, server, [])
    template = pod_template({**labels, PROFILE_LABEL: profile_name}, pod, config_hash)
    stateful_set = stamp(
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": child_metadata(ref, name, labels),
            "spec": {
                "serviceName": name,
                "replicas": spec.replicas,
                "revisionHistoryLimit": 3,
                "podManagementPolicy": "Parallel",  # replicas start together; updates still roll one at a time
                "updateStrategy": {"type": "RollingUpdate"},
                "selector": {"matchLabels": pool_selector(ref.name)},
                "template": template,
            },
        }
    )
    return RenderedPool(config_map=config_map, service=service, stateful_set=stateful_set)
