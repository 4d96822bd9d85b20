"""Starting, readiness, partial failure and the `wasminfer serve` command."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from wasminfer_runtime.config import RuntimeConfig
from wasminfer_runtime.server import load_config
from wasminfer_runtime.wws import load_wws_folder

from .support import ROOT, ServerThread, wasminfer_command, guest_input_pattern, metric, put_worker, request, wait_loaded, wait_ready, write_matmul_chain

Serve = Callable[[RuntimeConfig], ServerThread]

NN_TOML = """name = "{name}"
binary_body = "base64"
[vars]
MODEL = "{model}"
INPUT_DIMS = "1,{width}"
[features.wasi_nn]
allowed_backends = ["openvino"]
[[features.wasi_nn.preload_models]]
backend = "openvino"
provider = {{ type = "local", dir = "./_models/{model}" }}
"""


def test_a_bad_worker_does_not_stop_the_good_ones(guests: dict[str, Path], tmp_path: Path, serve: Serve) -> None:
    put_worker(tmp_path, "hello.wasm", guests["hello"])
    (tmp_path / "broken.wasm").write_bytes(b"\0asm\x01\0\0\0 this is not a module")
    (tmp_path / "lib.wasm").write_bytes(b"\0asm\x01\0\0\0")  # valid, but no _start: not a command
    server = serve(load_wws_folder(tmp_path))
    ready = wait_loaded(server.url)
    assert ready.status == 503
    doc = ready.json()
    assert doc["ready"] is False and doc["pending"] == []
    assert set(doc["failed"]) == {"worker broken", "worker lib"}
    assert doc["workers"]["hello"]["state"] == "ready"
    for name in ("broken", "lib"):
        reply = request(server.url + f"/{name}")
        assert reply.status == 503, reply.body
        err = reply.json()
        assert err["worker"] == name and err["error"] == "unavailable"
        assert "failed to load" in err["message"] and doc["failed"][f"worker {name}"] in err["message"]
        assert "retry-after" not in reply.headers  # it will not get better by waiting
    assert request(server.url + "/hello").status == 200
    assert metric(server.url, "wasminfer_worker_ready", worker="broken") == 0.0


def test_readyz_flips_when_the_model_has_loaded(guests: dict[str, Path], tmp_path: Path, serve: Serve) -> None:
    # 200 chained 256x256 layers: compiling takes a noticeable fraction of a second.
    width = 256
    weights = write_matmul_chain(tmp_path / "_models" / "chain", layers=200, width=width)
    put_worker(tmp_path, "nn.wasm", guests["nn_named"], NN_TOML.format(name="nn", model="chain", width=width))
    put_worker(tmp_path, "hello.wasm", guests["hello"])
    server = serve(load_wws_folder(tmp_path))

    first = request(server.url + "/readyz")
    assert first.status == 503, first.body
    assert "model chain" in first.json()["pending"]
    assert request(server.url + "/healthz").status == 200  # alive while loading
    early = request(server.url + "/nn")
    assert early.status == 503 and early.headers.get("retry-after") == "1", early.body
    assert "still loading" in early.json()["message"]

    done = wait_ready(server.url).json()
    assert done["models"]["chain"]["state"] == "ready" and done["failed"] == {}
    assert metric(server.url, "wasminfer_model_ready", model="chain") == 1.0

    # The worker's answer is the model's: compare with the same chain in numpy.
    reply = request(server.url + "/nn")
    assert reply.status == 200, reply.body
    got = reply.json()
    x = guest_input_pattern(width).astype(np.float64)
    for w in weights:
        x = x @ w.astype(np.float64)
    assert got["output_bytes"] == width * 4
    assert got["argmax"] == int(np.argmax(x))
    np.testing.assert_allclose(got["first"], x[:8], rtol=1e-3, atol=1e-4)
    # A tensor in the body is used as the input (sent base64: float bytes are not UTF-8).
    ones = np.ones(width, dtype=np.float32)
    y = ones.astype(np.float64)
    for w in weights:
        y = y @ w.astype(np.float64)
    with_body = request(server.url + "/nn", method="POST", body=ones.tobytes()).json()
    np.testing.assert_allclose(with_body["first"], y[:8], rtol=1e-3, atol=1e-4)


def test_a_model_that_fails_to_load_is_reported(guests: dict[str, Path], tmp_path: Path, serve: Serve) -> None:
    bad = tmp_path / "_models" / "corrupt"
    bad.mkdir(parents=True)
    (bad / "model.onnx").write_bytes(b"definitely not an onnx protobuf")
    put_worker(tmp_path, "nn.wasm", guests["nn_named"], NN_TOML.format(name="nn", model="corrupt", width=4))
    put_worker(tmp_path, "hello.wasm", guests["hello"])
    server = serve(load_wws_folder(tmp_path))
    deadline = time.monotonic() + 30
    while request(server.url + "/readyz").json()["pending"] and time.monotonic() < deadline:
        time.sleep(0.05)
    doc = request(server.url + "/readyz").json()
    assert list(doc["failed"]) == ["model corrupt"] and "corrupt" in doc["failed"]["model corrupt"]
    reply = request(server.url + "/nn")
    assert reply.status == 503 and "model 'corrupt'" in reply.json()["message"]
    assert request(server.url + "/hello").status == 200


def test_runtime_yaml_serves_the_same_way(guests: dict[str, Path], tmp_path: Path, serve: Serve) -> None:
    cfg_path = tmp_path / "runtime.yaml"
    cfg_path.write_text(f"""
