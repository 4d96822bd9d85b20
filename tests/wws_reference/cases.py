"""The wws reference: the served folder, the requests, and how answers are recorded and compared.

One source of truth for both sides: `record.py` sends these requests to a real wws 1.7.0 and
writes `answers.json`; `tests/server/test_wws_reference.py` sends them to wasminfer and compares.

Normalizations (the only fields that must differ between two runs of the same server):
- the `Date` response header: the clock; replaced by "<date>";
- the `ETag` response header of a static file: wws derives it from the file's inode;
  replaced by "<etag>" (present vs absent is still compared);
- "127.0.0.1:<port>" anywhere in a response body (the echoed url and Host header): the port is
  free-picked per run; replaced by "127.0.0.1:PORT".
Static files get a fixed mtime when the folder is built, so Last-Modified is compared as is.

What is not compared, because it carries no meaning and wws itself varies it from run to run (it
keeps headers and JSON objects in Rust HashMaps): the order between headers of different names
(headers are compared by lowercased name, each name's values in order) and the order of keys in
a JSON object body (such bodies are compared key by key; their size still is, in Content-Length).
The file stores headers sorted by name and JSON bodies with sorted keys, so a new recording
differs only where wws's answers do.
"""

from __future__ import annotations

import base64
import http.client
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
APP = HERE / "app"
ANSWERS = HERE / "answers.json"
# Where `WWS_WASI_NN=1 bench/wws/build.sh` puts the binary (wws 1.7.0 whose wasi-nn runs on a
# current OpenVINO: /nn needs it); WWS_BIN overrides.
WWS_BIN = Path(os.environ.get("WWS_BIN", Path.home() / ".cache" / "wasminfer" / "wws" / "1.7.0" / "bin" / "wws-nn"))
# Host environment both servers run with: vars.toml reads it through "$WWSREF_FROM_HOST".
SERVER_ENV = {"WWSREF_FROM_HOST": "value from the host"}
# Static files' mtime (2023-11-14T22:13:20Z), so Last-Modified is the same in every run.
STATIC_MTIME = 1_700_000_000
# Written at the top of answers.json: how its answers differ from the wire (see above).
NORMALIZED = [
    "Date header -> '<date>'",
    "ETag header -> '<etag>' (wws derives it from the file's inode)",
    "'127.0.0.1:<port>' in bodies -> '127.0.0.1:PORT' (echoed url and Host header)",
    "static files have mtime 1700000000, so Last-Modified is kept",
    "headers sorted by lowercased name (one name's values in order); JSON object bodies stored as"
    " 'json' with sorted keys, other bodies as 'text' (UTF-8) or 'base64'",
]
NON_UTF8 = b"\xff\xfe\x00 not utf-8 \xc3\x28"


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    notes: list[str] = field(default_factory=list)


TEXT = (("Content-Type", "text/plain; charset=utf-8"),)

