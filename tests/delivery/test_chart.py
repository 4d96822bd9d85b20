"""The Helm chart: lint, what it renders, and the values it refuses (with which message)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from wasminfer_operator import __version__ as operator_version
from wasminfer_operator.profiles import parse_operator_config
from wasminfer_runtime.config import BackendName, Device

from .conftest import CHART, REPO, HelmRun, Render


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def operator_args(objs: list[dict[str, Any]]) -> list[str]:
    container = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return list(container["args"])


def test_helm_lint_passes(helm: HelmRun) -> None:
    result = helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in result.stdout, result.stdout


def test_helm_lint_passes_in_namespaced_mode(helm: HelmRun) -> None:
    result = helm("lint", "--strict", str(CHART), "--set", "watchNamespaces={team-a,team-b}")
    assert "0 chart(s) failed" in result.stdout, result.stdout


def test_chart_versions_follow_the_project() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert chart["appVersion"] == project == operator_version
    assert chart["version"] == project


def test_default_render_has_everything_the_operator_needs(render: Render) -> None:
    objs = render()
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == sorted(
        [
            "ServiceAccount", "ConfigMap", "Deployment", "PodDisruptionBudget",
            "ClusterRole", "ClusterRole", "ClusterRoleBinding", "ClusterRoleBinding", "Role", "RoleBinding",
        ]
    )
    dep = one(objs, "Deployment")
    assert dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one(objs, "ServiceAccount")["metadata"]["name"] == "wasminfer"
    container = pod["containers"][0]
    assert container["image"] == "ghcr.io/wasminfer/operator:0.1.0"
    args = container["args"]
    assert "--config=/etc/wasminfer-operator/config.yaml" in args
    assert "--lease-name=wasminfer" in args and "--identity=$(POD_NAME)" in args
    assert not [a for a in args if a.startswith("--namespace")], "cluster-wide by default"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_operator_pods_are_hardened(render: Render) -> None:
    pod = one(render(), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    sc = pod["containers"][0]["securityContext"]
    assert sc == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_rendered_config_is_accepted_by_the_operator(render: Render) -> None:
    """The operator's own parser reads the ConfigMap the chart writes: profiles and images as values."""
    cm = one(render(), "ConfigMap")
    cfg = parse_operator_config(yaml.safe_load(cm["data"]["config.yaml"]), "chart ConfigMap")
    assert cfg.image == "ghcr.io/wasminfer/runtime:0.1.0"
    assert sorted(cfg.profiles) == ["cpu", "intel-gpu", "intel-npu", "nvidia-gpu"]
    nvidia = cfg.profiles["nvidia-gpu"]
    assert nvidia.image == "ghcr.io/wasminfer/runtime-nvidia:0.1.0"
    assert nvidia.resources == {"nvidia.com/gpu": 1}
    assert nvidia.backends == [BackendName.onnxruntime]
    assert [t.wire() for t in nvidia.tolerations] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert cfg.profiles["intel-gpu"].resources == {"gpu.intel.com/i915": 1}
    assert cfg.profiles["intel-gpu"].device is Device.GPU
    assert cfg.image_for("cpu", None) == "ghcr.io/wasminfer/runtime:0.1.0"
    assert cfg.default_profile == "cpu" and cfg.fallback_after_seconds == 120


def test_namespace_signature_policies_reach_the_operator(render: Render, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    root = '{"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1"}'
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"signatures": {
        "production": {"keys": [pem]},
        "*": {"sigstore": {"trustedRoot": root, "identities": [{"identity": "ci@example.com", "issuer": "https://issuer.example.com"}]},
              "required": False},
    }}))  # fmt: skip
    cfg = parse_operator_config(yaml.safe_load(one(render("-f", str(values)), "ConfigMap")["data"]["config.yaml"]), "chart ConfigMap")
    production, others = cfg.signatures_for("production"), cfg.signatures_for("anything-else")
    assert production is not None and production.keys == [pem] and production.required
    assert others is not None and others.sigstore is not None and others.sigstore.trusted_root == root and not others.required


