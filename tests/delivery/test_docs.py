"""The user docs: the CRD reference is what docs/generate.py makes of crds/, and the docs speak of the
conditions, metrics and values that exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from wasminfer_runtime.metrics import Metrics

from .conftest import CHART, REPO

DOCS = REPO / "docs"


def test_crd_reference_is_generated_from_the_crds() -> None:
    result = subprocess.run([sys.executable, str(DOCS / "generate.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_crd_reference_lists_every_spec_field() -> None:
    text = (DOCS / "reference.md").read_text()
    for crd_file in sorted((REPO / "crds").glob("*.yaml")):
        crd = yaml.safe_load(crd_file.read_text())
        spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        for name in spec["properties"]:
            assert f"`spec.{name}`" in text, f"{crd['spec']['names']['kind']}: spec.{name} missing from docs/reference.md"


def test_troubleshooting_explains_every_reason_the_operator_reports() -> None:
    """Each reason string the operator's status code can write has an entry."""
    text = (DOCS / "troubleshooting.md").read_text()
    operator = REPO / "operator" / "wasminfer_operator"
    source = "".join((operator / f).read_text() for f in ("status.py", "reconcile.py", "placement.py", "observe.py", "artifacts.py"))
    # Every CamelCase string literal is a reason, a condition type or a kind; kinds and words of the
    # API that are not reasons are left out.
    not_reasons = {"True", "False", "Unknown", "Deployment", "ConfigMap", "Service", "StatefulSet", "PodScheduled", "Warning", "Normal", "Lost"}
    reasons = set(re.findall(r'"([A-Z][a-z]+(?:[A-Z][a-zA-Z]*)*)"', source)) - not_reasons
    assert len(reasons) > 20, f"the scan found too few reasons: {sorted(reasons)}"
    missing = sorted(r for r in reasons if f"`{r}`" not in text)
    assert not missing, f"docs/troubleshooting.md does not explain: {', '.join(missing)}"


def test_metrics_doc_lists_every_runtime_metric() -> None:
    text = (DOCS / "metrics.md").read_text()
    names = {m.name for m in Metrics().registry.collect()}
    assert names
    missing = sorted(n for n in names if f"`{n}" not in text)
    assert not missing, f"docs/metrics.md does not list: {', '.join(missing)}"


def test_install_doc_covers_every_top_level_value() -> None:
    text = (DOCS / "install.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = sorted(k for k in values if f"`{k}" not in text)
    assert not missing, f"docs/install.md does not describe values: {', '.join(missing)}"


def test_docs_links_resolve() -> None:
    checked = 0
    for doc in [*DOCS.glob("*.md"), CHART / "argocd" / "README.md"]:
        # README-sections.md is text for the top-level README: its links start at the repository root.
        base = REPO if doc.name == "README-sections.md" else doc.parent
        for target in re.findall(r"\]\(([\w./:-]+)(?:#[\w-]*)?\)", doc.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            assert (base / target).exists(), f"{doc.relative_to(REPO)} links to missing {target}"
            checked += 1
    assert checked > 10, f"only {checked} links found: the link pattern is broken"


def test_the_worker_example_in_the_guide_builds_and_answers(tmp_path: Path) -> None:
    """The C worker of docs/workers.md builds against the SDK (warnings are errors) and, run by
    `wasminfer run` with a named ONNX model that doubles its input, answers with the doubled values."""
    import base64
    import json
    import struct

    import onnx
    from onnx import TensorProto, helper

    text = (DOCS / "workers.md").read_text()
    (code,) = re.findall(r"```c\n(.*?)```", text, re.S)
    src = tmp_path / "score.c"
    src.write_text(code)
    sdk = REPO / "sdk" / "c"
    wasm = tmp_path / "score.wasm"
    built = subprocess.run(
        [sys.executable, "-m", "ziglang", "cc", "--target=wasm32-wasi", "-Os", "-Wall", "-Werror", f"-I{sdk}",
         str(src), *map(str, sorted(sdk.glob("*.c"))), "-o", str(wasm)],
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, f"docs/workers.md's C example does not compile:\n{built.stderr}"

    (tmp_path / "scorer").mkdir()
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])], "double",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "n"])],
        [helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "scorer" / "model.onnx"))

    body = struct.pack("<3f", 1.0, 2.5, -4.0)
    request = {"url": "http://localhost/score", "method": "POST", "headers": {}, "kv": {}, "params": {},
               "body": base64.b64encode(body).decode(), "base64": True}
    ran = subprocess.run(
        [sys.executable, "-m", "wasminfer_runtime", "run", "--cache-dir", str(tmp_path / "cache"),
         "--nn-graph", f"onnx::{tmp_path / 'scorer'}", str(wasm)],
        input=json.dumps(request), capture_output=True, text=True, timeout=300,
    )
    assert ran.returncode == 0, ran.stderr
    response = json.loads(ran.stdout)
    assert response["status"] == 200, response
    assert json.loads(response["data"]) == {"scores": [2, 5, -8]}
