"""InferenceModels in use are protected against deletion, on the real control plane (kwok nodes): the
operator holds a finalizer on every model; a deleted model stays while WasmWorkers of its namespace
use it (its Deleting condition and a Warning event name them, the workers keep running) and goes as
soon as the last one lets go. A model nobody uses, and a whole namespace, are deleted at once. The
operator runs with the Helm chart's RBAC, so a missing permission fails here as Forbidden."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from operator_objects import chart_operator, model_yaml, worker_yaml
from operator_process import OperatorProcess

from kube import Cluster

pytestmark = pytest.mark.cluster

PREFIX = "prot-"  # namespaces this module's operator watches
FINALIZER = "wasminfer.dev/in-use-protection"


@pytest.fixture(scope="module")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    with chart_operator(cluster, tmp_path_factory.mktemp("protection-operator"), PREFIX, release_prefix="prot") as op:
        yield op


@pytest.fixture
def ns(cluster: Cluster, operator: OperatorProcess, request: pytest.FixtureRequest) -> Iterator[str]:
    name = cluster.new_namespace(PREFIX + request.node.name[5:30])
    yield name
    cluster.delete_namespace(name)


def model(cluster: Cluster, ns: str, name: str) -> dict[str, Any] | None:
    if not cluster.exists("inferencemodel", name, namespace=ns):
        return None
    body: dict[str, Any] = cluster.get_json("inferencemodel", name, namespace=ns)
    return body


def conditions(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (body.get("status") or {}).get("conditions") or []}


def protected(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body = model(cluster, ns, name)
        return body if body and FINALIZER in (body["metadata"].get("finalizers") or []) else None

    return cluster.wait_until(check, 30, f"the operator's finalizer on InferenceModel {name}")


def deleting_message(cluster: Cluster, ns: str, name: str, *workers: str) -> str:
    """Waits until the model's Deleting condition names exactly these workers; its message."""
    last: list[Any] = [None]

    def check() -> str | None:
        body = model(cluster, ns, name)
        c = last[0] = conditions(body or {}).get("Deleting") or {}
        want = f"{len(workers)} WasmWorker{'s' if len(workers) > 1 else ''} using this model: {', '.join(sorted(workers))};"
        ok = (c.get("status"), c.get("reason")) == ("True", "InUse") and want in c.get("message", "")
        return str(c["message"]) if ok else None

    try:
        return cluster.wait_until(check, 30, f"InferenceModel {name} Deleting=True (InUse) naming {', '.join(workers)}")
    except AssertionError as err:
        raise AssertionError(f"{err}\nlast Deleting condition: {json.dumps(last[0])}") from None


def gone(cluster: Cluster, ns: str, kind: str, name: str, timeout: float, what: str) -> float:
    start = time.monotonic()
    cluster.wait_until(lambda: not cluster.exists(kind, name, namespace=ns), timeout, what)
    return time.monotonic() - start


def test_deleted_model_waits_for_its_workers_names_them_and_goes_when_the_last_lets_go(cluster: Cluster, ns: str) -> None:
    cluster.apply(model_yaml("m") + "---\n" + worker_yaml("w", ["m"]) + "---\n" + worker_yaml("v", ["m"]), namespace=ns)
    cluster.wait("wasmworker/w", "Ready", timeout=60, namespace=ns)
    protected(cluster, ns, "m")

    cluster.kubectl("delete", "inferencemodel", "m", "-n", ns, "--wait=false")
    message = deleting_message(cluster, ns, "m", "v", "w")
    body = model(cluster, ns, "m")
    assert body is not None and body["metadata"].get("deletionTimestamp"), "the model is deleted, and held"
    assert "delete them or remove the model from their spec.models" in message, message
    warnings = [e for e in cluster.get_json("events", "--field-selector", "involvedObject.name=m", namespace=ns)["items"]
                if (e["type"], e["reason"]) == ("Warning", "InUse")]
    assert warnings and "v, w" in warnings[0]["message"], warnings

    # The workers keep running on the model while its deletion waits.
    w = conditions(cluster.get_json("wasmworker", "w", namespace=ns))
    assert (w["Ready"]["status"], w["ModelsReady"]["status"]) == ("True", "True"), w
    assert cluster.exists("deployment", "w", namespace=ns)

    # One worker stops naming the model, the other is deleted: the model goes promptly.
    cluster.kubectl("patch", "wasmworker", "v", "-n", ns, "--type=merge", "-p", '{"spec": {"models": []}}')
    deleting_message(cluster, ns, "m", "w")
    assert model(cluster, ns, "m") is not None
    cluster.kubectl("delete", "wasmworker", "w", "-n", ns, "--wait=false")
    took = gone(cluster, ns, "inferencemodel", "m", 20, "InferenceModel m to go once no worker uses it")
    print(f"model deleted {took:.1f} s after its last user")


def test_model_nobody_uses_is_deleted_at_once(cluster: Cluster, ns: str) -> None:
    cluster.apply(model_yaml("lonely"), namespace=ns)
    protected(cluster, ns, "lonely")
    cluster.kubectl("delete", "inferencemodel", "lonely", "-n", ns, "--wait=false")
    gone(cluster, ns, "inferencemodel", "lonely", 15, "an unused InferenceModel to be deleted")


def test_namespace_with_models_and_their_workers_is_deleted(cluster: Cluster, operator: OperatorProcess) -> None:
    """Workers and models deleted together (the namespace goes): the models do not hold it up."""
    name = cluster.new_namespace(PREFIX + "whole-namespace")
    cluster.apply(model_yaml("m") + "---\n" + worker_yaml("w", ["m"]), namespace=name)
    protected(cluster, name, "m")
    cluster.delete_namespace(name)
    start = time.monotonic()
    try:
        cluster.wait_until(lambda: not cluster.exists("namespace", name), 60, f"namespace {name} to be deleted")
    except AssertionError as err:
        left = cluster.kubectl("get", "inferencemodels,wasmworkers", "-n", name, "-o", "yaml", check=False).stdout
        status = cluster.kubectl("get", "namespace", name, "-o", "jsonpath={.status}", check=False).stdout
        raise AssertionError(f"{err}\nnamespace status: {status}\nleft: {left}") from None
    print(f"namespace deleted in {time.monotonic() - start:.1f} s")


def test_without_the_operator_the_finalizer_is_removed_by_hand_as_documented(cluster: Cluster, operator: OperatorProcess, namespace: str) -> None:
    """docs/troubleshooting.md: a held model in a namespace no operator watches goes once the
    finalizer is removed by hand."""
    held = model_yaml("orphan").replace("metadata:\n", f"metadata:\n  finalizers: [{FINALIZER}]\n", 1)
    cluster.apply(held, namespace=namespace)
    cluster.kubectl("delete", "inferencemodel", "orphan", "-n", namespace, "--wait=false")
    time.sleep(1)
    assert cluster.exists("inferencemodel", "orphan", namespace=namespace), "held by the finalizer"
    cluster.kubectl("patch", "inferencemodel", "orphan", "-n", namespace, "--type=merge", "-p", '{"metadata": {"finalizers": null}}')
    gone(cluster, namespace, "inferencemodel", "orphan", 10, "the model to go once its finalizer is removed")
