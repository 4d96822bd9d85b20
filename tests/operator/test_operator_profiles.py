"""Device profiles: built-ins, a configuration file that replaces and adds, errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from wasminfer_operator.profiles import (
    DEFAULT_IMAGE,
    NVIDIA_IMAGE,
    ConfigurationError,
    load_operator_config,
    parse_operator_config,
)
from wasminfer_runtime.config import BackendName, Device

REPO = Path(__file__).resolve().parents[2]


def test_builtin_profiles() -> None:
    cfg = load_operator_config(env={})
    assert set(cfg.profiles) == {"cpu", "intel-gpu", "intel-npu", "nvidia-gpu"}
    assert cfg.profiles["intel-gpu"].resources == {"gpu.intel.com/i915": 1}
    assert cfg.profiles["intel-npu"].resources == {"npu.intel.com/accel": 1}
    nvidia = cfg.profiles["nvidia-gpu"]
    assert nvidia.resources == {"nvidia.com/gpu": 1} and nvidia.image == NVIDIA_IMAGE
    assert [t.key for t in nvidia.tolerations] == ["nvidia.com/gpu"]
    assert cfg.image == DEFAULT_IMAGE


@pytest.mark.parametrize(
    ("device", "backend", "profile"),
    [
        (Device.CPU, BackendName.openvino, "cpu"),
        (Device.AUTO, BackendName.onnxruntime, "cpu"),
        (Device.GPU, BackendName.openvino, "intel-gpu"),
        (Device.GPU, BackendName.onnxruntime, "nvidia-gpu"),
        (Device.NPU, BackendName.openvino, "intel-npu"),
        (Device.NPU, BackendName.onnxruntime, None),
    ],
)
def test_profile_for_model(device: Device, backend: BackendName, profile: str | None) -> None:
    assert load_operator_config(env={}).profile_for_model(device, backend) == profile


def test_example_configuration_file_adds_profiles(tmp_path: Path) -> None:
    cfg = load_operator_config(REPO / "examples/kubernetes/operator-config.yaml", env={})
    assert {"cpu", "intel-gpu", "intel-npu", "nvidia-gpu", "amd-gpu", "intel-gpu-xe"} <= set(cfg.profiles)
    assert cfg.profiles["amd-gpu"].automatic is False
    # automatic: false keeps GPU+onnxruntime models on the built-in nvidia-gpu profile
    assert cfg.profile_for_model(Device.GPU, BackendName.onnxruntime) == "nvidia-gpu"


def test_file_replaces_a_builtin_profile_and_env_overrides_image(tmp_path: Path) -> None:
    path = tmp_path / "operator.yaml"
    path.write_text("profiles:\n  intel-gpu:\n    device: GPU\n    backends: [openvino]\n    resources: {gpu.intel.com/xe: 1}\n")
    cfg = load_operator_config(None, env={"WASMINFER_OPERATOR_CONFIG": str(path), "WASMINFER_RUNTIME_IMAGE": "r.example.com/rt:1"})
    assert cfg.profiles["intel-gpu"].resources == {"gpu.intel.com/xe": 1}
    assert cfg.image == "r.example.com/rt:1"
    assert cfg.image_for("cpu", None) == "r.example.com/rt:1"
    assert cfg.image_for("nvidia-gpu", None) == NVIDIA_IMAGE
    assert cfg.image_for("nvidia-gpu", "mine:2") == "mine:2"


def test_device_profiles_roll_without_surge_unless_configured(tmp_path: Path) -> None:
    cfg = load_operator_config(env={})
    default = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
    assert cfg.profiles["cpu"].deployment_strategy() == default, "CPU workers keep the Deployment default"
    for name in ("intel-gpu", "intel-npu", "nvidia-gpu"):
        assert cfg.profiles[name].deployment_strategy() == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    assert cfg.progress_deadline_seconds == 600
    path = tmp_path / "operator.yaml"
    path.write_text(
        "progressDeadlineSeconds: 20\n"
        "profiles:\n"
        "  intel-npu: {device: NPU, backends: [openvino], resources: {npu.intel.com/accel: 1}, rollout: {strategy: Recreate}}\n"
        "  big-gpu: {device: GPU, backends: [openvino], resources: {gpu.intel.com/i915: 1}, rollout: {maxSurge: 25%, maxUnavailable: '1'}}\n"
    )
    cfg = load_operator_config(path, env={})
    assert cfg.progress_deadline_seconds == 20
    assert cfg.profiles["intel-npu"].deployment_strategy() == {"type": "Recreate"}
    assert cfg.profiles["big-gpu"].deployment_strategy() == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}}
    # One given, the other written out as the Deployment default: no field is left for the API server to fill.
    only_surge = parse_operator_config({"profiles": {"x": {"device": "GPU", "backends": ["openvino"], "rollout": {"maxSurge": 0}}}}, "f")
    assert only_surge.profiles["x"].deployment_strategy() == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "25%"}}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("profiles:\n  gpu:\n    device: QPU\n    backends: [openvino]\n", "profiles.gpu.device"),
        ("profiles:\n  Bad Name:\n    device: CPU\n    backends: [openvino]\n", "not a valid profile name"),
        ("defaultProfile: nowhere\n", "defaultProfile"),
        ("fallbackAfterSeconds: 0\n", "fallbackAfterSeconds"),
        ("profiles: [1, 2]\n", "profiles: expected a mapping"),
        ("image: [\n", "not valid YAML"),
        ("surprise: 1\n", "surprise"),
        ("progressDeadlineSeconds: 0\n", "progressDeadlineSeconds"),
        ("profiles:\n  npu:\n    device: NPU\n    backends: [openvino]\n    rollout: {strategy: BlueGreen}\n", "profiles.npu.rollout.strategy"),
        ("profiles:\n  npu:\n    device: NPU\n    backends: [openvino]\n    rollout: {maxSurge: 0, maxUnavailable: 0}\n", "cannot both be 0"),
        ("profiles:\n  npu:\n    device: NPU\n    backends: [openvino]\n    rollout: {maxSurge: 0, maxUnavailable: 0%}\n", "cannot both be 0"),
        ("profiles:\n  npu:\n    device: NPU\n    backends: [openvino]\n    rollout: {strategy: Recreate, maxSurge: 1}\n", "only for strategy RollingUpdate"),
        ("profiles:\n  npu:\n    device: NPU\n    backends: [openvino]\n    rollout: {maxSurge: half}\n", "maxSurge: 'half'"),
        ("profiles:\n  npu:\n    device: NPU\n    backends: [openvino]\n    rollout: {maxUnavailable: -1}\n", "maxUnavailable: -1"),
        ("profiles:\n  npu:\n    device: NPU\n    backends: [openvino]\n    rollout: {maxUnavailable: 150%}\n", "more than 100%"),
        ("profiles:\n  npu:\n    device: NPU\n    backends: [openvino]\n    rollout: {surge: 1}\n", "profiles.npu.rollout.surge"),
        # The format/backend/device table: ONNX Runtime has no NPU, so no profile can offer it.
        ("profiles:\n  npu:\n    device: NPU\n    backends: [openvino, onnxruntime]\n",
         "profiles.npu: Value error, backends: backend onnxruntime runs on device CPU or GPU only"),
    ],
)
def test_bad_configuration_names_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "operator.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as info:
        load_operator_config(path, env={})
    assert str(path) in str(info.value) and needle in str(info.value)


def test_missing_configuration_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_operator_config(tmp_path / "absent.yaml", env={})
