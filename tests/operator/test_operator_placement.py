"""Placement: the profile follows the models unless set; timed fallbacks decided from pod conditions;
moving back once a capacity check finds room under a more preferred profile."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from opbuilders import https_source, model_spec, worker_spec

from wasminfer_operator import api
from wasminfer_operator.capacity import NodeView, node_view, pod_requests, room_for
from wasminfer_operator.observe import PodView
from wasminfer_operator.placement import Decision, Seen, decide, move_back, move_back_candidates
from wasminfer_operator.names import ACCELERATOR_NODE_LABELS
from wasminfer_operator.profiles import ConfigurationError, OperatorConfig, load_operator_config, parse_operator_config
from wasminfer_operator.render import NamedModel, ObjectRef, render_worker
from wasminfer_operator.status import WorkerObservation, worker_status

REPO = Path(__file__).resolve().parents[2]

NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.fixture
def cfg() -> OperatorConfig:
    return load_operator_config(env={})


def m(name: str, **overrides: Any) -> NamedModel:
    return NamedModel(name, api.InferenceModelSpec.model_validate(model_spec(**overrides)))


def w(**overrides: Any) -> api.WasmWorkerSpec:
    return api.WasmWorkerSpec.model_validate(worker_spec(**overrides))


def stuck(profile: str, seconds_ago: float, name: str = "p1") -> PodView:
    since = (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return PodView(name, "hello", profile, False, since, "0/5 nodes are available: 5 Insufficient gpu.intel.com/i915.", False, False, None)


def running(profile: str, name: str = "p2") -> PodView:
    return PodView(name, "hello", profile, True, None, "", True, False, None)


NV = {"format": "onnx", "backend": "onnxruntime", "device": "GPU", "source": https_source("m.onnx")}


@pytest.mark.parametrize(
    ("models", "profile"),
    [
        ([], "cpu"),
        ([m("a")], "cpu"),
        ([m("a", device="AUTO")], "cpu"),
        ([m("a", device="GPU")], "intel-gpu"),
        ([m("a", device="NPU")], "intel-npu"),
        ([m("a", **NV)], "nvidia-gpu"),
        ([m("a"), m("b", **NV)], "nvidia-gpu"),
    ],
)
def test_profile_follows_the_models(cfg: OperatorConfig, models: list[NamedModel], profile: str) -> None:
    d = decide(w(), models, cfg, None, [], NOW)
    assert (d.profile, d.failure, d.chain) == (profile, None, (profile,))


def test_conflicting_models_give_a_reason_not_a_guess(cfg: OperatorConfig) -> None:
    d = decide(w(), [m("vino", device="GPU"), m("ort", **NV)], cfg, None, [], NOW)
    assert d.profile is None and d.failure is not None
    assert d.failure[0] == "ConflictingModels"
    assert "intel-gpu: vino" in d.failure[1] and "nvidia-gpu: ort" in d.failure[1] and "spec.placement.profile" in d.failure[1]


def test_explicit_profile_wins_over_models(cfg: OperatorConfig) -> None:
    d = decide(w(placement={"profile": "cpu"}), [m("vino", device="GPU"), m("ort", **NV)], cfg, None, [], NOW)
    assert d.profile == "cpu" and d.failure is None


def test_unknown_profiles_are_named(cfg: OperatorConfig) -> None:
    d = decide(w(placement={"profile": "tpu", "fallbacks": ["cpu", "fpga"]}), [], cfg, None, [], NOW)
    assert d.failure is not None and d.failure[0] == "UnknownProfile"
    assert "tpu, fpga" in d.failure[1] and "cpu, intel-gpu, intel-npu, nvidia-gpu" in d.failure[1]


def test_no_fallback_before_the_deadline(cfg: OperatorConfig) -> None:
    spec = w(placement={"profile": "intel-gpu", "fallbacks": ["cpu"], "fallbackAfterSeconds": 60})
    d = decide(spec, [], cfg, None, [stuck("intel-gpu", 20)], NOW)
    assert d.profile == "intel-gpu" and d.switched_from is None
    assert d.retry_after == pytest.approx(40) and d.fallback_due == "2030-01-01T12:00:40Z"
    assert d.unschedulable is not None and "Insufficient gpu.intel.com/i915" in d.unschedulable[1]


def test_fallback_after_the_deadline(cfg: OperatorConfig) -> None:
    spec = w(placement={"profile": "intel-gpu", "fallbacks": ["cpu"], "fallbackAfterSeconds": 60})
    d = decide(spec, [], cfg, "intel-gpu", [stuck("intel-gpu", 61, "a"), stuck("intel-gpu", 30, "b")], NOW)
    assert (d.profile, d.switched_from, d.fell_back) == ("cpu", "intel-gpu", True)


def test_operator_default_deadline(cfg: OperatorConfig) -> None:
    spec = w(placement={"profile": "intel-gpu", "fallbacks": ["cpu"]})
    assert decide(spec, [], cfg, None, [stuck("intel-gpu", cfg.fallback_after_seconds - 1)], NOW).profile == "intel-gpu"
    assert decide(spec, [], cfg, None, [stuck("intel-gpu", cfg.fallback_after_seconds)], NOW).profile == "cpu"


def test_pods_stuck_past_the_deadline_move_the_worker_on_even_while_others_run(cfg: OperatorConfig) -> None:
    """A scale-up or a new revision that cannot be placed is as stuck as a first pod: it is reported
    at once and falls back at the deadline, with the running pods counted apart."""
    spec = w(placement={"profile": "intel-gpu", "fallbacks": ["cpu"], "fallbackAfterSeconds": 60})
    early = decide(spec, [], cfg, "intel-gpu", [stuck("intel-gpu", 20), running("intel-gpu")], NOW)
    assert early.profile == "intel-gpu" and early.unschedulable is not None and early.retry_after == pytest.approx(40)
    late = decide(spec, [], cfg, "intel-gpu", [stuck("intel-gpu", 61), running("intel-gpu")], NOW)
    assert (late.profile, late.switched_from) == ("cpu", "intel-gpu")
    obs = WorkerObservation(generation=1, replicas=2, decision=early, pods=[stuck("intel-gpu", 20), running("intel-gpu")])
    status, _ = worker_status(obs, {}, NOW)
    scheduled = next(c for c in status.wire()["conditions"] if c["type"] == "Scheduled")
    assert scheduled["status"] == "False" and "1 of 2 pods" in scheduled["message"] and "falling back to profile cpu" in scheduled["message"]


def test_stays_on_the_fallback_and_on_the_last_profile(cfg: OperatorConfig) -> None:
    spec = w(placement={"profile": "intel-gpu", "fallbacks": ["intel-npu", "cpu"], "fallbackAfterSeconds": 5})
    assert decide(spec, [], cfg, "intel-npu", [running("intel-npu")], NOW).profile == "intel-npu"
    assert decide(spec, [], cfg, "intel-npu", [stuck("intel-npu", 10)], NOW).profile == "cpu"
    last = decide(spec, [], cfg, "cpu", [stuck("cpu", 1000)], NOW)
    assert last.profile == "cpu" and last.unschedulable is not None and last.retry_after is None


def test_status_profile_outside_the_chain_resets_to_the_primary(cfg: OperatorConfig) -> None:
    spec = w(placement={"profile": "intel-gpu", "fallbacks": ["cpu"]})
    assert decide(spec, [], cfg, "nvidia-gpu", [], NOW).profile == "intel-gpu"


def test_terminating_pods_do_not_count(cfg: OperatorConfig) -> None:
    spec = w(placement={"profile": "intel-gpu", "fallbacks": ["cpu"], "fallbackAfterSeconds": 5})
    old = PodView("old", "hello", "intel-gpu", False, "2029-01-01T00:00:00Z", "", False, True, None)
    assert decide(spec, [], cfg, "intel-gpu", [old], NOW).unschedulable is None


# --- CPU pods and accelerator nodes ------------------------------------------------------------------

AVOID = [{"key": k, "operator": "DoesNotExist"} for k in ACCELERATOR_NODE_LABELS]


def required_terms(c: OperatorConfig, profile: str) -> list[dict[str, Any]] | None:
    d = render_worker(ObjectRef("hello", "team-a", "uid-1"), w(), [], profile, c).deployment
    affinity = d["spec"]["template"]["spec"].get("affinity", {})
    terms: list[dict[str, Any]] | None = affinity.get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms")
    return terms


def test_the_charts_cpu_profile_keeps_cpu_pods_off_accelerator_nodes() -> None:
    """The chart's values give a `cpu` profile of their own, which replaces the built-in one."""
    values = yaml.safe_load((REPO / "charts" / "wasminfer" / "values.yaml").read_text())["deviceProfiles"]
    profiles = {name: {k: v for k, v in p.items() if k != "runtimeImage"} for name, p in values.items()}
    c = parse_operator_config({"profiles": profiles}, "values.yaml")
    assert required_terms(c, "cpu") == [{"matchExpressions": AVOID}]
    for accelerated in ("intel-gpu", "intel-npu", "nvidia-gpu"):
        assert required_terms(c, accelerated) is None


