"""What the API server's validation says about a value, from the generated CRD schema.

The subset of OpenAPI validation the CRDs use, with Go's regexp reading of `pattern`, and the
x-kubernetes-validations (CEL) rules of the shapes api.py generates from a regex: `self.matches(r)`,
`!self.matches(r)`, `self.startsWith(s)` and `self.all(k, k.matches(r))`, and rules written in a small
subset of CEL without functions but has() (the format/backend/device table's rules): string, integer and
boolean literals, lists, maps and indexing, field selection, !, &&, ||, ==, !=, `in` and `? :`. Other CEL
rules are not evaluated: `cel_holds` says None for them, and `unchecked_rules` lists them under a node.
"""

from __future__ import annotations

import re
from typing import Any, cast

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
    """Whether a rule of the shapes above holds for `value`; None for any other rule, and for a rule of the
    subset whose evaluation fails (a field it reads is absent: the API server would have defaulted it)."""
    for shape, check in _RULES.items():
        m = shape.match(rule)
        if m:
            return bool(check(_unescape(m.group(1)), value))
    try:
        result = _evaluate(_parse(rule), value)
    except (_Unsupported, _EvalError):
        return None
    return result if isinstance(result, bool) else None


def cel_supported(rule: str) -> bool:
    """Whether `cel_holds` evaluates `rule` (one of the regex shapes, or the subset)."""
    if any(shape.match(rule) for shape in _RULES):
        return True
    try:
        _parse(rule)
    except _Unsupported:
        return False
    return True


def unchecked_rules(schema: dict[str, Any]) -> list[str]:
    return [r["rule"] for r in schema.get("x-kubernetes-validations", []) if not cel_supported(r["rule"])]


# --- the CEL subset -------------------------------------------------------------------------------
# A rule is parsed whole into a tree of tuples before anything is evaluated, so that a rule using
# anything outside the subset (a function, a macro, a method) is never half-evaluated.


class _Unsupported(Exception):
    """The rule uses CEL outside the subset."""


class _EvalError(Exception):
    """CEL would fail evaluating the rule here (no such key, no such overload)."""


_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<int>[0-9]+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>\|\||&&|==|!=|[!?:()\[\]{},.]))"
)

Node = tuple[Any, ...]


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while text[pos:].strip():
            m = _TOKEN.match(text, pos)
            if m is None or m.lastgroup is None:
                raise _Unsupported(text[pos:])
            self.tokens.append((m.lastgroup, m.group(m.lastgroup)))
            pos = m.end()
        self.at = 0

    def peek(self) -> str | None:
        return self.tokens[self.at][1] if self.at < len(self.tokens) else None

    def take(self, want: str | None = None) -> tuple[str, str]:
        if self.at >= len(self.tokens) or (want is not None and self.tokens[self.at][1] != want):
            raise _Unsupported(f"expected {want}")
        self.at += 1
        return self.tokens[self.at - 1]

    def whole(self) -> Node:
        node = self.conditional()
        if self.at != len(self.tokens):
            raise _Unsupported(self.tokens[self.at][1])
        return node

    def conditional(self) -> Node:
        cond = self.binary(0)
        if self.peek() != "?":
            return cond
        self.take("?")
        yes = self.conditional()
        self.take(":")
        return ("cond", cond, yes, self.conditional())

    # CEL's precedence, loosest first: ||, &&, then the relations (==, !=, in), which do not chain.
    _LEVELS: tuple[tuple[str, ...], ...] = (("||",), ("&&",), ("==", "!=", "in"))

    def binary(self, level: int) -> Node:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek() in self._LEVELS[level]:
            op = self.take()[1]
            left = (op, left, self.binary(level + 1))
            if level == 2:
                break
        return left

    def unary(self) -> Node:
        if self.peek() == "!":
            self.take("!")
            return ("!", self.unary())
        return self.member()

    def member(self) -> Node:
        node = self.primary()
        while self.peek() in (".", "["):
            if self.take()[1] == ".":
                kind, name = self.take()
                if kind != "name" or self.peek() == "(":  # a method call: outside the subset
                    raise _Unsupported(name)
                node = ("select", node, name)
            else:
                node = ("index", node, self.conditional())
                self.take("]")
        return node

    def primary(self) -> Node:
        kind, text = self.take()
        if kind == "str":
            return ("lit", _unescape(text[1:-1]))
        if kind == "int":
            return ("lit", int(text))
        if text in ("true", "false"):
            return ("lit", text == "true")
        if text == "self":
            return ("self",)
        if text == "has":
            self.take("(")
            arg = self.member()
            self.take(")")
            if arg[0] != "select":
                raise _Unsupported("has() of a non-field")
            return ("has", arg[1], arg[2])
        if text == "(":
            node = self.conditional()
            self.take(")")
            return node
        if text == "[":
            items = self.items("]")
            return ("list", items)
        if text == "{":
            entries: list[tuple[Node, Node]] = []
            while self.peek() != "}":
                key = self.conditional()
                self.take(":")
                entries.append((key, self.conditional()))
                if self.peek() != "}":
                    self.take(",")
            self.take("}")
            return ("map", entries)
        raise _Unsupported(text)

    def items(self, end: str) -> list[Node]:
        out: list[Node] = []
        while self.peek() != end:
            out.append(self.conditional())
            if self.peek() != end:
                self.take(",")
        self.take(end)
        return out


def _parse(rule: str) -> Node:
    return _Parser(rule).whole()


def _same_type(a: Any, b: Any) -> None:
    if type(a) is not type(b):
        raise _EvalError(f"no such overload: {type(a).__name__} and {type(b).__name__}")


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _EvalError("not a bool")
    return v


def _evaluate(node: Node, value: Any) -> Any:
    op = node[0]
    if op == "lit":
        return node[1]
    if op == "self":
        return value
    if op in ("select", "has"):
        obj = _evaluate(node[1], value)
        if not isinstance(obj, dict):
            raise _EvalError("select on a non-object")
        if op == "has":
            return node[2] in obj
        if node[2] not in obj:
            raise _EvalError(f"no such key: {node[2]}")
        return obj[node[2]]
    if op == "index":
        obj, key = _evaluate(node[1], value), _evaluate(node[2], value)
        try:
            return obj[key]
        except (KeyError, IndexError, TypeError):
            raise _EvalError(f"no such key: {key!r}") from None
    if op == "list":
        return [_evaluate(n, value) for n in node[1]]
    if op == "map":
        return {_evaluate(k, value): _evaluate(v, value) for k, v in cast(list[tuple[Node, Node]], node[1])}
    if op == "!":
        return not _bool(_evaluate(node[1], value))
    if op == "cond":
        return _evaluate(node[2] if _bool(_evaluate(node[1], value)) else node[3], value)
    if op in ("||", "&&"):
        # CEL's logic is commutative: a side that decides the result wins over an error on the other.
        decides = op == "||"
        sides: list[bool | _EvalError] = []
        for n in node[1:]:
            try:
                sides.append(_bool(_evaluate(n, value)))
            except _EvalError as err:
                sides.append(err)
        if decides in sides:
            return decides
        for side in sides:
            if isinstance(side, _EvalError):
                raise side
        return not decides
    left, right = _evaluate(node[1], value), _evaluate(node[2], value)
    if op == "in":
        if not isinstance(right, (list, dict)):
            raise _EvalError("in needs a list or map")
        for item in right:
            _same_type(left, item)
        return left in right
    _same_type(left, right)
    return (left == right) if op == "==" else (left != right)


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
