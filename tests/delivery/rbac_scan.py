"""What API access the operator's code needs, read from the code itself.

Sources, all static:
- the kopf registry the operator builds (`handlers.register`): every watched resource needs list+watch;
- calls to the official Kubernetes client in the operator's modules, its own Lease election
  included: each client method's HTTP verb and path come from the client's own source;
- how the operator runs kopf (`main.py`): standalone (no peering objects), cluster-wide or not;
- ownerReferences with blockOwnerDeletion on children (update of the owner's finalizers);
- kopf's own needs: CRD discovery, namespaces when namespaced, core/v1 events for handler logs.
"""

from __future__ import annotations

import ast
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import kopf
import yaml
from kubernetes import client

import wasminfer_operator
from wasminfer_operator import handlers, main, render
from wasminfer_operator.profiles import OperatorConfig

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, order=True)
class Access:
    group: str
    resource: str  # plural, with "/subresource"
    verb: str

    def __str__(self) -> str:
        return f"{self.verb} {self.resource}" + (f".{self.group}" if self.group else "")


def _crd_plurals() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in sorted((REPO / "crds").glob("*.yaml")):
        crd = yaml.safe_load(f.read_text())
        out.setdefault(crd["spec"]["group"], []).append(crd["spec"]["names"]["plural"])
    return out


# --- kopf watch streams -----------------------------------------------------------------------------


def _builtin_plurals() -> set[tuple[str, str]]:
    """(group, plural) of every resource the Kubernetes client knows, from its request paths."""
    found: set[tuple[str, str]] = set()
    for name in dir(client):
        api = getattr(client, name)
        if not (isinstance(api, type) and name.endswith("Api") and name != "ApiClient"):
            continue
        for path in re.findall(r"resource_path='([^']+)'", inspect.getsource(api)):
            m = _PATH.match(path)
            if m and "{" not in m["plural"]:
                found.add((m["group"] or "", m["plural"]))
    return found


def _resolve(group: str, name: str, crds: list[dict[str, Any]], builtins: set[tuple[str, str]]) -> str:
    """The plural a kopf selector's name (kind, plural, singular or short name) stands for."""
    for crd in crds:
        names = crd["spec"]["names"]
        if crd["spec"]["group"] == group and name in (names["kind"], names["plural"], names.get("singular"), *names.get("shortNames", [])):
            return str(names["plural"])
    if (group, name) in builtins:
        return name
    raise AssertionError(f"kopf watches {name!r} in group {group!r}: not a CRD in crds/ nor a resource the client knows by plural")


def watched_resources() -> set[tuple[str, str]]:
    """(group, plural) of every resource the operator's kopf handlers and indexes watch."""
    registry = kopf.OperatorRegistry()
    op = handlers.Operator(cfg=OperatorConfig(), kube=cast(Any, None))
    handlers.register(registry, op)
    crds = [yaml.safe_load(f.read_text()) for f in sorted((REPO / "crds").glob("*.yaml"))]
    builtins = _builtin_plurals()
    found: set[tuple[str, str]] = set()
    groups = (registry._indexing, registry._watching, registry._changing, registry._spawning, registry._webhooks)
    for group in groups:
        for handler in group.get_all_handlers():
            sel = handler.selector
            assert sel is not None and sel.group is not None, f"handler {handler.id} watches no explicit group"
            name = sel.plural or sel.any_name
            assert isinstance(name, str), f"handler {handler.id} watches no explicit resource: {sel}"
            found.add((sel.group, _resolve(sel.group, name, crds, builtins)))
    return found


# --- Kubernetes client calls ------------------------------------------------------------------------

_SERIALIZE = re.compile(r"method='(?P<method>[A-Z]+)',\s*resource_path='(?P<path>[^']+)'")
_PATH = re.compile(r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)(?:/namespaces/\{namespace\})?/(?P<plural>[^/]+)(?P<name>/\{name\})?(?:/(?P<sub>[a-z]+))?$")


def _client_call(api_class: type, method: str) -> tuple[str, str]:
    """(HTTP method, resource path) of a generated client method, from its serializer's source."""
    serialize = getattr(api_class, f"_{method}_serialize", None)
    if serialize is None:
        raise AssertionError(f"{api_class.__name__}.{method} is not a generated API method")
    m = _SERIALIZE.search(inspect.getsource(serialize))
    assert m is not None, f"cannot read the path of {api_class.__name__}.{method}"
    return m["method"], m["path"]


