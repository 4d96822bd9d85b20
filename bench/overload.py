"""A hello worker past saturation: does the server answer 503 with Retry-After within its queue bound,
or does latency grow without end?

`wasminfer serve` runs examples/hello.wasm (default limits: invocations at once = pool threads - 1,
twice that many waiting; more get 503 + Retry-After). The saturation rate is the most answers per
second seen while open loops offer rising rates (from what `--clients` closed-loop clients get, up by
a quarter each time) until the server no longer keeps up. Then open loops offer 1x and 2x that rate
for `--seconds` each:
requests start on a fixed schedule whatever the answers, and each latency is counted from its
scheduled start (so a client falling behind counts against the server, as users would see it).
The load generator is this process, on the same two cores as the server; its CPU time is reported.

    python bench/overload.py [--clients 16] [--seconds 10] [--processes 1]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from harness import ROOT, percentile, say

MAX_IN_FLIGHT = 2048  # the generator's own cap; requests past it are counted as not sent


def start_server(folder: Path, processes: int) -> tuple[subprocess.Popen[str], str]:
    wasminfer = Path(sys.executable).parent / "wasminfer"
    cmd = [str(wasminfer), "--log-level", "warning", "serve", str(folder), "--port", "0", "--cache-dir", str(folder / "_cache"),
           "--processes", str(processes)]
    proc = subprocess.Popen([*cmd[:2], "info", *cmd[3:]], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise SystemExit("the server exited early")
        m = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
        if m:
            return proc, m.group(1)
    raise SystemExit("the server did not start")


async def closed_loop(url: str, clients: int, seconds: float) -> float:
    """Requests per second that `clients` keep-alive clients get, each sending its next on an answer."""
    done = 0
    stop = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            async with session.get(url) as resp:
                await resp.read()
                done += resp.status == 200

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        return done / (time.perf_counter() - started)


async def open_loop(url: str, rate: float, seconds: float) -> dict[str, float]:
    """Offer `rate` requests per second on a fixed schedule; latencies from each scheduled start."""
    ok: list[float] = []
    refused: list[float] = []
    other = 0
    retry_after = 0
    unsent = 0
    in_flight = 0

    async def one(session: aiohttp.ClientSession, due: float) -> None:
        nonlocal other, retry_after, in_flight
        try:
            async with session.get(url) as resp:
                await resp.read()
                took = time.perf_counter() - due
                if resp.status == 200:
                    ok.append(took)
                elif resp.status == 503:
                    refused.append(took)
                    retry_after += "Retry-After" in resp.headers
                else:
                    other += 1
        except aiohttp.ClientError:
            other += 1
        finally:
            in_flight -= 1

    tasks = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        start = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            due = start + i / rate
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            if in_flight >= MAX_IN_FLIGHT:
                unsent += 1
                continue
            in_flight += 1
            tasks.append(asyncio.create_task(one(session, due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    every = ok + refused
    return {
        "offered": n / seconds, "ok/s": len(ok) / elapsed, "503 share": len(refused) / max(n, 1),
        "retry-after share": retry_after / max(len(refused), 1), "other": other + unsent,
        "p50 ms": percentile(every, 0.5) * 1000 if every else 0.0, "p99 ms": percentile(every, 0.99) * 1000 if every else 0.0,
        "p99 ok ms": percentile(ok, 0.99) * 1000 if ok else 0.0, "p99 503 ms": percentile(refused, 0.99) * 1000 if refused else 0.0,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16, help="closed-loop clients that find the saturation rate")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=1,
                        help="serving processes (the generator shares the machine's cores with them)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wasminfer-overload-") as tmp:
        folder = Path(tmp)
        (folder / "hello.wasm").write_bytes((ROOT / "examples" / "hello.wasm").read_bytes())
        server, base = start_server(folder, args.processes)
        url = base + "/hello"
        try:
            asyncio.run(closed_loop(url, 2, 2.0))  # warm
            say(f"a first guess with {args.clients} closed-loop clients")
            rate = asyncio.run(closed_loop(url, args.clients, args.seconds / 2))
            saturation = 0.0
            while True:  # open loops at rising rates until the server stops keeping up
                probe = asyncio.run(open_loop(url, rate, args.seconds / 2))
                say(f"offered {rate:.0f} req/s: {probe['ok/s']:.0f} ok/s, {probe['503 share']:.1%} 503")
                saturation = max(saturation, probe["ok/s"])
                if probe["ok/s"] < 0.95 * rate or probe["503 share"] > 0.01:
                    break
                rate *= 1.25
            rows = {}
            for factor in (1.0, 2.0):
                say(f"offering {factor:.0f}x saturation ({factor * saturation:.0f} req/s) for {args.seconds:.0f} s")
                before = resource.getrusage(resource.RUSAGE_SELF)
                rows[factor] = asyncio.run(open_loop(url, factor * saturation, args.seconds))
                after = resource.getrusage(resource.RUSAGE_SELF)
                rows[factor]["client cpu s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"\nhello worker past saturation; saturation: {saturation:.0f} req/s")
    cols = ["offered", "ok/s", "503 share", "retry-after share", "other", "p50 ms", "p99 ms", "p99 ok ms", "p99 503 ms", "client cpu s"]
    print(f"{'load':5} " + " ".join(f"{c:>17}" for c in cols))
    for factor, row in rows.items():
        print(f"{factor:4.0f}x " + " ".join(f"{row[c]:17.2f}" for c in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
