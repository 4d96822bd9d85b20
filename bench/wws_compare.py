"""wws 1.7.0 against wasminfer on the same folders: latency and throughput, 8 clients, two routes.

hello: examples/hello.c (built as hello.wasm, with examples/hello.toml), served by the real wws
  binary (bench/wws/build.sh builds it into ~/.cache/wasminfer/wws/1.7.0/bin/wws; WWS_BIN or
  --wws elsewhere) and by `wasminfer serve`.
model: bench/guests/wws_nn.c as nn.wasm, whose nn.toml preloads examples/_models/mobilenet
  (OpenVINO IR, 1x3x224x224 f32) the wws way ([[features.wasi_nn.preload_models]]); each request
  is one inference of an input the guest makes (the same every time), answered with the top
  class. Served by wws-nn (`WWS_WASI_NN=1 bench/wws/build.sh`: wws 1.7.0 whose wasi-nn runs on a
  current OpenVINO; WWS_NN_BIN or --wws-nn; without it the route runs without wws) and by
  `wasminfer serve`, and set beside the model's direct inference: OpenVINO in this process, the
  same file, the same compile properties as wasminfer's and the same input, one infer request
  per client thread, timed per inference. Before timing, the three must agree on the top class.

All on loopback. The same aiohttp clients (--clients concurrent, each on its own keep-alive
connection, GET) load one side per block; blocks alternate between the sides so the machine's
drift hits all alike. Each block is bounded in requests and in seconds.

Reported per side: median and p90 latency over all timed requests, requests/s (the median of the
blocks); then the ratios (model: wasminfer / direct, target <= 1.1x, and wasminfer / wws). The
load average before and after is printed: on a small machine the clients share the CPU with the
server, and other jobs may too.

    python bench/wws_compare.py [--route all|hello|model] [--clients 8] [--rounds 4]
        [--requests 300] [--model-requests 25] [--block-seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from harness import ROOT, build_guest, fetch_model, say

WWS_VERSION = "1.7.0"
WWS_BIN_DIR = Path.home() / ".cache" / "wasminfer" / "wws" / WWS_VERSION / "bin"
DEFAULT_WWS = Path(os.environ.get("WWS_BIN", WWS_BIN_DIR / "wws"))
DEFAULT_WWS_NN = Path(os.environ.get("WWS_NN_BIN", WWS_BIN_DIR / "wws-nn"))
HELLO_WARMUP_PER_CLIENT = 20
MODEL_WARMUP_PER_CLIENT = 2
TARGET_MODEL_OVER_DIRECT = 1.1
MODEL_TOML = """name = "nn"
version = "1"

[[features.wasi_nn.preload_models]]
backend = "openvino"
provider = { type = "local", dir = "./_models/mobilenet/" }
"""

# One block of one side: (clients, requests per client, seconds cap, warm-up per client) ->
# (latencies in seconds, requests/s).
Block = Callable[[int, int, float, int], tuple[list[float], float]]


def check_wws(wws: Path, how: str) -> str:
    if not wws.is_file():
        raise SystemExit(
            f"no wws binary at {wws}.\n"
            f"Build wws 1.7.0 once with {how}bench/wws/build.sh WWS_SRC WAX_SRC WIT_BINDGEN_BACKPORT_SRC\n"
            "(the three sources it needs: bench/README.md, 'Against wws 1.7.0'), or point WWS_BIN / --wws at one."
        )
    version = subprocess.run([str(wws), "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if not version.endswith(WWS_VERSION):
        raise SystemExit(f"{wws} is {version!r}; this comparison is against wws {WWS_VERSION}")
    return version


def write_hello_site(folder: Path) -> None:
    shutil.copyfile(build_guest(ROOT / "examples" / "hello.c"), folder / "hello.wasm")
    shutil.copyfile(ROOT / "examples" / "hello.toml", folder / "hello.toml")


def write_model_site(folder: Path) -> Path:
    """The model route's folder; returns the model's folder inside it."""
    shutil.copyfile(build_guest(ROOT / "bench" / "guests" / "wws_nn.c"), folder / "nn.wasm")
    (folder / "nn.toml").write_text(MODEL_TOML)
    model = folder / "_models" / "mobilenet"
    shutil.copytree(fetch_model("mobilenet"), model)
    return model


def guest_input() -> np.ndarray[Any, Any]:
    """The tensor bench/guests/wws_nn.c sends, in the model's N,C,H,W order: element i of the
    guest's memory is ((i * 37) % 256) / 255, interleaved (N,H,W,C)."""
    memory = (np.arange(224 * 224 * 3, dtype=np.uint64) * 37 % 256).astype(np.float32) / np.float32(255)
    return np.ascontiguousarray(memory.reshape(1, 224, 224, 3).transpose(0, 3, 1, 2))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_answering(name: str, url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> bytes:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
            try:
                async with session.get(url) as resp:
                    body = await resp.read()
                    if resp.status == 200:
                        return body
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"{url} did not answer 200 within {timeout} s:\n{log.read_text(errors='replace')}")