def _api_class(value: ast.expr) -> type | None:
    """The API class a `client.SomeApi(...)` (or `SomeApi(...)`) expression builds, if any."""
    if not isinstance(value, ast.Call):
        return None
    func = value.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    api = getattr(client, name, None)
    return api if isinstance(api, type) and name.endswith("Api") and name != "ApiClient" else None


def _api_attributes(tree: ast.AST) -> dict[str, type]:
    """`self.x = client.SomeApi(...)`, `x = SomeApi(...)` and `a, b = A(...), B(...)`: name -> API class."""
    out: dict[str, type] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            pairs: list[tuple[ast.expr, ast.expr]] = [(target, node.value)]
            if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                pairs = list(zip(target.elts, node.value.elts))
            for t, v in pairs:
                api = _api_class(v)
                if api is not None and isinstance(t, (ast.Attribute, ast.Name)):
                    out[t.attr if isinstance(t, ast.Attribute) else t.id] = api
    return out


def _api_name(node: ast.expr) -> str | None:
    """`self.apps` -> "apps"; `apps` -> "apps"."""
    return node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None


@dataclass(frozen=True)
class ClientCall:
    where: str
    api: type
    method: str
    http: str
    path: str
    server_side_apply: bool
    watches: bool = False
    plural: str | None = None  # a CustomObjectsApi call naming its plural as a literal


def _literal_plural(call: ast.Call | None) -> str | None:
    """The `plural` argument of a CustomObjectsApi call when the code spells it out."""
    if call is None:
        return None
    arg = next((k.value for k in call.keywords if k.arg == "plural"), call.args[3] if len(call.args) > 3 else None)
    return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None


def client_calls(module: ModuleType) -> list[ClientCall]:
    """Every `self.<api>.<method>` the module's code references, called or passed around."""
    source = inspect.getsource(module)
    tree = ast.parse(source)
    apis = _api_attributes(tree)
    # Constants naming the server-side apply content type (e.g. APPLY = "application/apply-patch+yaml").
    apply_names = {
        t.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant) and "apply-patch" in str(n.value.value)
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    watching = any(isinstance(n, ast.keyword) and n.arg == "watch" for n in ast.walk(tree))
    calls = []
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        # A function that sends the apply content type does server-side apply with its PATCH calls.
        applies = any(isinstance(n, ast.Name) and n.id in apply_names for n in ast.walk(func)) or "apply-patch" in ast.unparse(func)
        called = {id(n.func): n for n in ast.walk(func) if isinstance(n, ast.Call)}
        for node in ast.walk(func):
            if isinstance(node, ast.Attribute) and _api_name(node.value) in apis:
                api = apis[cast(str, _api_name(node.value))]
                http, path = _client_call(api, node.attr)
                # A module that asks for `watch=True` uses its list methods for watches as well.
                watches = node.attr.startswith("list_") and watching
                calls.append(
                    ClientCall(
                        f"{module.__name__}:{node.lineno}", api, node.attr, http, path, applies and http == "PATCH", watches,
                        _literal_plural(called.get(id(node))) if "{plural}" in path else None,
                    )
                )
    return sorted(set(calls), key=lambda c: c.where)


