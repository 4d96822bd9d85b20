"""Every name the operator puts on the cluster, once: the API group, labels, annotations, the
finalizer, the field manager, the children's names and the node labels it reads."""

from __future__ import annotations

GROUP = "wasminfer.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Held on every InferenceModel by the operator: a model stays while WasmWorkers of its namespace use it.
MODEL_FINALIZER = f"{GROUP}/in-use-protection"
# Server-side apply field manager, and the reporting component of the events the operator posts.
FIELD_MANAGER = "wasminfer-operator"

# On every child. The managed-by label is what the operator's child caches select.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "wasminfer-operator"
NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
PART_OF_LABEL = "app.kubernetes.io/part-of"
RUNTIME_APP = "wasminfer-runtime"
WORKER_LABEL = f"{GROUP}/worker"  # the owning WasmWorker's name: the pods' selector
MODEL_SERVER_APP = "wasminfer-model-server"
MODEL_SERVER_LABEL = f"{GROUP}/model-server"  # the served InferenceModel's name: its model servers' selector
MODEL_POOL_LABEL = f"{GROUP}/model-pool"  # the ModelPool's name: its replicas' selector
PROFILE_LABEL = f"{GROUP}/profile"  # on pods: the device profile they were rendered for

# Annotations: a hash of each rendered child (applied only when it differs), of the runtime
# configuration (a change rolls the pods), and on the pod template a hash of the template itself
# (pods whose value differs from the Deployment's are of an older revision).
RENDER_HASH = f"{GROUP}/render-hash"
CONFIG_HASH = f"{GROUP}/config-hash"
TEMPLATE_HASH = f"{GROUP}/template-hash"

# Device-plugin resources the built-in profiles request (the NVIDIA one is also the taint GPU nodes carry).
INTEL_GPU_RESOURCE = "gpu.intel.com/i915"
INTEL_NPU_RESOURCE = "npu.intel.com/accel"
NVIDIA_GPU_RESOURCE = "nvidia.com/gpu"

# Labels the device plugins' node feature rules put on accelerator nodes; CPU workers stay off them.
ACCELERATOR_NODE_LABELS = ("nvidia.com/gpu.present", "intel.feature.node.kubernetes.io/gpu", "intel.feature.node.kubernetes.io/npu")


def config_map_name(worker: str) -> str:
    """The worker's runtime configuration; its Deployment and Service are named as the worker."""
    return f"{worker}-runtime"


def child_name(kind: str, worker: str) -> str:
    return config_map_name(worker) if kind == "ConfigMap" else worker


def model_server_name(model: str) -> str:
    """The Deployment, Service and ConfigMap of a model's own model servers (spec.serving)."""
    return f"{model}-model-server"


# A model's model servers are cached beside the workers' children, grouped under this prefix and the
# model's name: no worker name contains '/'.
SERVER_GROUP_PREFIX = "model-server/"


def server_group(model: str) -> str:
    return SERVER_GROUP_PREFIX + model


POOL_GROUP_PREFIX = "model-pool/"


def pool_group(pool: str) -> str:
    return POOL_GROUP_PREFIX + pool


def pool_name(pool: str) -> str:
    """The StatefulSet, headless Service and ConfigMap of a ModelPool; its pods are NAME-pool-0, -1, ..."""
    return f"{pool}-pool"


def pool_replicas(pool: str, replicas: int) -> list[str]:
    """The pool's replica pods, by the StatefulSet's naming: the names the models are placed on."""
    return [f"{pool_name(pool)}-{i}" for i in range(replicas)]