def test_profiles_and_images_come_from_values(render: Render, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "image": {"tag": "9.9.9"},
                "runtime": {
                    "image": {"repository": "registry.example/wasminfer-runtime", "digest": "sha256:" + "a" * 64},
                    "nvidiaImage": {"tag": "cuda-test"},
                },
                "deviceProfiles": {
                    "intel-npu": None,  # Helm removes a key set to null: the profile is dropped
                    "amd-gpu": {
                        "device": "GPU",
                        "backends": ["onnxruntime"],
                        "resources": {"amd.com/gpu": 1},
                        "nodeSelector": {"amd.com/gpu.present": "true"},
                        "image": "registry.example/runtime-rocm:1",
                        "automatic": False,
                    },
                },
                "fallbackAfterSeconds": 30,
            }
        )
    )
    objs = render("-f", str(values))
    assert one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/wasminfer/operator:9.9.9"
    cfg = parse_operator_config(yaml.safe_load(one(objs, "ConfigMap")["data"]["config.yaml"]), "chart ConfigMap")
    assert cfg.image == "registry.example/wasminfer-runtime@sha256:" + "a" * 64
    assert cfg.profiles["nvidia-gpu"].image == "ghcr.io/wasminfer/runtime-nvidia:cuda-test"
    assert cfg.profiles["amd-gpu"].image == "registry.example/runtime-rocm:1"
    assert cfg.profiles["amd-gpu"].automatic is False
    assert cfg.fallback_after_seconds == 30
    # intel-npu is gone from the chart's file; the operator keeps its built-in one under that name.
    assert "intel-npu" not in yaml.safe_load(one(objs, "ConfigMap")["data"]["config.yaml"])["profiles"]


