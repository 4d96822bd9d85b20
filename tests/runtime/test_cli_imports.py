"""`wasminfer run` of a module that does not import wasi-nn loads none of the inference libraries, numpy,
the HTTP stack, asyncio or YAML: their imports were most of a short run's time. The other commands
still work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("numpy", "openvino", "onnxruntime", "aiohttp", "grpc", "asyncio", "yaml", "wasminfer_runtime.server",
         "wasminfer_runtime.modelserver")

PROBE = """
import json, sys
from wasminfer_runtime import cli
code = cli.main(sys.argv[1:])
print(json.dumps({"code": code, "loaded": sorted(m for m in sys.modules if m.split('.')[0] in %r or m in %r)}), file=sys.stderr)
""" % (tuple(h.split(".")[0] for h in HEAVY if "." not in h), HEAVY)


def run_probe(*argv: str, stdin: bytes = b"") -> tuple[dict[str, object], bytes]:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], input=stdin, capture_output=True, timeout=120, cwd=ROOT)
    report = json.loads(done.stderr.decode().strip().splitlines()[-1])
    return report, done.stdout


def test_running_a_hello_module_imports_no_inference_library_nor_the_http_stack() -> None:
    request = json.dumps({"url": "/hello", "method": "GET", "headers": {}, "body": "", "kv": {}, "params": {}}).encode()
    report, out = run_probe("run", str(ROOT / "examples" / "hello.wasm"), stdin=request)
    assert report["code"] == 0 and b"Hello" in out, out[:500]
    assert report["loaded"] == [], f"`wasminfer run hello.wasm` imported {report['loaded']}"


def test_every_command_still_parses_its_own_arguments() -> None:
    report, _ = run_probe("fetch")  # no plan and no source: its own usage error, exit 2
    assert report["code"] == 2
    done = subprocess.run([sys.executable, "-m", "wasminfer_runtime", "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0 and all(c in done.stdout for c in ("serve", "run", "fetch", "runtimes", "model-server"))
    done = subprocess.run([sys.executable, "-m", "wasminfer_runtime", "--log-level", "warning", "model-server", "--help"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0 and "--pool-replicas" in done.stdout