async def _client(session: aiohttp.ClientSession, url: str, n: int, deadline: float, times: list[float]) -> None:
    for _ in range(n):
        if time.monotonic() > deadline:
            return
        t0 = time.perf_counter()
        async with session.get(url) as resp:
            body = await resp.read()
        times.append(time.perf_counter() - t0)
        if resp.status != 200:
            raise SystemExit(f"{url} answered {resp.status}: {body[:300]!r}")


async def _http_block(url: str, clients: int, per_client: int, seconds: float, warmup: int) -> tuple[list[float], float]:
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        warm: list[float] = []
        await asyncio.gather(*(_client(session, url, warmup, time.monotonic() + seconds, warm)
                               for _ in range(clients)))
        times: list[float] = []
        t0 = time.perf_counter()
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(_client(session, url, per_client, deadline, times) for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    return times, len(times) / elapsed


def http_block(url: str) -> Block:
    """`clients` concurrent HTTP clients, `per_client` requests each."""
    return lambda clients, per_client, seconds, warmup: asyncio.run(
        _http_block(url, clients, per_client, seconds, warmup))


class Direct:
    """The model in this process: the file and compile properties wasminfer uses, one infer
    request per client thread; each timed inference sets the input, infers and copies the output."""

    def __init__(self, model_dir: Path) -> None:
        import openvino as ov

        from wasminfer_runtime.backends.openvino import compile_properties
        from wasminfer_runtime.config import ModelOptions

        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(model_dir / "model.xml"), "CPU",
                                           compile_properties(ModelOptions.model_validate({})))
        self.x = guest_input()

    def answer(self) -> dict[str, Any]:
        out = np.asarray(self.compiled.create_infer_request().infer({0: self.x})[0]).reshape(-1)
        top = int(out.argmax())
        return {"output_bytes": out.nbytes, "top": top, "score": float(out[top])}

    def block(self, clients: int, per_client: int, seconds: float, warmup: int) -> tuple[list[float], float]:
        times: list[float] = []
        lock = threading.Lock()
        start = threading.Barrier(clients + 1)
        deadline = [0.0]

        def client() -> None:
            request = self.compiled.create_infer_request()
            for _ in range(warmup):
                np.copy(request.infer({0: self.x})[0])
            start.wait()
            start.wait()
            mine = []
            for _ in range(per_client):
                if time.monotonic() > deadline[0]:
                    break
                t0 = time.perf_counter()
                np.copy(request.infer({0: self.x})[0])
                mine.append(time.perf_counter() - t0)
            with lock:
                times.extend(mine)

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        start.wait()  # every client warmed up
        deadline[0] = time.monotonic() + seconds
        t0 = time.perf_counter()
        start.wait()
        for t in threads:
            t.join()
        return times, len(times) / (time.perf_counter() - t0)


@dataclass
class Side:
    name: str
    run: Block


def start_server(name: str, cmd: list[str], url_path: str, tmp: Path,
                 procs: list[subprocess.Popen[bytes]]) -> tuple[str, bytes]:
    """Starts a server on a free port; its URL and its first 200 answer."""
    port = free_port()
    log = tmp / f"{name}.log"
    with log.open("wb") as sink:  # the child keeps its own descriptor
        proc = subprocess.Popen([c.format(port=port) for c in cmd], cwd=tmp, stdout=sink, stderr=subprocess.STDOUT)
    procs.append(proc)
    url = f"http://127.0.0.1:{port}{url_path}"
    first = asyncio.run(wait_answering(name, url, proc, log))
    say(f"{name} answering on {url}")
    return url, first


def server_commands(wws: Path | None, site: Path, tmp: Path) -> dict[str, list[str]]:
    wasminfer = Path(sys.executable).parent / "wasminfer"
    cmds = {"wws": [str(wws), str(site), "--host", "127.0.0.1", "--port", "{port}"]} if wws else {}
    cmds["wasminfer"] = [str(wasminfer), "--log-level", "warning", "serve", str(site), "--host", "127.0.0.1",
                         "--port", "{port}", "--cache-dir", str(tmp / f"cache-{site.name}")]
    return cmds


