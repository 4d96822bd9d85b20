"""A hello worker served by wws 1.7.0 and by wasminfer: latency and throughput, 8 clients.

The same folder (examples/hello.c built as hello.wasm, with examples/hello.toml) is served by
the real wws binary (bench/wws/build.sh builds it into ~/.cache/wasminfer/wws/1.7.0/bin/wws;
WWS_BIN or --wws elsewhere) and by `wasminfer serve`, both on loopback. The same aiohttp
clients (--clients concurrent, each on its own keep-alive connection, GET /hello) load one
server per block; blocks alternate between the servers so the machine's drift hits both alike.
Each block is bounded in requests and in seconds.

Reported per server: median and p90 latency over all timed requests, requests/s (the median of
the blocks); then wasminfer / wws for both. On a small machine the clients share the CPU with
the server, so requests/s is a floor for both.

    python bench/wws_compare.py [--clients 8] [--requests 300] [--rounds 4] [--block-seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from harness import ROOT, build_guest, say

WWS_VERSION = "1.7.0"
DEFAULT_WWS = Path(os.environ.get("WWS_BIN", Path.home() / ".cache" / "wasminfer" / "wws" / WWS_VERSION / "bin" / "wws"))
WARMUP_PER_CLIENT = 20


def check_wws(wws: Path) -> str:
    if not wws.is_file():
        raise SystemExit(
            f"no wws binary at {wws}.\n"
            "Build wws 1.7.0 once with bench/wws/build.sh WWS_SRC WAX_SRC WIT_BINDGEN_BACKPORT_SRC\n"
            "(the three sources it needs: bench/README.md, 'Against wws 1.7.0'), or point WWS_BIN / --wws at one."
        )
    version = subprocess.run([str(wws), "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if not version.endswith(WWS_VERSION):
        raise SystemExit(f"{wws} is {version!r}; this comparison is against wws {WWS_VERSION}")
    return version


def write_site(folder: Path) -> None:
    shutil.copyfile(build_guest(ROOT / "examples" / "hello.c"), folder / "hello.wasm")
    shutil.copyfile(ROOT / "examples" / "hello.toml", folder / "hello.toml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_answering(name: str, url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
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


async def block(url: str, clients: int, per_client: int, seconds: float) -> tuple[list[float], float]:
    """One block: `clients` concurrent clients, `per_client` requests each; latencies and req/s."""
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        warm: list[float] = []
        await asyncio.gather(*(_client(session, url, WARMUP_PER_CLIENT, time.monotonic() + seconds, warm)
                               for _ in range(clients)))
        times: list[float] = []
        t0 = time.perf_counter()
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(_client(session, url, per_client, deadline, times) for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    return times, len(times) / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wws", type=Path, default=DEFAULT_WWS, help="the wws 1.7.0 binary")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=300, help="timed requests per client per block")
    parser.add_argument("--rounds", type=int, default=4, help="blocks per server, alternating")
    parser.add_argument("--block-seconds", type=float, default=20.0, help="time cap of one block")
    args = parser.parse_args(argv)

    version = check_wws(args.wws)
    wasminfer = Path(sys.executable).parent / "wasminfer"
    with tempfile.TemporaryDirectory(prefix="wasminfer-wws-compare-") as tmp:
        site = Path(tmp) / "site"
        site.mkdir()
        write_site(site)
        procs: list[subprocess.Popen[bytes]] = []
        urls: dict[str, str] = {}
        try:
            for name, cmd in {
                "wws": [str(args.wws), str(site), "--host", "127.0.0.1", "--port", "{port}"],
                "wasminfer": [str(wasminfer), "--log-level", "warning", "serve", str(site), "--host", "127.0.0.1",
                              "--port", "{port}", "--cache-dir", str(Path(tmp) / "cache")],
            }.items():
                port = free_port()
                log = Path(tmp) / f"{name}.log"
                with log.open("wb") as sink:  # the child keeps its own descriptor
                    proc = subprocess.Popen([c.format(port=port) for c in cmd], cwd=tmp, stdout=sink,
                                            stderr=subprocess.STDOUT)
                procs.append(proc)
                urls[name] = f"http://127.0.0.1:{port}/hello"
                asyncio.run(wait_answering(name, urls[name], proc, log))
                say(f"{name} answering on {urls[name]}")

            times: dict[str, list[float]] = {name: [] for name in urls}
            rates: dict[str, list[float]] = {name: [] for name in urls}
            for r in range(args.rounds):
                for name, url in urls.items():
                    t, rate = asyncio.run(block(url, args.clients, args.requests, args.block_seconds))
                    times[name] += t
                    rates[name].append(rate)
                    say(f"round {r + 1}/{args.rounds} {name}: {len(t)} requests, {rate:.0f} req/s")
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=30)

    def q(values: list[float], p: float) -> float:
        return sorted(values)[min(len(values) - 1, int(p * len(values)))] * 1e3

    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    rps = {k: statistics.median(v) for k, v in rates.items()}
    print(f"\nhello worker, {args.clients} concurrent clients, {args.rounds} blocks per server ({version})")
    print(f"{'server':<12}{'requests':>10}{'median ms':>12}{'p90 ms':>10}{'req/s':>10}")
    for name in urls:
        print(f"{name:<12}{len(times[name]):>10}{med[name]:>12.3f}{q(times[name], 0.9):>10.3f}{rps[name]:>10.0f}")
    print(f"wasminfer / wws: median latency x{med['wasminfer'] / med['wws']:.2f}, "
          f"requests/s x{rps['wasminfer'] / rps['wws']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