# Sent in this order, one fresh connection each: /counter's answers depend on the ones before.
CASES: list[Case] = [
    Case("echo_get", "GET", "/echo"),
    Case("echo_query", "GET", "/echo?a=1&b=two%20words&a=3&empty="),
    Case("echo_trailing_slash", "GET", "/echo/"),
    Case("echo_post_text", "POST", "/echo", TEXT, "hello wws, h\u00e9llo \u2603".encode()),
    Case("echo_post_json", "POST", "/echo", (("Content-Type", "application/json"),), b'{"x": [1, 2, {"y": null}]}'),
    Case("echo_post_non_utf8", "POST", "/echo", (("Content-Type", "application/octet-stream"),), NON_UTF8),
    Case("echo_post_empty", "POST", "/echo", TEXT, b""),
    Case("echo_put", "PUT", "/echo?x=1", TEXT, b"put body"),
    Case("echo_delete", "DELETE", "/echo"),
    Case("echo_head", "HEAD", "/echo"),
    Case("echo_headers", "GET", "/echo", (
        ("X-Repeated", "first"), ("X-Repeated", "second"), ("X-Spaces", "  padded value  "),
        ("X-Mixed-CASE", "MiXeD"), ("Accept", "text/html, application/json;q=0.9"), ("User-Agent", "wws-ref/1"),
    )),
    Case("index", "GET", "/"),
    Case("index_query", "GET", "/?q=1"),
    Case("headers_no_content_type", "GET", "/headers"),
    Case("headers_with_content_type", "GET", "/headers?ct=1"),
    Case("binary_base64", "GET", "/binary"),
    Case("dynamic", "GET", "/items/42"),
    Case("dynamic_trailing_slash", "GET", "/items/42/"),
    Case("dynamic_percent_encoded", "GET", "/items/a%20b?x=y"),
    Case("dynamic_post", "POST", "/items/7", TEXT, b"item body"),
    Case("catch_all_one", "GET", "/files/one"),
    Case("catch_all_deep", "GET", "/files/a/b/c.txt"),
    Case("static_under_dynamic_route", "GET", "/items/readme.txt"),
    Case("static_text", "GET", "/hello.txt"),
    Case("static_css", "GET", "/style.css"),
    Case("static_dir_index", "GET", "/about"),
    Case("static_dir_index_slash", "GET", "/about/"),
    Case("static_dir_index_file", "GET", "/about/index.html"),
    Case("static_pretty_html", "GET", "/docs"),
    Case("static_post", "POST", "/hello.txt", TEXT, b"x"),
    Case("not_found", "GET", "/nope"),
    Case("not_found_public_prefix", "GET", "/public/hello.txt"),
    Case("not_found_post", "POST", "/nope/deeper", TEXT, b"x"),
    Case("trap", "GET", "/trap"),
    Case("bad_json", "GET", "/badjson"),
    Case("output_without_kv", "GET", "/output?nokv"),
    Case("output_bad_base64", "GET", "/output?badb64"),
    Case("output_status_1000", "GET", "/output?status1000"),
    Case("output_status_0", "GET", "/output?status0"),
    Case("output_data_not_a_string", "GET", "/output?numdata"),
    Case("echo_after_failures", "GET", "/echo?after=failures"),
    Case("kv_counter_1", "GET", "/counter"),
    Case("kv_counter_2", "GET", "/counter"),
    Case("kv_counter_3_post", "POST", "/counter", TEXT, b"ignored"),
    Case("vars", "GET", "/vars"),
    Case("wasi_nn_preloaded_nhwc", "GET", "/nn"),
]


# -- the folder ----------------------------------------------------------------------------------


def _build_c(src: Path) -> Path:
    spec = importlib.util.spec_from_file_location("wasminfer_sdk_build", ROOT / "sdk" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built: Path = module.build_c(src)
    return built


def write_double_model(folder: Path) -> None:
    """The IR model /nn preloads as "double": y = 2x, f32 [1,3,2,2] in and out."""
    import numpy as np
    import openvino as ov
    from openvino import opset13 as ops

    x = ops.parameter([1, 3, 2, 2], ov.Type.f32, name="input")
    y = ops.multiply(x, ops.constant(np.float32(2)))
    folder.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.Model([y], [x], "double"), folder / "model.xml", compress_to_fp16=False)