def test_every_cpu_profile_avoids_them_unless_it_says_otherwise() -> None:
    c = parse_operator_config(
        {"profiles": {"cpu-big": {"device": "CPU", "backends": ["openvino"]}, "cpu-any": {"device": "CPU", "backends": ["openvino"], "avoidAcceleratorNodes": False},
                      "gpu-too": {"device": "GPU", "backends": ["openvino"], "avoidAcceleratorNodes": True}}},
        "config.yaml",
    )
    assert required_terms(c, "cpu-big") == [{"matchExpressions": AVOID}]
    assert required_terms(c, "cpu-any") is None
    assert required_terms(c, "gpu-too") == [{"matchExpressions": AVOID}]


def test_the_accelerator_labels_are_configurable_and_a_profiles_own_expression_on_one_stays() -> None:
    own = {"key": "example.com/tpu", "operator": "NotIn", "values": ["v5"]}
    c = parse_operator_config(
        {"acceleratorNodeLabels": ["example.com/tpu", "amd.com/gpu.present"], "profiles": {"cpu": {"device": "CPU", "backends": ["openvino"], "nodeAffinity": [own]}}},
        "config.yaml",
    )
    assert required_terms(c, "cpu") == [{"matchExpressions": [own, {"key": "amd.com/gpu.present", "operator": "DoesNotExist"}]}]
    assert required_terms(parse_operator_config({"acceleratorNodeLabels": []}, "config.yaml"), "cpu") is None


