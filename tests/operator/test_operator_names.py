"""Every label, annotation, finalizer, device resource and API-group name the operator uses is spelled once, in
`wasminfer_operator/names.py`: no other module of the operator holds such a string."""

from __future__ import annotations

import ast
from pathlib import Path

import wasminfer_operator

PACKAGE = Path(wasminfer_operator.__file__).parent
PREFIXES = ("wasminfer.dev", "app.kubernetes.io/", "nvidia.com/", "gpu.intel.com/", "npu.intel.com/", "intel.feature.node.kubernetes.io/")


def spelled_names(path: Path) -> list[str]:
    """String constants (docstrings aside) that are or start with one of the prefixes."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }  # fmt: skip
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if node.value.startswith(PREFIXES):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    return found


def test_names_are_spelled_only_in_names_py() -> None:
    elsewhere = [hit for path in sorted(PACKAGE.rglob("*.py")) if path.name != "names.py" for hit in spelled_names(path)]
    assert elsewhere == [], "spell these in wasminfer_operator/names.py and import them:\n" + "\n".join(elsewhere)


def test_the_scan_sees_names_py_itself() -> None:
    assert any("wasminfer.dev" in hit for hit in spelled_names(PACKAGE / "names.py"))
