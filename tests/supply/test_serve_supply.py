"""`wasminfer serve --config` with modules and a model from the registry under a signature policy: what is
signed by the trusted key serves; an unsigned module, a module signed by a stranger and a model whose
signature was made for other bytes each fail alone with the reason, while the others answer as usual,
with one serving process and with two (where the shared model host pulls and verifies the model)."""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cluster.registry import RegistryFiles
from signing import KeyPair

from wasminfer_runtime import cli
from wasminfer_runtime.supply import attached, signatures
from wasminfer_runtime.supply.oci import OciClient
from wasminfer_runtime.supply.reference import Reference

ROOT = Path(__file__).resolve().parents[2]
WIDTH = 4
X = np.arange(WIDTH, dtype=np.float32).reshape(1, WIDTH)


def build_guest(src: Path) -> Path:
    done = subprocess.run([sys.executable, str(ROOT / "sdk" / "build.py"), str(src.parent)], cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"building {src} failed; install the dev extras (ziglang):\n{done.stdout}{done.stderr}")
    return src.with_suffix(".wasm")


def add_one_model(folder: Path) -> Path:
    """An ONNX model y = x + 1 on [1, WIDTH]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True)
    one = numpy_helper.from_array(np.ones((1, WIDTH), np.float32), "one")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])], "add_one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, WIDTH])], [one],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), folder / "model.onnx")
    return folder


def get(url: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST" if body else "GET", "/" + url.split("/", 3)[3], body=body)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def readyz(url: str) -> dict[str, Any]:
    status, _, body = get(url + "/readyz")
    result: dict[str, Any] = json.loads(body)
    return result


@pytest.fixture(scope="module")
def site(reg: RegistryFiles, keys: KeyPair, other_keys: KeyPair, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Artifacts in the registry, signed or not, and a runtime.yaml that names them."""
    from wasminfer_runtime.supply.oci import RegistryAccess

    here = tmp_path_factory.mktemp("site")
    client = OciClient(RegistryAccess(ca_file=reg.ca_file, auth_file=reg.docker_config))
    hello = build_guest(ROOT / "examples" / "hello.c")
    nn = build_guest(ROOT / "bench" / "guests" / "nn_named.c")
    key = signatures.load_private_key(keys.private)
    for name, module in (("hello", hello), ("nn", nn)):
        attached.attach_signature(client, client.push_module(module, Reference.parse(f"{reg.address}/site/{name}:v1")), key)
    client.push_module(hello, Reference.parse(f"{reg.address}/site/unsigned:v1"))
    model = client.push_folder(add_one_model(here / "add"), Reference.parse(f"{reg.address}/site/add:v1"))
    attached.attach_signature(client, model, key)
    # the "tampered" model: signed, then the tag moved to other bytes with the old signature copied over
    signed = client.push_folder(add_one_model(here / "add2"), Reference.parse(f"{reg.address}/site/tampered:v1"))
    attached.attach_signature(client, signed, key)
    (here / "add2" / "model.onnx").write_bytes((here / "add2" / "model.onnx").read_bytes() + b"\x00")
    moved = client.push_folder(here / "add2", Reference.parse(f"{reg.address}/site/tampered:v1"))
    old_sig = client.resolve(signed.with_tag(attached.signature_tag(signed.digest or "")))
    client.push_manifest(moved.with_tag(attached.signature_tag(moved.digest or "")), old_sig.content)
    (here / "local.wasm").write_bytes(hello.read_bytes())
    assert cli.main(["sign", str(here / "local.wasm"), "--key", str(other_keys.private)]) == 0
    (here / "runtime.yaml").write_text(f"""
server:
  cache_dir: {here / "cache"}
  registries: {{ca_file: {reg.ca_file}, auth_file: {reg.docker_config}}}
  signatures: {{keys: [{keys.public}]}}
models:
  - {{name: add, format: onnx, oci: {{reference: {reg.address}/site/add:v1}}}}
  - {{name: tampered, format: onnx, oci: {{reference: {reg.address}/site/tampered:v1}}}}
workers:
  - {{name: hello, route: /hello, oci: {{reference: {reg.address}/site/hello:v1}}}}
  - name: nn
    route: /nn
    oci: {{reference: {reg.address}/site/nn:v1}}
    vars: {{MODEL: add, INPUT_DIMS: "1,{WIDTH}"}}
    wasi_nn: {{enabled: true, models: [add]}}
  - {{name: unsigned, route: /unsigned, oci: {{reference: {reg.address}/site/unsigned:v1}}}}
  - {{name: stranger, route: /stranger, module: local.wasm}}
""")
    return here


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.parametrize("processes", [1, 2])
def test_signed_artifacts_serve_and_the_others_fail_alone(site: Path, processes: int) -> None:
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "wasminfer"), "serve", "--config", str(site / "runtime.yaml"),
                             "--port", str(port), "--processes", str(processes)], stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        state = wait_loaded(url)
        answers = {route: get(url + route, body) for route, body in
                   (("/hello", None), ("/nn", X.tobytes()), ("/unsigned", None), ("/stranger", None))}
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    failed = state.get("failed", {})
    assert set(failed) == {"worker unsigned", "worker stranger", "model tampered"}, f"{state}\n{err[-4000:]}"
    assert "unsigned: no signature is attached" in failed["worker unsigned"]
    assert "does not verify with the trusted key(s) release.pub" in failed["worker stranger"]
    assert "not this artifact" in failed["model tampered"]
    status, _, body = answers["/hello"]
    assert status == 200 and json.loads(body)["message"] == "Hello"
    status, _, body = answers["/nn"]
    assert status == 200 and json.loads(body)["first"] == (X + 1).ravel().tolist(), body
    for route, reason in (("/unsigned", "unsigned"), ("/stranger", "does not verify")):
        status, _, body = answers[route]
        assert status == 503 and reason in body.decode(), (route, status, body)
    assert proc.returncode == 0, err
    assert re.search(r"worker 'hello': \S+/site/hello:v1@sha256:\w+ signed by release.pub, verified", err), err


def wait_loaded(url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    state: dict[str, Any] = {"pending": ["everything"]}
    while state.get("pending") and time.monotonic() < deadline:
        try:
            state = readyz(url)
        except OSError:  # not listening yet
            time.sleep(0.1)
    return state