def test_config_change_rolls_the_operator_pods(render: Render) -> None:
    def checksum(*args: str) -> str:
        return str(one(render(*args), "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum() == checksum()
    assert checksum() != checksum("--set", "fallbackAfterSeconds=60")


def test_watched_namespaces_get_roles_only_there(render: Render) -> None:
    objs = render("--set", "watchNamespaces={team-a,team-b}")
    args = operator_args(objs)
    assert "--namespace=team-a" in args and "--namespace=team-b" in args
    assert not [b for b in by_kind(objs, "ClusterRoleBinding") if b["roleRef"]["name"].endswith("-workloads")]
    bindings = [b for b in by_kind(objs, "RoleBinding") if b["roleRef"]["name"].endswith("-workloads")]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    discovery = next(r for r in by_kind(objs, "ClusterRole") if r["metadata"]["name"].endswith("-discovery"))
    assert {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]} in discovery["rules"]


def test_single_replica_without_leader_election(render: Render) -> None:
    objs = render("--set", "replicaCount=1", "--set", "leaderElection.enabled=false")
    assert "--no-leader-election" in operator_args(objs)
    assert not by_kind(objs, "Role") and not by_kind(objs, "PodDisruptionBudget")


def test_service_monitors_scrape_runtime_and_model_server_services(render: Render) -> None:
    objs = render("--set", "serviceMonitor.enabled=true", "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor")
    runtime, server = by_kind(objs, "ServiceMonitor")
    for sm, app in ((runtime, "wasminfer-runtime"), (server, "wasminfer-model-server")):
        assert sm["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": app, "app.kubernetes.io/managed-by": "wasminfer-operator"}
        assert sm["spec"]["endpoints"][0]["port"] == "http" and sm["spec"]["endpoints"][0]["path"] == "/metrics"
        assert sm["spec"]["namespaceSelector"] == {"any": True}
    assert (runtime["spec"]["targetLabels"], server["spec"]["targetLabels"]) == (["wasminfer.dev/worker"], ["wasminfer.dev/model-server"])


def test_service_labels_match_the_service_monitors() -> None:
    """The selectors above must match what the operator puts on the Services it renders."""
    from wasminfer_operator import api
    from wasminfer_operator.profiles import load_operator_config
    from wasminfer_operator.render import ObjectRef, render_service
    from wasminfer_operator.render_serving import render_model_server

    labels = render_service(ObjectRef("w", "ns", "uid"))["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "wasminfer-runtime"
    assert labels["app.kubernetes.io/managed-by"] == "wasminfer-operator"
    assert "wasminfer.dev/worker" in labels
    ports = render_service(ObjectRef("w", "ns", "uid"))["spec"]["ports"]
    assert [p["name"] for p in ports] == ["http"]
    spec = api.InferenceModelSpec.model_validate(
        {"format": "onnx", "source": {"https": {"files": [{"url": "https://e.com/m.onnx", "sha256": "ab" * 32}]}}, "serving": {}}
    )
    service = render_model_server(ObjectRef("m", "ns", "uid", kind="InferenceModel"), spec, "cpu", load_operator_config(env={})).service
    labels = service["metadata"]["labels"]
    assert (labels["app.kubernetes.io/name"], labels["wasminfer.dev/model-server"]) == ("wasminfer-model-server", "m")
    assert labels["app.kubernetes.io/managed-by"] == "wasminfer-operator"
    assert [p["name"] for p in service["spec"]["ports"]] == ["http", "grpc"]


def test_default_runtime_images_match_the_operator_defaults(render: Render) -> None:
    from wasminfer_operator.profiles import DEFAULT_IMAGE, NVIDIA_IMAGE

    cfg = parse_operator_config(yaml.safe_load(one(render(), "ConfigMap")["data"]["config.yaml"]), "chart")
    assert cfg.image == DEFAULT_IMAGE
    assert cfg.profiles["nvidia-gpu"].image == NVIDIA_IMAGE


# --- values the chart refuses --------------------------------------------------------------------

REFUSED = [
    # (--set arguments, words the error must contain)
    (["replicaCount=0"], ["/replicaCount", "minimum"]),
    (["replicas=2"], ["additional properties", "replicas"]),
    (["image.digest=latest"], ["/image/digest", "sha256"]),
    (["image.pullPolicy=Sometimes"], ["/image/pullPolicy"]),
    (["watchNamespaces={Team_A}"], ["/watchNamespaces/0"]),
    (["watchNamespaces={team a}"], ["/watchNamespaces/0"]),
    (["logging.format=xml"], ["/logging/format"]),
    (["runtime.runAsUser=0"], ["/runtime/runAsUser", "minimum"]),
    (["deviceProfiles.tpu.device=TPU", "deviceProfiles.tpu.backends={openvino}"], ["/deviceProfiles/tpu/device"]),
    (["deviceProfiles.cpu.backends={tensorflow}"], ["/deviceProfiles/cpu/backends/0"]),
    (["deviceProfiles.Big_GPU.device=GPU", "deviceProfiles.Big_GPU.backends={openvino}"], ["/deviceProfiles", "additional properties 'Big_GPU' not allowed"]),
    (["deviceProfiles.nvidia-gpu.resources.nvidia\\.com/gpu=lots"], ["/deviceProfiles/nvidia-gpu/resources/nvidia.com~1gpu"]),
    (["deviceProfiles.nvidia-gpu.runtimeImage=rocm"], ["/deviceProfiles/nvidia-gpu/runtimeImage"]),
    (["deviceProfiles.gpu2.device=GPU"], ["/deviceProfiles/gpu2", "backends"]),
    (["serviceMonitor.interval=soon"], ["/serviceMonitor/interval"]),
    # Rules across values, checked by the templates with a sentence of their own.
    (["defaultProfile=tpu"], ['defaultProfile "tpu" is not one of deviceProfiles']),
    (["leaderElection.enabled=false"], ["replicaCount > 1 needs leaderElection.enabled=true"]),
    (["leaderElection.leaseDuration=10"], ["leaderElection.leaseDuration (10) must be more than leaderElection.renewDeadline (10)"]),
    (["leaderElection.retryPeriod=9"], ["renewDeadline (10) must be more than 1.2 x leaderElection.retryPeriod (9)"]),
    (["serviceMonitor.enabled=true"], ["needs the Prometheus Operator CRDs"]),
    (["serviceAccount.create=false"], ["serviceAccount.name is required when serviceAccount.create is false"]),
]


@pytest.mark.parametrize(("sets", "expected"), REFUSED, ids=[" ".join(s) for s, _ in REFUSED])
def test_bad_values_are_refused_with_a_clear_message(helm: HelmRun, sets: list[str], expected: list[str]) -> None:
    args = [a for s in sets for a in ("--set", s)]
    result = helm("template", "wasminfer", str(CHART), *args, check=False)
    assert result.returncode != 0, f"helm accepted {sets}:\n{result.stdout[:500]}"
    for words in expected:
        assert words in result.stderr, f"{sets}: error does not say {words!r}:\n{result.stderr}"


def test_generated_chart_files_are_in_sync() -> None:
    """charts/wasminfer/crds/ equals crds/, and the Argo CD snippets carry the current Lua."""
    result = subprocess.run([sys.executable, str(REPO / "charts" / "sync.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_chart_crds_are_byte_identical_to_crds() -> None:
    source = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert source, "crds/ is empty"
    assert chart == source
