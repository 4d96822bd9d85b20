"""Applying every example manifest gives distinct objects: no two examples create the same kind, name
and namespace, so one example never silently replaces another's model or worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
FOLDERS = (REPO / "examples/kubernetes", REPO / "examples/gitops")
Identity = tuple[str, str, str]  # (kind, namespace, name)


def _documents(path: Path) -> Iterator[dict[str, Any]]:
    for doc in yaml.safe_load_all(path.read_text()):
        if isinstance(doc, dict) and "kind" in doc and "metadata" in doc:  # not e.g. the operator's configuration
            yield doc


def _synced_namespaces() -> dict[Path, str]:
    """Folders an Argo CD Application of the examples syncs, with the namespace it syncs them into."""
    out = {}
    for path in sorted(REPO.glob("examples/gitops/*.yaml")):
        for doc in _documents(path):
            source, destination = doc["spec"].get("source") or {}, doc["spec"].get("destination") or {}
            if doc["kind"] == "Application" and source.get("path", "").startswith("examples/"):
                out[REPO / source["path"]] = destination.get("namespace", "default")
    return out


def example_objects() -> dict[Identity, list[str]]:
    """Every object of every example manifest, each with the files that create it."""
    synced = _synced_namespaces()
    found: dict[Identity, list[str]] = {}
    for folder in FOLDERS:
        for path in sorted(folder.rglob("*.yaml")):
            default = next((ns for f, ns in synced.items() if f in path.parents), "default")
            for doc in _documents(path):
                meta = doc["metadata"]
                identity = (doc["kind"], meta.get("namespace") or default, meta["name"])
                found.setdefault(identity, []).append(str(path.relative_to(REPO)))
    return found


def test_examples_create_distinct_objects() -> None:
    found = example_objects()
    clashes = {f"{k} {ns}/{name}": files for (k, ns, name), files in found.items() if len(files) > 1}
    assert not clashes, f"example manifests overwrite each other's objects: {clashes}"


def test_the_scan_sees_every_example_and_the_gitops_namespace() -> None:
    found = example_objects()
    kinds = {k for k, _, _ in found}
    assert {"InferenceModel", "WasmWorker", "Application", "PersistentVolumeClaim"} <= kinds
    assert len([i for i in found if i[0] == "WasmWorker"]) >= 6
    assert ("WasmWorker", "inference", "classify") in found, "the gitops workers land in the Application's namespace"
