"""The WIT wasi:nn path's cost per inference on fc256, against the witx path and the reference.

Four guests loops, each iteration timed inside the guest with the WASI monotonic clock, on the
named model fc256, interleaved in rounds:

- witx:               bench/guests/nn_loop.c (set_input + compute + get_output), in-process model
- WIT:                bench/guests/nn_wit_loop.c, a component (tensor constructor + compute with
                      named tensors + the output's data + drops), in-process model
- WIT, model host:    the same component, the model in its own model host process (the server's
                      default)
- WIT (reference):    the same component under `wasmtime run -S nn -S nn-graph=openvino::fc256`
- witx (reference):   nn_loop under the same reference CLI

The ratios of WIT over witx (same host) and of WIT over the reference running the same
component are printed. No target is set for them; the numbers say what the WIT path costs here.

    python bench/wit_overhead.py [--iterations 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from harness import ROOT, build_guest, fetch_model, percentile, say, wasmtime_reference


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=2000, help="inferences per round and side")
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()

    witx_guest = build_guest(ROOT / "bench" / "guests" / "nn_loop.c")
    wit_guest = build_guest(ROOT / "bench" / "guests" / "nn_wit_loop.c")
    model_dir = fetch_model("fc256")

    from wasminfer_runtime.component_executor import new_executor
    from wasminfer_runtime.config import ModelConfig, WorkerConfig
    from wasminfer_runtime.engine import RuntimeEngine
    from wasminfer_runtime.metrics import Metrics
    from wasminfer_runtime.models import ModelRegistry

    x = (np.arange(256, dtype=np.float32) / 256.0).reshape(1, 256).tobytes()
    metrics = Metrics()
    fc256 = ModelConfig.model_validate(
        {"name": "fc256", "format": "openvino", "files": [model_dir / "model.xml", model_dir / "model.bin"]})
    in_process = ModelRegistry(metrics, "in-process")
    in_process.load(fc256)
    hosted = ModelRegistry(metrics, "process")
    hosted.load(fc256)

    def per_iteration_us(stdout: bytes) -> list[float]:
        return [int(ln.split()[1]) / 1000 for ln in stdout.decode().splitlines() if ln.startswith("ns ")]

    with tempfile.TemporaryDirectory() as cache, RuntimeEngine(Path(cache), metrics) as engine:
        def executor(module: Path, registry: ModelRegistry) -> object:
            spec = {"name": module.stem, "module": module, "route": "/",
                    "wasi_nn": {"enabled": True, "models": ["fc256"]}}
            return new_executor(engine, registry, WorkerConfig.model_validate(spec))

        ours = {
            "witx": (executor(witx_guest, in_process), ["fc256", "1,256"]),
            "WIT": (executor(wit_guest, in_process), ["fc256", "input", "1,256"]),
            "WIT, model host": (executor(wit_guest, hosted), ["fc256", "input", "1,256"]),
        }
        reference, env = wasmtime_reference(Path(cache))
        theirs = {
            "WIT (reference)": (wit_guest, ["fc256", "input", "1,256"]),
            "witx (reference)": (witx_guest, ["fc256", "1,256"]),
        }

        def run_ours(name: str, n: int) -> list[float]:
            ex, args = ours[name]
            inv = ex.invoke(x, [*args, str(n)])  # type: ignore[attr-defined]
            if inv.outcome != "ok":
                raise SystemExit(f"{name}: the guest failed: {inv.message}\n{inv.stdout[-500:]!r}")
            return per_iteration_us(inv.stdout)

        def run_reference(name: str, n: int) -> list[float]:
            module, args = theirs[name]
            done = subprocess.run([str(reference), "run", "-S", "nn", "-S", f"nn-graph=openvino::{model_dir}",
                                   str(module), *args, str(n)], input=x, env=env, capture_output=True, timeout=300)
            if done.returncode != 0:
                raise SystemExit(f"{name} failed ({done.returncode}): {done.stderr.decode()[-1000:]}")
            return per_iteration_us(done.stdout)

        for name in ours:
            run_ours(name, 1)
        samples: dict[str, list[float]] = {name: [] for name in [*ours, *theirs]}
        say(f"{opts.rounds} rounds x {opts.iterations} inferences per side")
        for r in range(opts.rounds):
            for name in ours:
                samples[name] += run_ours(name, opts.iterations)
            for name in theirs:
                samples[name] += run_reference(name, opts.iterations)
            say(f"round {r + 1}/{opts.rounds} done")
    hosted.close()

    base = statistics.median(samples["witx"])
    print()
    print(f"WIT wasi:nn per inference, fc256, {opts.rounds * opts.iterations} inferences per row")
    print(f"{'path':<20} {'median us':>10} {'p90 us':>9} {'vs witx':>10}")
    for name, values in samples.items():
        med = statistics.median(values)
        print(f"{name:<20} {med:>10.2f} {percentile(values, 0.9):>9.2f} {med - base:>+9.2f}")
    wit, ref = statistics.median(samples["WIT"]), statistics.median(samples["WIT (reference)"])
    print(f"\nWIT over witx (this host): x{wit / base:.2f} ({wit - base:+.2f} us per inference)")
    print(f"WIT here over the reference running the same component: x{wit / ref:.2f}")
    print(f"WIT across the model host boundary: x{statistics.median(samples['WIT, model host']) / ref:.2f} of the reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