def build_site(dest: Path) -> Path:
    """A servable copy of app/ under `dest`: each X.c compiled to X.wasm beside it (wws wants the
    module next to its .toml), the sources removed, static files given a fixed mtime, and the
    model /nn preloads written."""
    # Guests are compiled in a copy under the repo's .cache/ (sdk/build.py builds below the repo
    # and rebuilds only what changed), then the whole folder is copied out.
    build = ROOT / ".cache" / "wws_reference" / "app"
    shutil.copytree(APP, build, dirs_exist_ok=True, copy_function=shutil.copy2)
    shared = [h.stat().st_mtime for h in build.rglob("*.h")]
    for src in sorted(build.rglob("*.c")):
        if "_guests" in src.parts:
            continue
        wasm = src.with_suffix(".wasm")
        if wasm.exists() and any(t > wasm.stat().st_mtime for t in shared):
            wasm.unlink()
        _build_c(src)
    if not (build / "_models" / "double" / "model.bin").is_file():
        write_double_model(build / "_models" / "double")
    site = dest / "app"
    shutil.copytree(build, site, ignore=shutil.ignore_patterns("*.c", "*.h", "_guests"))
    for static in (site / "public").rglob("*"):
        os.utime(static, (STATIC_MTIME, STATIC_MTIME))
    return site


# -- the client ----------------------------------------------------------------------------------


def send(port: int, case: Case, timeout: float = 30) -> Answer:
    """One request on a fresh connection, headers exactly as listed (repeats kept)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(case.method, case.path, skip_accept_encoding=True)
        for name, value in case.headers:
            conn.putheader(name, value)
        if case.body is not None:
            conn.putheader("Content-Length", str(len(case.body)))
        conn.endheaders(case.body)
        resp = conn.getresponse()
        return Answer(resp.status, list(resp.getheaders()), resp.read())
    finally:
        conn.close()


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def normalize(answer: Answer, port: int) -> dict[str, Any]:
    """The JSON form of an answer, with the normalizations listed in this module's docstring."""
    headers = []
    for name, value in answer.headers:
        if name.lower() == "date":
            value = "<date>"
        elif name.lower() == "etag":
            value = "<etag>"
        headers.append([name, value])
    headers.sort(key=lambda h: h[0].lower())  # stable: one name's values keep their order
    body = answer.body.replace(f"127.0.0.1:{port}".encode(), b"127.0.0.1:PORT")
    encoded: dict[str, Any]
    if (obj := _json_object(body)) is not None:
        encoded = {"json": _sorted(obj)}
    else:
        try:
            encoded = {"text": body.decode("utf-8")}
        except UnicodeDecodeError:
            encoded = {"base64": base64.b64encode(body).decode()}
    return {"status": answer.status, "headers": headers, "body": encoded}


# -- comparison ----------------------------------------------------------------------------------


def _body(answer: dict[str, Any]) -> Any:
    """A JSON object body as the object, any other as bytes."""
    body = answer["body"]
    if "json" in body:
        return body["json"]
    return body["text"].encode() if "text" in body else base64.b64decode(body["base64"])


def _header_map(answer: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in answer["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


def _diff_json(path: str, want: Any, got: Any, out: list[str]) -> None:
    if isinstance(want, dict) and isinstance(got, dict):
        for key in sorted(set(want) | set(got), key=str):
            sub = f"{path}[{key!r}]"
            if key not in got:
                out.append(f"{sub}: wws {want[key]!r}, ours absent")
            elif key not in want:
                out.append(f"{sub}: wws absent, ours {got[key]!r}")
            else:
                _diff_json(sub, want[key], got[key], out)
    elif want != got:
        out.append(f"{path}: wws {want!r}, ours {got!r}")


def differences(want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """Every field where `got` (wasminfer) differs from `want` (wws), one line each."""
    out: list[str] = []
    if want["status"] != got["status"]:
        out.append(f"status: wws {want['status']}, ours {got['status']}")
    want_h, got_h = _header_map(want), _header_map(got)
    for name in sorted(set(want_h) | set(got_h)):
        if want_h.get(name) != got_h.get(name):
            out.append(f"header {name!r}: wws {want_h.get(name)!r}, ours {got_h.get(name)!r}")
    want_b, got_b = _body(want), _body(got)
    if isinstance(want_b, dict) and isinstance(got_b, dict):
        _diff_json("body", want_b, got_b, out)
    elif want_b != got_b:
        out.append(f"body: wws {str(want_b)[:300]}, ours {str(got_b)[:300]}")
    return out
