"""The committed CRDs are exactly what the API types generate, and the API server will take them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from wasminfer_operator import crdgen

REPO = Path(__file__).resolve().parents[2]


def crds() -> dict[str, dict[str, Any]]:
    return {name: yaml.safe_load(text) for name, text in crdgen.render_all().items()}


def test_committed_crds_match_the_api_types() -> None:
    for name, text in crdgen.render_all().items():
        path = REPO / "crds" / name
        assert path.exists(), f"{path} is missing: run `python -m wasminfer_operator.crdgen`"
        assert path.read_text() == text, f"{path} is out of date: run `python -m wasminfer_operator.crdgen`"


def test_check_mode_reports_stale_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert crdgen.main(["--out", str(tmp_path), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err
    assert crdgen.main(["--out", str(tmp_path)]) == 0
    assert crdgen.main(["--out", str(tmp_path), "--check"]) == 0


def walk(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, sub in node.get("properties", {}).items():
            yield from walk(sub, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            yield from walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from walk(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("name", sorted(crdgen.render_all()))
def test_schemas_are_structural(name: str) -> None:
    schema = crds()[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in walk(schema):
        assert "$ref" not in node and "title" not in node and "$defs" not in node, path
        assert not ("properties" in node and "additionalProperties" in node), path
        assert node.get("additionalProperties") is not False, path
        typed = "type" in node or node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
        assert typed, f"{path} has no type"
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), f"{path}: anyOf only for int-or-string"
        for key in ("exclusiveMinimum", "exclusiveMaximum"):
            assert key not in node or isinstance(node[key], bool), f"{path}: {key} must be a boolean in OpenAPI v3.0"


@pytest.mark.parametrize("name", sorted(crdgen.render_all()))
def test_every_spec_field_is_described_for_kubectl_explain(name: str) -> None:
    spec = crds()[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    undocumented = [path for path, node in walk(spec) if path and not path.endswith("[]") and "{" not in path and not node.get("description")]
    assert undocumented == []


def test_names_categories_subresources_and_columns() -> None:
    im = crds()["inferencemodels.wasminfer.dev.yaml"]["spec"]
    ww = crds()["wasmworkers.wasminfer.dev.yaml"]["spec"]
    assert im["names"]["shortNames"] == ["im"] and ww["names"]["shortNames"] == ["ww"]
    assert im["names"]["categories"] == ww["names"]["categories"] == ["wasminfer"]
    assert im["scope"] == ww["scope"] == "Namespaced"
    assert ww["versions"][0]["subresources"] == {
        "status": {},
        "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"},
    }
    # Scaling a model scales its model servers.
    assert im["versions"][0]["subresources"] == {
        "status": {},
        "scale": {"specReplicasPath": ".spec.serving.replicas", "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"},
    }
    assert [c["name"] for c in im["versions"][0]["additionalPrinterColumns"]] == [
        "Format", "Backend", "Device", "Profile", "Ready", "Reason", "Workers", "Serving", "Endpoint", "Age"
    ]
    columns = [c["name"] for c in ww["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Ready", "Models", "Profile", "URL", "Reason", "Age"]
    reason = next(c for c in ww["versions"][0]["additionalPrinterColumns"] if c["name"] == "Reason")
    assert reason["jsonPath"] == '.status.conditions[?(@.type=="Ready")].reason'


def test_cel_rules_cover_what_the_schema_cannot_say() -> None:
    text = "\n".join(crdgen.render_all().values())
    for message in (
        "set exactly one of https, configMap, pvc or oci",
        "route must start with '/'",
        "sha256 must be 64 lowercase hex digits",
        "url must be an https:// URL",
        "value and valueFrom are mutually exclusive",
        "format onnx takes exactly one file",
        "module takes exactly one file",
        "metadata.name must be a DNS-1035 label",
        "a model with spec.serving has a name of at most 50 characters",
    ):
        assert message in text, message


def test_server_side_defaults_match_the_python_defaults() -> None:
    ww = crds()["wasmworkers.wasminfer.dev.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    props = ww["properties"]
    assert props["replicas"]["default"] == 1
    assert props["route"]["default"] == "/"
    assert props["limits"]["default"] == {}
    assert props["limits"]["properties"]["memoryMiB"]["default"] == 256