def _accesses_of(call: ClientCall, own_plurals: dict[str, list[str]]) -> set[Access]:
    m = _PATH.match(call.path)
    assert m is not None, f"{call.where}: unexpected path {call.path}"
    group, plural, named, sub = m["group"] or "", m["plural"], bool(m["name"]), m["sub"]
    pairs = [(group, plural)]
    if "{group}" in call.path or "{plural}" in call.path:
        # CustomObjectsApi: the operator only addresses its own kinds.
        pairs = [(g, p) for g, plurals in own_plurals.items() if g == wasminfer_operator_group() for p in plurals if call.plural in (None, p)]
    verb = {"GET": "get" if named else "list", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[call.http]
    verbs = {verb}
    if call.server_side_apply:
        verbs.add("create")
    if call.watches:
        verbs.add("watch")  # an apply that creates the object is authorized as create as well
    resource_of = (lambda p: f"{p}/{sub}") if sub else (lambda p: p)
    return {Access(g, resource_of(p), v) for g, p in pairs for v in verbs}


def wasminfer_operator_group() -> str:
    from wasminfer_operator.api import GROUP

    return GROUP


def operator_modules() -> list[ModuleType]:
    import importlib
    import pkgutil

    # Subpackages too (handmade/ holds the Lease calls).
    return [
        importlib.import_module(m.name)
        for m in pkgutil.walk_packages(wasminfer_operator.__path__, prefix="wasminfer_operator.")
    ]


# --- how kopf runs ----------------------------------------------------------------------------------


def kopf_run_keywords() -> dict[str, Any]:
    """The literal keyword arguments main.py passes to kopf.run or kopf.operator (non-literals as
    their source)."""
    tree = ast.parse(inspect.getsource(main))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("run", "operator"):
            if isinstance(node.func.value, ast.Name) and node.func.value.id == "kopf":
                out: dict[str, Any] = {}
                for kw in node.keywords:
                    assert kw.arg is not None
                    try:
                        out[kw.arg] = ast.literal_eval(kw.value)
                    except ValueError:
                        out[kw.arg] = ast.unparse(kw.value)
                return out
    raise AssertionError("main.py calls neither kopf.run nor kopf.operator")


# --- everything together ----------------------------------------------------------------------------


def required_access(clusterwide: bool) -> dict[Access, str]:
    """Every access the operator needs, with where the need comes from."""
    need: dict[Access, str] = {}
    plurals = _crd_plurals()

    for group, plural in sorted(watched_resources()):
        for verb in ("list", "watch"):
            need[Access(group, plural, verb)] = "kopf watch stream (handlers.register)"

    for module in operator_modules():
        for call in client_calls(module):
            for access in _accesses_of(call, plurals):
                need.setdefault(access, f"{call.where} {call.api.__name__}.{call.method}")

    # Children of every kind: a worker's, a model's model servers (spec.serving), a pool's replicas.
    for kind, plural in (("WasmWorker", "wasmworkers"), ("InferenceModel", "inferencemodels"), ("ModelPool", "modelpools")):
        ref = render.owner_reference(render.ObjectRef("w", "ns", "uid", kind=kind))
        if ref.get("blockOwnerDeletion"):
            need[Access(wasminfer_operator_group(), f"{plural}/finalizers", "update")] = f"{kind} ownerReferences with blockOwnerDeletion"

    run = kopf_run_keywords()
    if run.get("standalone") is not True:
        raise AssertionError("kopf runs with peering: add the kopf.dev peering resources to the chart and to this scan")
    for verb in ("list", "watch"):
        need[Access("apiextensions.k8s.io", "customresourcedefinitions", verb)] = "kopf resource discovery"
        if not clusterwide:
            need[Access("", "namespaces", verb)] = "kopf namespace observation (namespaced mode)"
    need.setdefault(Access("", "events", "create"), "kopf posts handler warnings as events")
    return need


def granted_access(objs: list[dict[str, Any]], service_account: str, namespace: str) -> dict[Access, list[str]]:
    """Every (group, resource, verb) the rendered RBAC grants the ServiceAccount, and by which role.
    Fails on wildcards."""
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objs if o["kind"] in ("Role", "ClusterRole")}
    granted: dict[Access, list[str]] = {}
    for b in objs:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(
            s["kind"] == "ServiceAccount" and s["name"] == service_account and s["namespace"] == namespace for s in b["subjects"]
        ):
            continue
        ref = b["roleRef"]
        ns = b["metadata"].get("namespace") if ref["kind"] == "Role" else None
        role = roles[(ref["kind"], ns, ref["name"])]
        where = f"{b['kind']} {b['metadata'].get('namespace', '')}/{b['metadata']['name']}"
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(field, []), f"{role['metadata']['name']}: wildcard in {field}: {rule}"
            assert "nonResourceURLs" not in rule, f"{role['metadata']['name']}: nonResourceURLs granted: {rule}"
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    for v in rule["verbs"]:
                        granted.setdefault(Access(g, r, v), []).append(where)
    return granted
