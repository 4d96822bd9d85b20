"""Named model vs loading the model on every request (what wws workers do), on a mobilenet.

Each request is a full worker invocation: a fresh instance of bench/guests/nn_request.c, one
inference, the instance torn down. The two ways differ only in how the guest gets its graph:

- named:  load_by_name("mobilenet"): the runtime compiled it once at start; a lookup
- load:   read model.xml + model.bin (17 MB) from a preopened folder and call `load`, so the
          runtime parses and compiles the model inside the request

Also shown: the direct OpenVINO inference of the same model from Python, the floor for both.
Target: median(load) / median(named) >= 20.

    python bench/named_vs_load.py [--requests 120] [--load-requests 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from harness import ROOT, build_guest, fetch_model, say

TARGET_RATIO = 20.0
DIMS = "1,3,224,224"


def prepare() -> tuple[Path, Path]:
    return build_guest(ROOT / "bench" / "guests" / "nn_request.c"), fetch_model("mobilenet")


def timed(fn: Callable[[], object], n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=120, help="requests with the named model")
    parser.add_argument("--load-requests", type=int, default=20, help="requests that load the model")
    opts = parser.parse_args()

    module, model_dir = prepare()
    import openvino as ov

    from wasminfer_runtime.backends.openvino import compile_properties
    from wasminfer_runtime.config import ModelConfig, ModelOptions, WorkerConfig
    from wasminfer_runtime.engine import RuntimeEngine
    from wasminfer_runtime.executor import Invocation, WorkerExecutor
    from wasminfer_runtime.metrics import Metrics
    from wasminfer_runtime.models import ModelRegistry

    metrics = Metrics()
    registry = ModelRegistry(metrics)
    t0 = time.perf_counter()
    registry.load(ModelConfig.model_validate(
        {"name": "mobilenet", "format": "openvino", "files": [model_dir / "model.xml", model_dir / "model.bin"]}))
    say(f"named model compiled once at start in {(time.perf_counter() - t0) * 1000:.0f} ms")

    core = ov.Core()
    compiled = core.compile_model(core.read_model(model_dir / "model.xml"), "CPU",
                                  compile_properties(ModelOptions.model_validate({})))
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)

    def direct() -> None:
        request.infer({0: x})

    with tempfile.TemporaryDirectory() as cache, RuntimeEngine(Path(cache), metrics) as engine:
        worker = WorkerExecutor(engine, registry, WorkerConfig.model_validate({
            "name": "nn_request", "module": module, "route": "/",
            "folders": [{"from": str(model_dir), "to": "/model"}],
            "wasi_nn": {"enabled": True, "allowed_backends": ["openvino"], "models": ["mobilenet"]},
        }))

        def run(args: list[str]) -> Invocation:
            inv = worker.invoke(b"", args)
            if inv.outcome != "ok" or not inv.stdout.startswith(b"output "):
                raise SystemExit(f"guest failed ({args}): {inv.message} {inv.stdout!r}")
            return inv

        named_args = ["named", "mobilenet", DIMS]
        load_args = ["files", "/model", DIMS]
        a, b = run(named_args).stdout, run(load_args).stdout
        if a.split()[1] != b.split()[1] or abs(float(a.split()[2]) - float(b.split()[2])) > 1e-3:
            raise SystemExit(f"the two ways disagree: {a!r} vs {b!r}")

        timed(direct, 5)
        rows: dict[str, list[float]] = {"direct OpenVINO": [], "named (load_by_name)": [], "load per request": []}
        # Interleaved, so a busy moment on the machine hits all three alike.
        per_round = max(1, opts.requests // opts.load_requests)
        for r in range(opts.load_requests):
            rows["direct OpenVINO"] += timed(direct, per_round)
            rows["named (load_by_name)"] += timed(lambda: run(named_args), per_round)
            rows["load per request"] += timed(lambda: run(load_args), 1)
            say(f"round {r + 1}/{opts.load_requests}")

    named = statistics.median(rows["named (load_by_name)"])
    print()
    print(f"named model vs load on every request, mobilenet 224x224 (OpenVINO {ov.__version__.split('-')[0]}, CPU)")
    print(f"{'path':<22} {'requests':>8} {'median ms':>10} {'min ms':>8} {'vs named':>9}")
    for name, values in rows.items():
        med = statistics.median(values)
        print(f"{name:<22} {len(values):>8} {med:>10.2f} {min(values):>8.2f} {med / named:>8.2f}x")
    ratio = statistics.median(rows["load per request"]) / named
    verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
    print(f"\nnamed model is {ratio:.1f}x faster per request than loading it (target >= {TARGET_RATIO:.0f}x: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