workers:
  - name: greeter
    module: {guests["hello"]}
    route: /v1/greet/[who]
    vars: {{GREETING: from yaml}}
""")
    server = serve(load_config(None, cfg_path))
    wait_ready(server.url)
    doc = request(server.url + "/v1/greet/bob").json()
    assert (doc["message"], doc["params"]) == ("from yaml", {"who": "bob"})


def test_serve_command_starts_serves_and_stops_on_sigterm(guests: dict[str, Path], tmp_path: Path) -> None:
    put_worker(tmp_path, "index.wasm", guests["hello"], '[vars]\nGREETING = "cli"\n')
    proc = subprocess.Popen(
        [*wasminfer_command(), "--log-level", "debug", "serve", str(tmp_path), "--host", "127.0.0.1", "--port", "0"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line, f"server exited early (rc={proc.poll()}):\n{''.join(lines)}"
            lines.append(line)
            m = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
            url = m.group(1) if m else None
        assert url is not None, "".join(lines)
        wait_ready(url)
        assert request(url + "/").json()["message"] == "cli"
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
        rest = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = "".join(lines) + rest
    assert rc == 0, log
    assert "route /" in log and "-> worker index" in log
    assert "GET / -> index 200" in log  # the per-request debug line
    assert "stopped" in log


def test_a_worker_with_a_bad_toml_answers_503_and_the_others_serve(
    guests: dict[str, Path], tmp_path: Path, serve: Serve
) -> None:
    put_worker(tmp_path, "hello.wasm", guests["hello"])
    put_worker(tmp_path, "w.wasm", guests["hello"], '[features.wasi_nn]\nallowed_backends = ["cuda"]\n')
    server = serve(load_wws_folder(tmp_path))
    ready = wait_loaded(server.url)
    assert ready.status == 503
    why = ready.json()["failed"]["worker w"]
    assert str((tmp_path / "w.toml").resolve()) in why
    assert "features.wasi_nn.allowed_backends" in why and "unknown backend 'cuda'" in why
    reply = request(server.url + "/w")
    assert reply.status == 503 and reply.json()["worker"] == "w" and why in reply.json()["message"]
    assert request(server.url + "/hello").status == 200


def test_serve_command_refuses_a_folder_and_a_config_at_once(tmp_path: Path) -> None:
    both = subprocess.run([*wasminfer_command(), "serve", str(tmp_path), "--config", str(ROOT / "nope.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert both.returncode == 2 and "exactly one" in both.stderr


def test_serve_exits_saying_why_when_told_to_on_load_failure(guests: dict[str, Path], tmp_path: Path) -> None:
    """As in a pod: a worker that cannot load stops the runtime with exit code 3 and a termination
    message naming the worker, its file and the reason; without the setting it keeps serving."""
    good, bad = tmp_path / "hello.wasm", tmp_path / "broken.wasm"
    good.write_bytes(guests["hello"].read_bytes())
    bad.write_bytes(b"this is not WebAssembly")
    termination = tmp_path / "termination-log"
    config = tmp_path / "runtime.yaml"
    config.write_text(
        f"server: {{host: 127.0.0.1, port: 0, exit_on_load_failure: true, termination_log: {termination}}}\n"
        f"workers:\n  - {{name: hello, module: {good}, route: /hello}}\n  - {{name: broken, module: {bad}, route: /broken}}\n"
    )
    proc = subprocess.run([*wasminfer_command(), "serve", "--config", str(config)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 3, proc.stderr
    message = termination.read_text()
    assert message.startswith("failed to load: worker broken:") and str(bad) in message, message
    assert "worker hello" not in message
    assert "exiting with code 3" in proc.stderr and "stopped" in proc.stderr


def test_sigterm_while_loading_stops_promptly_with_exit_on_load_failure(tmp_path: Path) -> None:
    """A pod deleted while its models still load must not wait out its grace period: the runtime
    stops on SIGTERM although the loads it cancels never finish."""
    xml = ROOT / "examples" / "_models" / "mobilenet" / "model.xml"
    assert xml.is_file(), "run `python examples/fetch_models.py mobilenet` first"
    models = "".join(f"  - {{name: m{i}, format: openvino, files: [{xml}]}}\n" for i in range(8))
    config = tmp_path / "runtime.yaml"
    config.write_text(f"server: {{host: 127.0.0.1, port: 0, exit_on_load_failure: true}}\nmodels:\n{models}")
    proc = subprocess.Popen([*wasminfer_command(), "serve", "--config", str(config)], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines: list[str] = []
    # Signal handlers are in place once it says where it serves; the models are still loading then.
    while not any(" on http://" in line for line in lines):
        line = proc.stderr.readline()
        assert line, "".join(lines)
        lines.append(line)
    time.sleep(0.5)  # the handlers are installed just after that line
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rest = proc.stderr.read()
    assert rc == 0, "".join(lines) + rest
    assert "model m7 ready" not in "".join(lines) + rest, "loading was over before the signal: nothing tested"
    assert "stopped" in rest