# --- moving back from a fallback: the capacity check ---------------------------------------------

GPU_LABEL = "intel.feature.node.kubernetes.io/gpu"
I915 = "gpu.intel.com/i915"


def node(name: str, devices: int = 1, *, labels: dict[str, str] | None = None, ready: bool = True, cordoned: bool = False,
         taints: list[dict[str, str]] | None = None) -> NodeView:  # fmt: skip
    body = {
        "metadata": {"name": name, "labels": {GPU_LABEL: "true"} if labels is None else labels},
        "spec": {"unschedulable": cordoned, "taints": taints or []},
        "status": {
            "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110", **({I915: str(devices)} if devices else {})},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }
    return node_view(body)


def pod_holding(devices: int, phase: str = "Running") -> dict[str, Any]:
    return {"spec": {"containers": [{"resources": {"requests": {I915: str(devices), "cpu": "100m"}}}]}, "status": {"phase": phase}}


def pod_spec(c: OperatorConfig, profile: str, **spec: Any) -> dict[str, Any]:
    d = render_worker(ObjectRef("hello", "team-a", "uid-1"), w(**spec), [], profile, c).deployment
    out: dict[str, Any] = d["spec"]["template"]["spec"]
    return out


def test_room_counts_free_devices_left_by_the_pods_on_the_node(cfg: OperatorConfig) -> None:
    gpu = pod_spec(cfg, "intel-gpu")
    free = room_for(gpu, 1, [node("gpu-1")], {"gpu-1": []})
    assert free.enough and "gpu-1 (1)" in free.detail
    taken = room_for(gpu, 1, [node("gpu-1")], {"gpu-1": [pod_holding(1)]})
    assert not taken.enough and taken.detail == f"room for 0 of 1 pod(s): 1 node(s) without free {I915}"
    # A pod that ended holds nothing; one that runs elsewhere (another node's list) neither.
    assert room_for(gpu, 1, [node("gpu-1")], {"gpu-1": [pod_holding(1, "Succeeded")]}).enough
    # Every replica must fit: one pod per device.
    two = room_for(gpu, 2, [node("gpu-1", 2), node("gpu-2")], {"gpu-1": [pod_holding(1)], "gpu-2": []})
    assert two.enough and "gpu-1 (1), gpu-2 (1)" in two.detail
    assert not room_for(gpu, 3, [node("gpu-1", 2), node("gpu-2")], {"gpu-1": [pod_holding(1)], "gpu-2": []}).enough
    # A node whose pods were not read counts for nothing.
    assert not room_for(gpu, 1, [node("gpu-1")], {}).enough


@pytest.mark.parametrize(
    ("the_node", "why"),
    [
        (node("gpu-1", cordoned=True), "cordoned"),
        (node("gpu-1", ready=False), "not Ready"),
        (node("gpu-1", taints=[{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}]), "with untolerated taint dedicated"),
        (node("gpu-1", 0), f"without free {I915}"),
    ],
)
def test_nodes_the_scheduler_would_refuse_give_no_room(cfg: OperatorConfig, the_node: NodeView, why: str) -> None:
    room = room_for(pod_spec(cfg, "intel-gpu"), 1, [the_node], {"gpu-1": []})
    assert not room.enough and room.detail == f"room for 0 of 1 pod(s): 1 node(s) {why}"


