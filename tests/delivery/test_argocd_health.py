"""The Argo CD health checks (Lua, run by a real Lua 5.1) on status objects:
- captured from the real operator against the test control plane (tests/delivery/fixtures/, refreshed
  by e2e/test_argocd_capture.py), and
- computed by the operator's own status functions for every reason it reports."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from wasminfer_operator import status as st
from wasminfer_operator.observe import ChildView, PodView
from wasminfer_operator.placement import Decision

from .argocd_lua import HEALTH_SCRIPTS, STATES, Health, condition, expected_health, health_of

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def fixture_files() -> list[Path]:
    return sorted(FIXTURES.glob("*.yaml"))


def test_fixtures_cover_every_state_of_both_kinds() -> None:
    names = {"-".join(p.stem.split("-")[:2]) for p in fixture_files()}
    assert {
        "wasmworker-healthy",
        "wasmworker-progressing",
        "wasmworker-degraded",
        "inferencemodel-healthy",
        "inferencemodel-progressing",
        "inferencemodel-degraded",
    } <= names, f"fixtures missing; have {sorted(names)} (refresh: WASMINFER_UPDATE_FIXTURES=1 pytest e2e/test_argocd_capture.py)"


def test_health_of_captured_objects() -> None:
    files = fixture_files()
    assert files, f"no fixtures in {FIXTURES}"
    wrong = []
    for path in files:
        obj = yaml.safe_load(path.read_text())
        assert obj["metadata"].get("uid"), f"{path.name} is not an object read from an API server"
        got, want = health_of(obj), expected_health(obj, path.stem.split("-")[1])
        if got != want:
            wrong.append(f"{path.name}: got {got}, expected {want}")
    assert not wrong, "\n".join(wrong)


# --- every reason the operator reports, through its own status functions ---------------------------


def worker_object(obs: st.WorkerObservation, generation: int | None = None) -> dict[str, Any]:
    status, _ = st.worker_status(obs, {}, NOW)
    return {
        "apiVersion": "wasminfer.dev/v1alpha1",
        "kind": "WasmWorker",
        "metadata": {"name": "w", "namespace": "ns", "generation": generation or obs.generation},
        "status": status.wire(),
    }


def model_object(obs: st.ModelObservation) -> dict[str, Any]:
    status, _ = st.model_status(obs, {}, NOW)
    return {
        "apiVersion": "wasminfer.dev/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": "m", "namespace": "ns", "generation": obs.generation},
        "status": status.wire(),
    }


def deployment(ready: int, updated: int | None = None, failure: str | None = None) -> ChildView:
    up = ready if updated is None else updated
    return ChildView(
        kind="Deployment", name="w", worker="w", owner_uid="u", render_hash="h", generation=1, observed_generation=1,
        replicas=2, status_replicas=2, ready_replicas=ready, updated_replicas=up, available_replicas=ready, failure=failure,
    )


def pod(name: str = "w-1", scheduled: bool = True, ready: bool = True, problem: tuple[str, str] | None = None, since: str | None = None) -> PodView:
    return PodView(
        name=name, worker="w", profile="cpu", scheduled=scheduled, unschedulable_since=since,
        unschedulable_message="0/5 nodes are available: 5 Insufficient nvidia.com/gpu." if since else "",
        ready=ready, terminating=False, problem=problem,
    )


def ready_models() -> dict[str, st.ModelState]:
    return {"mobilenet": st.ModelState(found=True, ready=True, reason="SourceDeclared")}


BASE = st.WorkerObservation(generation=3, replicas=2, url="http://w.ns.svc/classify", selector="wasminfer.dev/worker=w", model_names=["mobilenet"])
CPU = Decision(profile="cpu", chain=("cpu",))

WORKER_CASES: list[tuple[str, st.WorkerObservation, str, str]] = [
    # (case, observation, expected health, a word of the expected message)
    ("available", replace(BASE, models=ready_models(), decision=CPU, applied=True, desired_hash="h",
                                       deployment=deployment(2), pods=[pod("a"), pod("b")]), "Healthy", "2/2 replicas ready"),
    ("model-missing", replace(BASE, models={}), "Progressing", "not found"),
    ("model-not-ready", replace(BASE, models={"mobilenet": st.ModelState(True, False, "SourceNotFound", "ConfigMap m not found")}),
     "Progressing", "ConfigMap m not found"),
    ("rolling-out", replace(BASE, models=ready_models(), decision=CPU, applied=True, desired_hash="h",
                                         deployment=deployment(0, 1), pods=[pod(ready=False)]), "Progressing", "updated"),
    ("unschedulable", replace(BASE, models=ready_models(), applied=True, desired_hash="h",
                                           decision=Decision(profile="nvidia-gpu", chain=("nvidia-gpu",), unschedulable=("2026-01-02T03:00:00Z", "Insufficient nvidia.com/gpu")),
                                           deployment=deployment(0), pods=[pod(scheduled=False, ready=False, since="2026-01-02T03:00:00Z")]),
     "Progressing", "cannot be scheduled"),
    ("apply-forbidden", replace(BASE, models=ready_models(), decision=CPU,
                                             apply_error=("ApplyFailed", 'Deployment w: deployments.apps "w" is forbidden')), "Degraded", "forbidden"),
    ("crash-loop", replace(BASE, models=ready_models(), decision=CPU, applied=True, desired_hash="h", deployment=deployment(1),
                                        pods=[pod("a"), pod("b", ready=False, problem=("CrashLoopBackOff", "container runtime: exit 1"))]),
     "Degraded", "container runtime: exit 1"),
    ("fetch-failed", replace(BASE, models=ready_models(), decision=CPU, applied=True, desired_hash="h", deployment=deployment(0),
                                          pods=[pod(ready=False, problem=("FetchFailed", "init container fetch: sha256 mismatch"))]),
     "Degraded", "sha256 mismatch"),
    ("replica-failure", replace(BASE, models=ready_models(), decision=CPU, applied=True, desired_hash="h",
                                             deployment=deployment(0, failure="exceeded quota: gpu")), "Degraded", "exceeded quota"),
    ("invalid-spec", st.WorkerObservation(generation=3, spec_error="spec.route: must start with '/'"), "Degraded", "must start with"),
    ("conflicting-models", replace(BASE, models=ready_models(),
                                                decision=Decision(profile=None, failure=("ConflictingModels", "the models need different device profiles"))),
     "Degraded", "different device profiles"),
    ("unknown-profile", replace(BASE, models=ready_models(),
                                             decision=Decision(profile=None, chain=("tpu",), failure=("UnknownProfile", "profile(s) tpu not configured"))),
     "Degraded", "tpu not configured"),
    ("module-unsigned", replace(BASE, models=ready_models(), module_source=(False, "SignatureMissing", "no signature is attached"),
                                             verified=("False", "SignatureMissing", "no signature is attached")), "Degraded", "no signature"),
    ("module-registry-down", replace(BASE, models=ready_models(), module_source=(False, "PullFailed", "Connection refused")),
     "Progressing", "Connection refused"),
    ("scaled-to-zero", replace(BASE, replicas=0, models=ready_models(), decision=CPU, applied=True, desired_hash="h",
                                            deployment=ChildView(kind="Deployment", name="w", worker="w", owner_uid="u", render_hash="h", generation=1, observed_generation=1)),
     "Healthy", "no replicas"),
]


@pytest.mark.parametrize(("case", "obs", "state", "words"), WORKER_CASES, ids=[c[0] for c in WORKER_CASES])
def test_worker_health_for_each_reason(case: str, obs: st.WorkerObservation, state: str, words: str) -> None:
    health = health_of(worker_object(obs))
    assert health.status == state, f"{case}: {health}"
    assert words in health.message, f"{case}: {health}"


MODEL_CASES: list[tuple[str, st.ModelObservation, str]] = [
    ("https-declared", st.ModelObservation(generation=1, source=(True, "SourceDeclared", "1 https file(s)")), "Healthy"),
    ("configmap-resolved", st.ModelObservation(generation=1, source=(True, "SourceResolved", "ConfigMap m holds model.onnx")), "Healthy"),
    ("configmap-missing", st.ModelObservation(generation=1, source=(False, "SourceNotFound", "ConfigMap m not found")), "Progressing"),
    ("api-error", st.ModelObservation(generation=1, source=(False, "SourceCheckFailed", "cannot read the source: timeout")), "Progressing"),
    ("key-missing", st.ModelObservation(generation=1, source=(False, "KeyNotFound", "ConfigMap m has no key(s) model.onnx")), "Degraded"),
    ("checksum", st.ModelObservation(generation=1, source=(False, "ChecksumMismatch", "sha256 is 00, expected 11")), "Degraded"),
    ("oci-signed", st.ModelObservation(generation=1, source=(True, "SourceResolved", "OCI artifact r/m:1@sha256:00"),
                                       verified=("True", "SignatureVerified", "signed by k.pub")), "Healthy"),
    ("oci-stranger", st.ModelObservation(generation=1, source=(False, "SignatureInvalid", "a signature by none of the trusted keys"),
                                         verified=("False", "SignatureInvalid", "a signature by none of the trusted keys")), "Degraded"),
    ("oci-wrong-login", st.ModelObservation(generation=1, source=(False, "CredentialsRefused", "the registry refused the credentials")),
     "Degraded"),
    ("no-profile", st.ModelObservation(generation=1, profile_failure=("NoDeviceProfile", "no device profile provides device NPU")), "Degraded"),
    ("invalid-spec", st.ModelObservation(generation=1, spec_error="spec.source: set exactly one of https, configMap, pvc"), "Degraded"),
]


def _served(replicas: int, *pods: PodView, decision: Decision | None = None, apply_error: tuple[str, str] | None = None) -> st.ModelObservation:
    sv = st.ServingObservation(
        replicas, "http://m-model-server.ns.svc:8000", "grpc://m-model-server.ns.svc:8001", "wasminfer.dev/model-server=m",
        decision or Decision(profile="nvidia-gpu", chain=("nvidia-gpu",)), pods, apply_error,
    )  # fmt: skip
    return st.ModelObservation(generation=1, source=(True, "SourceDeclared", "1 https file(s)"), serving=sv)


def _server_pod(ready: bool = False, problem: tuple[str, str] | None = None) -> PodView:
    return PodView("m-model-server-1", "", "nvidia-gpu", True, None, "", ready, False, problem, server="m")


MODEL_CASES += [
    ("serving", _served(1, _server_pod(ready=True)), "Healthy"),
    ("server-starting", _served(1, _server_pod()), "Progressing"),
    ("scaled-to-zero", _served(0), "Progressing"),
    ("server-fetch-failed", _served(1, _server_pod(problem=("FetchFailed", "sha256 mismatch"))), "Degraded"),
    ("server-crashing", _served(1, _server_pod(problem=("CrashLoopBackOff", "failed to load: model m"))), "Degraded"),
    ("server-child-conflict", _served(1, apply_error=("ChildConflict", "Service m-model-server exists")), "Degraded"),
    ("server-unknown-profile", _served(1, decision=Decision(profile=None, failure=("UnknownProfile", "tpu not configured"))), "Degraded"),
]


def pool_object(obs: st.PoolObservation) -> dict[str, Any]:
    status, _ = st.pool_status(obs, {}, NOW)
    return {
        "apiVersion": "wasminfer.dev/v1alpha1",
        "kind": "ModelPool",
        "metadata": {"name": "p", "namespace": "ns", "generation": obs.generation},
        "status": status.wire(),
    }


def _replica(i: int, ready: bool = True, problem: tuple[str, str] | None = None, template: str = "t1") -> PodView:
    return PodView(f"p-pool-{i}", "", "cpu", True, None, "", ready, False, problem, template, pool="p")


def _pool(*pods: PodView, replicas: int = 2, models: tuple[str, ...] = ("a", "b"), **kw: Any) -> st.PoolObservation:
    return st.PoolObservation(
        generation=1, decision=kw.pop("decision", Decision(profile="cpu", chain=("cpu",))), replicas=replicas, copies=2,
        selector="wasminfer.dev/model-pool=p", models=models, pods=pods, current_hash="t1", **kw,
    )  # fmt: skip


POOL_CASES: list[tuple[str, st.PoolObservation, str]] = [
    ("serving", _pool(_replica(0), _replica(1)), "Healthy"),
    ("no-models", _pool(models=()), "Healthy"),
    ("starting", _pool(_replica(0), _replica(1, ready=False)), "Progressing"),
    ("rolling", _pool(_replica(0), _replica(1, template="t0")), "Progressing"),
    ("scaled-to-zero", _pool(replicas=0), "Progressing"),
    ("crashing", _pool(_replica(0), _replica(1, ready=False, problem=("CrashLoopBackOff", "failed to load: model b"))), "Degraded"),
    ("conflicting", _pool(decision=Decision(profile=None, failure=("ConflictingModels", "a: nvidia-gpu; b: intel-gpu"))), "Degraded"),
    ("invalid", st.PoolObservation(generation=1, spec_error="spec.copies: must be at least 1"), "Degraded"),
]


@pytest.mark.parametrize(("case", "obs", "state"), POOL_CASES, ids=[c[0] for c in POOL_CASES])
def test_pool_health_for_each_reason(case: str, obs: st.PoolObservation, state: str) -> None:
    obj = pool_object(obs)
    ready = condition(obj, "Ready")
    assert ready is not None
    assert health_of(obj) == Health(state, ready["message"] or ready["reason"])


@pytest.mark.parametrize(("case", "obs", "state"), MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_model_health_for_each_reason(case: str, obs: st.ModelObservation, state: str) -> None:
    obj = model_object(obs)
    ready = condition(obj, "Ready")
    assert ready is not None
    assert health_of(obj) == Health(state, ready["message"] or ready["reason"])


def test_status_of_an_older_generation_is_progressing() -> None:
    obs = WORKER_CASES[0][1]
    health = health_of(worker_object(obs, generation=obs.generation + 1))
    assert health == Health("Progressing", f"Waiting for the operator to observe generation {obs.generation + 1}")


@pytest.mark.parametrize("kind", sorted(HEALTH_SCRIPTS))
def test_object_without_status_is_progressing(kind: str) -> None:
    obj = {"apiVersion": "wasminfer.dev/v1alpha1", "kind": kind, "metadata": {"name": "x", "generation": 1}}
    assert health_of(obj) == Health("Progressing", "Waiting for the operator to report status")


@pytest.mark.parametrize("kind", sorted(HEALTH_SCRIPTS))
def test_messages_survive_quotes_and_unicode(kind: str) -> None:
    msg = 'model "mobilenet" → ready; C:\\path\nsecond line'
    obj = {
        "kind": kind,
        "metadata": {"generation": 1},
        "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True", "reason": "Available", "message": msg}]},
    }
    assert health_of(obj) == Health("Healthy", msg)


def test_scripts_return_only_argo_cd_states() -> None:
    """Every `hs.status = "..."` in the scripts is a state Argo CD knows."""
    for script in HEALTH_SCRIPTS.values():
        used = set(re.findall(r'hs\.status = "(\w+)"', script.read_text()))
        assert used and used <= STATES, f"{script.name}: {used - STATES}"


def test_reasons_named_in_the_scripts_exist_in_the_operator() -> None:
    """A renamed reason in the operator would silently turn a Degraded into Progressing."""
    operator_src = "".join(p.read_text() for p in (Path(st.__file__).parent).rglob("*.py"))  # subpackages too
    for script in HEALTH_SCRIPTS.values():
        block = re.search(r"local failures = \{(.*?)\}", script.read_text(), re.S)
        assert block is not None, script.name
        for reason in re.findall(r"(\w+) = true", block.group(1)):
            assert f'"{reason}"' in operator_src, f"{script.name}: reason {reason} is not reported by the operator"


def test_argocd_cm_snippets_carry_the_scripts() -> None:
    chart_argocd = next(iter(HEALTH_SCRIPTS.values())).parent
    patch = yaml.safe_load((chart_argocd / "argocd-cm-patch.yaml").read_text())["data"]
    values = yaml.safe_load((chart_argocd / "argo-cd-values.yaml").read_text())["configs"]["cm"]
    for kind, script in HEALTH_SCRIPTS.items():
        key = f"resource.customizations.health.wasminfer.dev_{kind}"
        assert patch[key] == values[key] == script.read_text()