def measure(sides: list[Side], clients: int, per_client: int, rounds: int, seconds: float,
            warmup: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Alternating blocks; every latency and the median requests/s of each side."""
    times: dict[str, list[float]] = {s.name: [] for s in sides}
    rates: dict[str, list[float]] = {s.name: [] for s in sides}
    for r in range(rounds):
        for side in sides:
            t, rate = side.run(clients, per_client, seconds, warmup)
            times[side.name] += t
            rates[side.name].append(rate)
            say(f"round {r + 1}/{rounds} {side.name}: {len(t)} requests, {rate:.1f} req/s")
    return times, {k: statistics.median(v) for k, v in rates.items()}


def report(title: str, times: dict[str, list[float]], rps: dict[str, float],
           ratios: list[tuple[str, str, str]]) -> None:
    def q(values: list[float], p: float) -> float:
        return sorted(values)[min(len(values) - 1, int(p * len(values)))] * 1e3

    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"\n{title}")
    print(f"{'side':<12}{'requests':>10}{'median ms':>12}{'p90 ms':>10}{'req/s':>10}")
    for name in times:
        print(f"{name:<12}{len(times[name]):>10}{med[name]:>12.3f}{q(times[name], 0.9):>10.3f}{rps[name]:>10.1f}")
    for a, b, note in ratios:
        print(f"{a} / {b}: median latency x{med[a] / med[b]:.2f}, requests/s x{rps[a] / rps[b]:.2f}{note}")


def loadavg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def hello_route(args: argparse.Namespace, tmp: Path) -> None:
    version = check_wws(args.wws, "")
    site = tmp / "hello"
    site.mkdir()
    write_hello_site(site)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sides = [Side(name, http_block(start_server(name, cmd, "/hello", tmp, procs)[0]))
                 for name, cmd in server_commands(args.wws, site, tmp).items()]
        times, rps = measure(sides, args.clients, args.requests, args.rounds, args.block_seconds,
                             HELLO_WARMUP_PER_CLIENT)
    finally:
        stop(procs)
    report(f"hello worker, {args.clients} concurrent clients, {args.rounds} blocks per server ({version})",
           times, rps, [("wasminfer", "wws", "")])


def model_route(args: argparse.Namespace, tmp: Path) -> None:
    wws_nn: Path | None = args.wws_nn
    version = "no wws-nn: wasminfer and direct only"
    if wws_nn is not None and wws_nn.is_file():
        version = check_wws(wws_nn, "WWS_WASI_NN=1 ")
    else:
        say(f"no wws-nn at {wws_nn} (WWS_WASI_NN=1 bench/wws/build.sh builds it): the model route runs without wws")
        wws_nn = None
    site = tmp / "model"
    site.mkdir()
    direct = Direct(write_model_site(site))
    answers = {"direct": direct.answer()}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sides = []
        for name, cmd in server_commands(wws_nn, site, tmp).items():
            url, first = start_server(name, cmd, "/nn", tmp, procs)
            answers[name] = json.loads(first)
            sides.append(Side(name, http_block(url)))
        for name, answer in answers.items():
            say(f"{name} answers {answer}")
        if len({a["top"] for a in answers.values()}) != 1:
            raise SystemExit(f"the sides disagree on the top class: {answers}")
        sides.append(Side("direct", direct.block))
        times, rps = measure(sides, args.clients, args.model_requests, args.rounds, args.block_seconds,
                             MODEL_WARMUP_PER_CLIENT)
    finally:
        stop(procs)
    ratios = [("wasminfer", "direct", f" (target <= {TARGET_MODEL_OVER_DIRECT}x)")]
    if wws_nn is not None:
        ratios.append(("wasminfer", "wws", ""))
    report(f"model worker (mobilenet IR, 1x3x224x224 f32, top class {answers['direct']['top']}), "
           f"{args.clients} concurrent clients, {args.rounds} blocks per side ({version})", times, rps, ratios)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--route", choices=["all", "hello", "model"], default="all")
    parser.add_argument("--wws", type=Path, default=DEFAULT_WWS, help="the wws 1.7.0 binary (hello route)")
    parser.add_argument("--wws-nn", type=Path, default=DEFAULT_WWS_NN,
                        help="wws 1.7.0 with a working wasi-nn (model route)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=300, help="hello: timed requests per client per block")
    parser.add_argument("--model-requests", type=int, default=25, help="model: timed requests per client per block")
    parser.add_argument("--rounds", type=int, default=4, help="blocks per side, alternating")
    parser.add_argument("--block-seconds", type=float, default=20.0, help="time cap of one block")
    args = parser.parse_args(argv)

    say(f"load average before: {loadavg()}")
    with tempfile.TemporaryDirectory(prefix="wasminfer-wws-compare-") as tmp:
        if args.route in ("all", "hello"):
            hello_route(args, Path(tmp))
        if args.route in ("all", "model"):
            model_route(args, Path(tmp))
    print(f"\nload average (1, 5, 15 min) after: {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