def test_selectors_affinity_and_tolerations_are_the_rendered_pods(cfg: OperatorConfig) -> None:
    # The worker's own node selector is added to the profile's.
    picky = pod_spec(cfg, "intel-gpu", placement={"nodeSelector": {"gpu.intel.com/product": "Flex_170"}})
    assert room_for(picky, 1, [node("gpu-1")], {"gpu-1": []}).detail.endswith("1 node(s) without label gpu.intel.com/product=Flex_170")
    # nvidia-gpu tolerates the nvidia taint; a PreferNoSchedule taint never keeps a pod off.
    nvidia = pod_spec(cfg, "nvidia-gpu")
    tainted = node("nv-1", 0, labels={}, taints=[{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
                                                    {"key": "busy", "effect": "PreferNoSchedule"}])  # fmt: skip
    tainted = NodeView(tainted.name, tainted.labels, True, False, tainted.taints, {**tainted.allocatable, "nvidia.com/gpu": Decimal(1)})
    assert room_for(nvidia, 1, [tainted], {"nv-1": []}).enough
    # CPU pods require nodes without accelerator labels.
    cpu = pod_spec(cfg, "cpu")
    assert room_for(cpu, 1, [node("gpu-1")], {"gpu-1": []}).detail.endswith("1 node(s) outside the node affinity")
    assert room_for(cpu, 1, [node("cpu-1", 0, labels={})], {"cpu-1": []}).enough


def test_a_pod_reserves_its_largest_init_container_and_its_overhead() -> None:
    spec = {
        "initContainers": [{"resources": {"requests": {"cpu": "2", "memory": "1Gi"}}}],
        "containers": [{"resources": {"requests": {"cpu": "500m", "memory": "2Gi"}}}, {"resources": {"requests": {"cpu": "500m"}}}],
        "overhead": {"cpu": "250m"},
    }
    assert pod_requests(spec) == {"cpu": Decimal("2.25"), "memory": Decimal(2 * 2**30), "pods": Decimal(1)}


# --- moving back from a fallback: the decision -----------------------------------------------------

CHAIN = {"profile": "intel-gpu", "fallbacks": ["intel-npu", "cpu"], "fallbackAfterSeconds": 5}


def on_fallback(cfg: OperatorConfig, current: str = "cpu") -> Decision:
    d = decide(w(placement=CHAIN), [], cfg, current, [running(current)], NOW)
    assert d.profile == current and d.fell_back
    return d


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def test_moves_back_once_the_preferred_profile_has_had_room_long_enough(cfg: OperatorConfig) -> None:
    d = on_fallback(cfg)
    room = {"intel-gpu": Seen(ago(cfg.move_back_stable_seconds), "room for 1 pod(s) on gpu-1 (1)")}
    back = move_back(d, room, ago(cfg.move_back_after_seconds), NOW, cfg)
    assert (back.profile, back.moved_back_from, back.room, back.fell_back) == ("intel-gpu", "cpu", "room for 1 pod(s) on gpu-1 (1)", False)
    assert back.move_back_check is None


def test_no_move_back_within_the_hold_off_after_a_fallback(cfg: OperatorConfig) -> None:
    d = on_fallback(cfg)
    fell_back_at = ago(cfg.move_back_after_seconds - 100)
    assert move_back_candidates(d, fell_back_at, NOW, cfg) == ()  # not even checked yet
    held = move_back(d, {"intel-gpu": Seen(ago(3600), "room")}, fell_back_at, NOW, cfg)
    assert (held.profile, held.moved_back_from, held.move_back_check) == ("cpu", None, pytest.approx(100))


def test_room_must_last_the_stable_period(cfg: OperatorConfig) -> None:
    d = on_fallback(cfg)
    fell_back_at = ago(cfg.move_back_after_seconds)
    assert move_back_candidates(d, fell_back_at, NOW, cfg) == ("intel-gpu", "intel-npu")
    fresh = move_back(d, {"intel-gpu": Seen(ago(cfg.move_back_stable_seconds - 10), "room")}, fell_back_at, NOW, cfg)
    assert fresh.profile == "cpu" and fresh.move_back_check == pytest.approx(10)
    none = move_back(d, {}, fell_back_at, NOW, cfg)
    assert none.profile == "cpu" and none.move_back_check == cfg.move_back_check_seconds


def test_the_most_preferred_profile_with_room_wins(cfg: OperatorConfig) -> None:
    d = on_fallback(cfg)
    fell_back_at = ago(cfg.move_back_after_seconds)
    both = {"intel-gpu": Seen(ago(3600), "gpu"), "intel-npu": Seen(ago(3600), "npu")}
    assert move_back(d, both, fell_back_at, NOW, cfg).profile == "intel-gpu"
    assert move_back(d, {"intel-npu": Seen(ago(3600), "npu")}, fell_back_at, NOW, cfg).profile == "intel-npu"
    # From the middle of the chain only earlier profiles count.
    mid = on_fallback(cfg, "intel-npu")
    assert move_back_candidates(mid, fell_back_at, NOW, cfg) == ("intel-gpu",)


def test_no_move_back_on_the_primary_during_a_fallback_or_when_turned_off(cfg: OperatorConfig) -> None:
    room = {"intel-gpu": Seen(ago(3600), "room"), "intel-npu": Seen(ago(3600), "room")}
    primary = decide(w(placement=CHAIN), [], cfg, "intel-gpu", [running("intel-gpu")], NOW)
    assert move_back(primary, room, ago(3600), NOW, cfg) == primary
    falling = decide(w(placement=CHAIN), [], cfg, "intel-npu", [stuck("intel-npu", 10)], NOW)
    assert falling.switched_from == "intel-npu" and move_back(falling, room, ago(3600), NOW, cfg) == falling
    off = cfg.model_copy(update={"move_back": False})
    d = on_fallback(cfg)
    assert move_back(d, room, ago(3600), NOW, off) == d


def test_move_back_settings_are_configuration(cfg: OperatorConfig) -> None:
    assert (cfg.move_back, cfg.move_back_after_seconds, cfg.move_back_stable_seconds, cfg.move_back_check_seconds) == (True, 600, 60, 30)
    c = parse_operator_config({"moveBack": False, "moveBackAfterSeconds": 0, "moveBackStableSeconds": 5, "moveBackCheckSeconds": 2}, "config.yaml")
    assert (c.move_back, c.move_back_after_seconds, c.move_back_stable_seconds, c.move_back_check_seconds) == (False, 0, 5, 2)
    with pytest.raises(ConfigurationError, match=r"(?s)config.yaml.*moveBackCheckSeconds"):
        parse_operator_config({"moveBackCheckSeconds": 0}, "config.yaml")


# --- moving back from a fallback: status and event -------------------------------------------------


def scheduled(status: Any) -> Any:
    return next(c for c in status.conditions if c.type == "Scheduled")


def test_a_move_back_is_reported_with_both_profiles_and_stays_until_the_spec_changes(cfg: OperatorConfig) -> None:
    fell_back = WorkerObservation(generation=3, decision=on_fallback(cfg), pods=[running("cpu")])
    old, _ = worker_status(fell_back, {}, NOW)
    assert scheduled(old).reason == "FellBack"
    room = {"intel-gpu": Seen(ago(3600), "room for 1 pod(s) on gpu-1 (1)")}
    back = move_back(on_fallback(cfg), room, ago(3600), NOW, cfg)
    status, events = worker_status(WorkerObservation(generation=3, decision=back, pods=[running("cpu")]), old.wire(), NOW)
    cond = scheduled(status)
    assert (cond.status, cond.reason) == ("Unknown", "MovedBack") and status.profile == "intel-gpu"
    assert cond.message == "moved back from fallback profile cpu to profile intel-gpu, which has room again: room for 1 pod(s) on gpu-1 (1)"
    (event,) = [e for e in events if e.type == "Scheduled"]
    assert event.reason == "MovedBack" and not event.warning and "cpu" in event.event_message and "intel-gpu" in event.event_message

    # The next reconciles: the primary's pods are placed, then run; the reason stays.
    on_primary = decide(w(placement=CHAIN), [], cfg, "intel-gpu", [running("intel-gpu")], NOW)
    later, events = worker_status(WorkerObservation(generation=3, decision=on_primary, pods=[running("intel-gpu")]), status.wire(), NOW)
    assert (scheduled(later).status, scheduled(later).reason, scheduled(later).message) == ("True", "MovedBack", cond.message)
    assert [e.status for e in events if e.type == "Scheduled"] == ["True"]
    changed, _ = worker_status(WorkerObservation(generation=4, decision=on_primary, pods=[running("intel-gpu")]), later.wire(), NOW)
    assert (scheduled(changed).status, scheduled(changed).reason) == ("True", "Scheduled")
