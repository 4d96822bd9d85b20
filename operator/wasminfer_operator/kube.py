"""The operator's writes and point reads, through the official Kubernetes client.

Every call here runs in a small thread pool so the event loop (kopf's watches) never blocks. Children
are written with server-side apply under one field manager, so applying the same render twice is a
no-op and fields the operator stops rendering are removed. Custom-resource status is merge-patched.
These calls, plus kopf's list/watch streams, are all the API access the operator needs (see
`PERMISSIONS`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from wasminfer_operator.names import FIELD_MANAGER, GROUP, VERSION

log = logging.getLogger("wasminfer.operator.kube")

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
T = TypeVar("T")

# Every (apiGroup, resource, verbs) the operator uses; RBAC for a deployment of it follows from this.
PERMISSIONS: list[tuple[str, str, tuple[str, ...]]] = [
    (GROUP, "wasmworkers", ("list", "watch")),  # kopf watch streams
    (GROUP, "inferencemodels", ("get", "list", "watch", "patch")),  # get, patch: the in-use protection finalizer
    (GROUP, "wasmworkers/status", ("patch",)),
    (GROUP, "inferencemodels/status", ("patch",)),
    (GROUP, "wasmworkers/finalizers", ("update",)),  # ownerReferences with blockOwnerDeletion on children
    (GROUP, "inferencemodels/finalizers", ("update",)),  # the same on a model's model servers (spec.serving)
    (GROUP, "modelpools", ("list", "watch")),
    (GROUP, "modelpools/status", ("patch",)),
    (GROUP, "modelpools/finalizers", ("update",)),  # the same on a pool's replicas
    # Server-side apply creates or patches; delete: a model's model servers once spec.serving is removed.
    ("apps", "deployments", ("list", "watch", "create", "patch", "delete")),
    ("apps", "statefulsets", ("list", "watch", "create", "patch", "delete")),  # a model pool's replicas
    ("", "services", ("list", "watch", "create", "patch", "delete")),
    ("", "configmaps", ("get", "list", "watch", "create", "patch", "delete")),  # get: InferenceModel ConfigMap sources
    ("", "pods", ("list", "watch")),  # also across namespaces, by node: the capacity check before a move back
    ("", "nodes", ("list",)),  # the capacity check before a move back from a fallback profile
    ("", "persistentvolumeclaims", ("get",)),  # InferenceModel claim sources
    ("", "secrets", ("get",)),  # the pull Secret of an OCI source, to resolve its tag and check its signature
    ("", "events", ("create",)),
    ("coordination.k8s.io", "leases", ("get", "create", "update")),  # leader election
    ("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch")),  # kopf resource discovery
    ("", "namespaces", ("list", "watch")),  # kopf, only when watching namespaces by pattern
]


class KubeError(Exception):
    """An API call that failed; `status` is the HTTP status (0 when the server was not reached)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def _error(err: ApiException) -> KubeError:
    message = err.reason or ""
    reason = err.reason or ""
    try:
        body = json.loads(err.body or "{}")
        message = body.get("message", message)
        reason = body.get("reason", reason)
    except (ValueError, TypeError):
        pass
    return KubeError(int(err.status or 0), str(reason), str(message))


class Kube:
    """Async facade over the synchronous client; one instance per operator process."""

    def __init__(self, api_client: client.ApiClient, threads: int = 16) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kube")
        self.instance = f"{FIELD_MANAGER}-{uuid.uuid4().hex[:8]}"

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def _call(self, fn: Callable[[], T]) -> T:
        def run() -> T:
            try:
                return fn()
            except ApiException as err:
                raise _error(err) from None
            except OSError as err:  # connection refused, TLS, DNS: urllib3 wraps them in OSError subclasses
                raise KubeError(0, "Unreachable", str(err)) from None

        return await asyncio.get_running_loop().run_in_executor(self.pool, run)

    @staticmethod
    def _json(resp: Any) -> dict[str, Any]:
        data = resp.data
        return dict(json.loads(data)) if data else {}

    async def apply(self, obj: dict[str, Any], *, force: bool) -> dict[str, Any]:
        """Server-side apply of a ConfigMap, Service, Deployment or StatefulSet; `force` takes over conflicting fields."""
        kind, meta = obj["kind"], obj["metadata"]
        name, ns = meta["name"], meta["namespace"]
        kw: dict[str, Any] = dict(field_manager=FIELD_MANAGER, force=force, _content_type=APPLY, _preload_content=False)
        methods: dict[str, Callable[..., Any]] = {
            "ConfigMap": self.core.patch_namespaced_config_map,
            "Service": self.core.patch_namespaced_service,
            "Deployment": self.apps.patch_namespaced_deployment,
            "StatefulSet": self.apps.patch_namespaced_stateful_set,
        }
        method = methods[kind]
        resp = await self._call(lambda: method(name, ns, obj, **kw))
        return self._json(resp)

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete a ConfigMap, Service, Deployment or StatefulSet; one already gone is no error."""
        methods: dict[str, Callable[..., Any]] = {
            "ConfigMap": self.core.delete_namespaced_config_map,
            "Service": self.core.delete_namespaced_service,
            "Deployment": self.apps.delete_namespaced_deployment,
            "StatefulSet": self.apps.delete_namespaced_stateful_set,
        }
        method = methods[kind]  # spelled out, not built from the kind: the RBAC scan reads these calls
        try:
            await self._call(lambda: method(name, namespace, propagation_policy="Background", _preload_content=False))
        except KubeError as err:
            if err.status != 404:
                raise

    async def patch_status(self, plural: str, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        body = {"status": status}
        resp = await self._call(
            lambda: self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, body, field_manager=FIELD_MANAGER, _content_type=MERGE, _preload_content=False
            )
        )
        return self._json(resp)

    async def set_model_finalizers(self, namespace: str, name: str, finalizers: list[str], resource_version: str) -> None:
        """Replaces an InferenceModel's finalizers; 409 Conflict if the object changed since `resource_version`."""
        body = {"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}}
        await self._call(
            lambda: self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, "inferencemodels", name, body, field_manager=FIELD_MANAGER, _content_type=MERGE, _preload_content=False
            )
        )

    async def list_nodes(self, label_selector: str = "") -> list[dict[str, Any]]:
        resp = await self._call(lambda: self.core.list_node(label_selector=label_selector, _preload_content=False))
        return list(self._json(resp).get("items") or [])

    async def list_pods_on_node(self, node: str) -> list[dict[str, Any]]:
        """The pods bound to a node, of every namespace, less those that ended."""
        selector = f"spec.nodeName={node},status.phase!=Succeeded,status.phase!=Failed"
        resp = await self._call(lambda: self.core.list_pod_for_all_namespaces(field_selector=selector, _preload_content=False))
        return list(self._json(resp).get("items") or [])

    async def get_model(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(lambda: self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "inferencemodels", name, _preload_content=False))

    async def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(lambda: self.core.read_namespaced_config_map(name, namespace, _preload_content=False))

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(lambda: self.core.read_namespaced_secret(name, namespace, _preload_content=False))

    async def get_pvc(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(lambda: self.core.read_namespaced_persistent_volume_claim(name, namespace, _preload_content=False))

    async def _get(self, fn: Callable[[], Any]) -> dict[str, Any] | None:
        try:
            return self._json(await self._call(fn))
        except KubeError as err:
            if err.status == 404:
                return None
            raise
