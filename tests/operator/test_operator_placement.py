"""Placement: the profile follows the models unless set; timed fallbacks decided from pod conditions."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from opbuilders import https_source, model_spec, worker_spec

from wasminfer_operator import api
from wasminfer_operator.observe import PodView
from wasminfer_operator.placement import decide
from wasminfer_operator.profiles import ACCELERATOR_NODE_LABELS, OperatorConfig, load_operator_config, parse_operator_config
from wasminfer_operator.render import NamedModel, ObjectRef, render_worker

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


def test_a_scheduled_pod_of_the_profile_prevents_fallback(cfg: OperatorConfig) -> None:
    """A rollout waiting for a busy GPU is not a missing GPU."""
    spec = w(placement={"profile": "intel-gpu", "fallbacks": ["cpu"], "fallbackAfterSeconds": 5})
    d = decide(spec, [], cfg, None, [stuck("intel-gpu", 600), running("intel-gpu")], NOW)
    assert d.profile == "intel-gpu" and d.unschedulable is None


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
