"""Write docs/reference.md, the reference of the custom resources, from the CRDs in crds/.

The CRDs are generated from the operator's models, so the reference says exactly what the API
server accepts: every field with its type, default, limits and description, the CEL rules with
their messages, and what `kubectl get` shows.

    python docs/generate.py           rewrite docs/reference.md
    python docs/generate.py --check   exit 1 if docs/reference.md is not what the CRDs give
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CRDS = REPO / "crds"
OUTPUT = REPO / "docs" / "reference.md"

Schema = dict[str, Any]


def _cell(text: Any) -> str:
    """Markdown table cells cannot hold pipes or line breaks."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _type_of(schema: Schema) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "int or string"
    kind = schema.get("type")
    if kind == "array":
        return f"[]{_type_of(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema and "properties" not in schema:
        extra = schema["additionalProperties"]
        value = _type_of(extra) if isinstance(extra, dict) else "any"
        return f"map[string]{value}"
    if kind is None:
        return "any" if schema.get("x-kubernetes-preserve-unknown-fields") else "object"
    fmt = schema.get("format")
    return f"{kind} ({fmt})" if fmt else str(kind)


def _constraints(schema: Schema, required: bool) -> list[str]:
    out = ["**required**"] if required else []
    if "default" in schema:
        out.append(f"default `{json.dumps(schema['default'])}`")
    if "enum" in schema:
        out.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    for key, label in (
        ("minimum", "≥"),
        ("maximum", "≤"),
        ("exclusiveMinimum", ">"),
        ("exclusiveMaximum", "<"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
        ("minProperties", "min entries"),
        ("maxProperties", "max entries"),
    ):
        if key in schema and not isinstance(schema[key], bool):
            out.append(f"{label} {schema[key]}")
    if "pattern" in schema:
        out.append(f"pattern `{schema['pattern']}`")
    if schema.get("nullable"):
        out.append("nullable")
    return out


def _walk(schema: Schema, path: str, required: bool) -> Iterator[tuple[str, Schema, bool]]:
    yield path, schema, required
    props: dict[str, Schema] = schema.get("properties", {})
    needed = set(schema.get("required", []))
    for name, sub in props.items():
        yield from _walk(sub, f"{path}.{name}" if path else name, name in needed)
    items = schema.get("items")
    if isinstance(items, dict) and ("properties" in items or "items" in items):
        for sub_path, sub, req in _walk(items, f"{path}[]", False):
            if sub_path != f"{path}[]":
                yield sub_path, sub, req
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict) and "properties" in extra:
        for sub_path, sub, req in _walk(extra, f"{path}.<key>", False):
            if sub_path != f"{path}.<key>":
                yield sub_path, sub, req


def _section(title: str, schema: Schema) -> list[str]:
    lines = [f"### `{title}`", ""]
    if schema.get("description"):
        lines += [" ".join(schema["description"].split()), ""]
    rows = [(p, s, r) for p, s, r in _walk(schema, "", False) if p]
    if rows:
        lines += ["| Field | Type | Constraints | Description |", "|---|---|---|---|"]
        for path, sub, req in rows:
            lines.append(
                f"| `{title}.{path}` | {_cell(_type_of(sub))} | {_cell(', '.join(_constraints(sub, req)))} "
                f"| {_cell(sub.get('description', ''))} |"
            )
        lines.append("")
    rules = [(p, r) for p, s, _ in _walk(schema, "", False) for r in s.get("x-kubernetes-validations", [])]
    if rules:
        lines += ["Validation rules (checked by the API server; the message is what `kubectl apply` prints):", ""]
        for path, rule in rules:
            where = f"`{title}.{path}`" if path else f"`{title}`"
            message = rule.get("message") or rule.get("messageExpression") or "(no message)"
            lines.append(f"- {where}: `{rule['rule']}` — {message}")
        lines.append("")
    return lines


def render_crd(crd: Schema) -> list[str]:
    spec = crd["spec"]
    names = spec["names"]
    lines = [f"## {names['kind']}", ""]
    facts = [
        f"- API: `{spec['group']}/{v['name']}`" for v in spec["versions"] if v.get("served", True)
    ] + [
        f"- Scope: {spec['scope']}",
        f"- Resource: `{names['plural']}.{spec['group']}`",
    ]
    if names.get("shortNames"):
        facts.append("- Short names: " + ", ".join(f"`{n}`" for n in names["shortNames"]))
    if names.get("categories"):
        facts.append("- Categories: " + ", ".join(f"`{n}`" for n in names["categories"]))
    lines += facts + [""]
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources", {})
        if subresources:
            parts = []
            if "status" in subresources:
                parts.append("`status`")
            if "scale" in subresources:
                scale = subresources["scale"]
                parts.append(
                    f"`scale` (replicas `{scale.get('specReplicasPath')}`, ready `{scale.get('statusReplicasPath')}`"
                    + (f", selector `{scale['labelSelectorPath']}`" if scale.get("labelSelectorPath") else "")
                    + ")"
                )
            lines += ["Subresources: " + ", ".join(parts), ""]
        columns = version.get("additionalPrinterColumns", [])
        if columns:
            lines += ["`kubectl get` columns:", "", "| Column | From | Description |", "|---|---|---|"]
            for col in columns:
                lines.append(f"| {_cell(col['name'])} | `{col['jsonPath']}` | {_cell(col.get('description', ''))} |")
            lines.append("")
        root = version["schema"]["openAPIV3Schema"]
        props = root.get("properties", {})
        for part in ("spec", "status"):
            if part in props:
                lines += _section(part, props[part])
        top_rules = root.get("x-kubernetes-validations", [])
        if top_rules:
            lines += ["Object-level validation rules:", ""]
            for rule in top_rules:
                lines.append(f"- `{rule['rule']}` — {rule.get('message', '(no message)')}")
            lines.append("")
    return lines


def load_crds(folder: Path) -> list[Schema]:
    files = sorted(folder.glob("*.yaml"))
    crds = []
    for f in files:
        for doc in yaml.safe_load_all(f.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                crds.append(doc)
    if not crds:
        raise SystemExit(f"no CustomResourceDefinition found in {folder}")
    return sorted(crds, key=lambda c: (c["spec"]["group"] != "wasminfer.dev", c["spec"]["names"]["kind"]))


def render(crds: list[Schema]) -> str:
    lines = [
        "# Custom resource reference",
        "",
        "<!-- Generated by `python docs/generate.py` from crds/*.yaml; edit the operator's models, not this file. -->",
        "",
        "Every field the API server accepts, with its type, default, limits and description, and the",
        "validation rules it enforces. `kubectl explain wasmworker.spec` shows the same descriptions.",
        "",
    ]
    lines += [f"- [{c['spec']['names']['kind']}](#{c['spec']['names']['kind'].lower()})" for c in crds] + [""]
    for crd in crds:
        lines += render_crd(crd)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if docs/reference.md is out of date")
    args = parser.parse_args(argv)
    text = render([c for c in load_crds(CRDS) if c["spec"]["group"] == "wasminfer.dev"])
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(REPO)} is out of date with crds/: run `python docs/generate.py`", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
