"""What the API server's validation says about a value, from the generated CRD schema.

The subset of OpenAPI validation the CRDs use, with Go's regexp reading of `pattern`, and the
x-kubernetes-validations (CEL) rules of the shapes api.py generates from a regex: `self.matches(r)`,
`!self.matches(r)`, `self.startsWith(s)` and `self.all(k, k.matches(r))`. Other CEL rules are not
evaluated: `cel_holds` says None for them, and `unchecked_rules` lists them under a node.
"""

from __future__ import annotations

import re
from typing import Any

_LITERAL = r"'((?:[^'\\]|\\.)*)'"
_RULES = {
    re.compile(rf"^self\.matches\({_LITERAL}\)$"): lambda rx, v: isinstance(v, str) and search(rx, v),
    re.compile(rf"^!self\.matches\({_LITERAL}\)$"): lambda rx, v: isinstance(v, str) and not search(rx, v),
    re.compile(rf"^self\.startsWith\({_LITERAL}\)$"): lambda s, v: isinstance(v, str) and v.startswith(s),
    re.compile(rf"^self\.all\(k, k\.matches\({_LITERAL}\)\)$"): lambda rx, v: isinstance(v, dict) and all(search(rx, k) for k in v),
}


def search(pattern: str, value: str) -> bool:
    """Go's regexp MatchString: unanchored, and `$` (without the m flag) only at the very end."""
    return re.search(re.sub(r"(?<!\\)\$", r"\\Z", pattern), value) is not None


def _unescape(literal: str) -> str:
    return re.sub(r"\\(.)", r"\1", literal)


def cel_holds(rule: str, value: Any) -> bool | None:
    """Whether a rule of the shapes above holds for `value`; None for any other rule."""
    for shape, check in _RULES.items():
        m = shape.match(rule)
        if m:
            return bool(check(_unescape(m.group(1)), value))
    return None


def unchecked_rules(schema: dict[str, Any]) -> list[str]:
    return [r["rule"] for r in schema.get("x-kubernetes-validations", []) if cel_holds(r["rule"], None) is None]


def admission_errors(schema: dict[str, Any], value: Any, path: str = "spec") -> list[str]:
    """What OpenAPI validation of a CRD says about `value`, one `path: reason` per error."""
    errs: list[str] = []
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{path}: Invalid value: must be an object"]
        errs += [f"{path}.{r}: Required value" for r in schema.get("required", []) if r not in value]
        for key, sub in value.items():
            if isinstance(schema.get("additionalProperties"), dict):
                errs += admission_errors(schema["additionalProperties"], sub, f"{path}[{key}]")
            elif key not in schema.get("properties", {}):
                errs.append(f"{path}.{key}: field not declared in schema")
            else:
                errs += admission_errors(schema["properties"][key], sub, f"{path}.{key}")
    elif kind == "array":
        if not isinstance(value, list):
            return [f"{path}: Invalid value: must be an array"]
        if len(value) > schema.get("maxItems", len(value)):
            errs.append(f"{path}: Too many: must have at most {schema['maxItems']} items")
        if schema.get("x-kubernetes-list-type") == "set" and len(set(value)) != len(value):
            errs.append(f"{path}: Duplicate value")
        for i, item in enumerate(value):
            errs += admission_errors(schema["items"], item, f"{path}[{i}]")
    elif kind == "string":
        if not isinstance(value, str):
            return [f"{path}: Invalid value: must be a string"]
        if "enum" in schema and value not in schema["enum"]:
            errs.append(f"{path}: Unsupported value: {value!r}")
        if len(value) < schema.get("minLength", 0):
            errs.append(f"{path}: Invalid value: should be at least {schema['minLength']} chars long")
        if len(value) > schema.get("maxLength", len(value)):
            errs.append(f"{path}: Too long: may not be more than {schema['maxLength']} bytes")
        if "pattern" in schema and not search(schema["pattern"], value):
            errs.append(f"{path}: Invalid value: should match '{schema['pattern']}'")
    elif kind in ("integer", "number"):
        numeric = isinstance(value, int) or (kind == "number" and isinstance(value, float))
        if isinstance(value, bool) or not numeric:
            return [f"{path}: Invalid value: must be of type {kind}"]
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None and (value <= low if schema.get("exclusiveMinimum") else value < low):
            errs.append(f"{path}: Invalid value: should be greater than {'' if schema.get('exclusiveMinimum') else 'or equal to '}{low}")
        if high is not None and (value >= high if schema.get("exclusiveMaximum") else value > high):
            errs.append(f"{path}: Invalid value: should be less than {'' if schema.get('exclusiveMaximum') else 'or equal to '}{high}")
    elif kind == "boolean" and not isinstance(value, bool):
        errs.append(f"{path}: Invalid value: must be a boolean")
    if not errs:  # the API server runs CEL rules only on values the schema accepts
        for r in schema.get("x-kubernetes-validations", []):
            if cel_holds(r["rule"], value) is False:
                errs.append(f"{path}: Invalid value: {r['message']}")
    return errs
