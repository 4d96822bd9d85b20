"""Placement: the profile follows the models unless set; timed fallbacks decided from pod conditions."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from opbuilders import https_source, model_spec, worker_spec

from wasminfer_operator import api
from wasminfer_operator.observe import PodView
from wasminfer_operator.placement import decide
from wasminfer_operator.profiles import OperatorConfig, load_operator_config
from wasminfer_operator.render import NamedModel

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
