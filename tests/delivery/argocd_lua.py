"""Run an Argo CD health check (Lua) on a Kubernetes object with a real Lua 5.1 interpreter.

Argo CD evaluates `resource.customizations.health.*` scripts with gopher-lua, a Lua 5.1: the object
is the global `obj` (JSON turned into tables, arrays 1-based, null absent) and the chunk returns
`{status=..., message=...}`. The same happens here with Debian's `lua5.1`, so a script that only
works on a newer Lua fails here too.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
ARGOCD_DIR = REPO / "charts" / "wasminfer" / "argocd"
HEALTH_SCRIPTS = {
    "InferenceModel": ARGOCD_DIR / "ready-health.lua",
    "ModelPool": ARGOCD_DIR / "ready-health.lua",
    "WasmWorker": ARGOCD_DIR / "wasmworker-health.lua",
}
# Argo CD's health states; a script must return one of these.
STATES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


@dataclass(frozen=True)
class Health:
    status: str
    message: str


def lua_binary() -> str:
    found = shutil.which("lua5.1")
    if found is None:
        raise AssertionError(
            "lua5.1 is not installed: the Argo CD health checks are tested with a real Lua 5.1 "
            "(apt-get install -y lua5.1, or bash .ci/system-packages.sh)"
        )
    return found


def _lua_string(s: str) -> str:
    out = ['"']
    for byte in s.encode("utf-8"):
        ch = chr(byte)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 32 <= byte < 127:
            out.append(ch)
        else:
            out.append(f"\\{byte:03d}")  # Lua 5.1 decimal escape; keeps UTF-8 bytes intact
    out.append('"')
    return "".join(out)


def to_lua(value: Any) -> str:
    """A Lua table constructor for a JSON value, as Argo CD hands it to the script."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not representable in JSON: {value}")
        return repr(value)
    if isinstance(value, str):
        return _lua_string(value)
    if isinstance(value, list):
        return "{" + ", ".join(to_lua(v) for v in value if v is not None) + "}"
    if isinstance(value, dict):
        items = (f"[{_lua_string(str(k))}] = {to_lua(v)}" for k, v in value.items() if v is not None)
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def evaluate(script: Path, obj: dict[str, Any]) -> Health:
    """Run `script` on `obj` and return what it reports; fails loudly on a Lua error."""
    program = "\n".join(
        [
            f"obj = {to_lua(obj)}",
            "local function health()",
            script.read_text(),
            "end",
            "local hs = health()",
            'if type(hs) ~= "table" then error("the health script did not return a table") end',
            'io.write(tostring(hs.status), "\\0", tostring(hs.message))',
        ]
    )
    proc = subprocess.run([lua_binary(), "-"], input=program.encode(), capture_output=True, timeout=30)
    if proc.returncode != 0:
        raise AssertionError(f"{script.name} failed under lua5.1: {proc.stderr.decode(errors='replace').strip()}")
    status, _, message = proc.stdout.decode().partition("\0")
    return Health(status=status, message=message)


def health_of(obj: dict[str, Any]) -> Health:
    kind = obj.get("kind")
    if kind not in HEALTH_SCRIPTS:
        raise ValueError(f"no health check for kind {kind!r}")
    return evaluate(HEALTH_SCRIPTS[str(kind)], obj)


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None


def expected_health(obj: dict[str, Any], state: str) -> Health:
    """What a check must say of `obj` in `state` (healthy, progressing, degraded): that state, with
    the message of the deciding condition (Degraded's when it is True, Ready's otherwise)."""
    status = {"healthy": "Healthy", "progressing": "Progressing", "degraded": "Degraded"}[state]
    degraded = condition(obj, "Degraded")
    deciding = degraded if degraded and degraded.get("status") == "True" else condition(obj, "Ready")
    if deciding is None:
        raise AssertionError(f"{obj.get('kind')} {obj['metadata'].get('name')}: no Ready condition")
    return Health(status, str(deciding.get("message") or deciding.get("reason") or ""))


def fixture_name(obj: dict[str, Any], state: str, detail: str) -> str:
    """File name of a captured object: `<kind>-<state>-<detail>.yaml`."""
    return f"{str(obj['kind']).lower()}-{state}-{detail}.yaml"


def as_fixture(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as a fixture: what Argo CD sees, without server bookkeeping that changes every run."""
    out = dict(obj)
    meta = dict(out["metadata"])
    meta.pop("managedFields", None)
    out["metadata"] = meta
    return out
