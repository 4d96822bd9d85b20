"""A hello worker's latency, and the memory of the runtime and its model hosts, while another
worker is attacked.

One `wasminfer serve --config runtime.yaml` process serves:

- hello:  examples/hello.c, the victim;
- sleep:  tests/guests/hostile_sleep.c, timeout 2 s: attackers ask it to sleep for an hour;
- bomb:   tests/guests/nn_load.c passing the POSTed body to wasi-nn `load`, limits.memory_mib 64:
          the attacker posts an ONNX model that expands to a 1 GiB tensor when it loads or runs;
- named:  tests/guests/nn_load.c running the named model `add` (y = x + 1, [1, 64], ONNX Runtime,
          memory_mib 64) with load_by_name: the attacker kills the model's host process with
          SIGKILL each time it is ready again, while a client requests the worker every 10 ms.

Two controls, not run by default (`--attacks`): `named`, the crash loop's traffic without the
kills, and `spin`, one process keeping one core busy and nothing else.

Each attack runs in its own process (so its client work does not share the measuring process's
GIL), one at a time, alternating with quiet phases. In every phase the same paced clients send
the same number of hello requests; the quiet phases together are the baseline. A sampler process
reads VmRSS of the runtime and of every model host from /proc every 10 ms; the runtime's VmHWM
is reset before each phase and read after it; "settled" is read 2 s after the attack stopped.

    python bench/under_attack.py [--requests 300] [--clients 3] [--phase-seconds 6]
    python bench/under_attack.py --attacks bomb,spin,crash,named

Target: hello p99 under each attack <= 2x its quiet p99.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from harness import ROOT, build_guest, say

TARGET_RATIO = 2.0
SLEEP_TIMEOUT_SECONDS = 2
SLEEP_ATTACKERS = 6  # twice the slots a worker gets with the default threads on two cores
MEMORY_MIB = 64
SAMPLE_SECONDS = 0.01
SETTLE_SECONDS = 2.0
NAMED_PAUSE_SECONDS = 0.01
PHASE_LIMIT_SECONDS = 120  # a phase that takes longer than this stops where it is
_KIB = 1024
_MIB = 1 << 20


# -- models ----------------------------------------------------------------------------------


def _model(nodes: list[Any], inits: list[Any]) -> bytes:
    from onnx import TensorProto, helper

    io = [helper.make_tensor_value_info(v, TensorProto.FLOAT, [1, 64]) for v in ("x", "y")]
    graph = helper.make_graph(nodes, "g", io[:1], io[1:], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    data: bytes = model.SerializeToString()
    return data


def add_one_model() -> bytes:
    """y = x + 1, [1, 64] f32: the named model of the crash loop."""
    from onnx import helper, numpy_helper

    w = numpy_helper.from_array(np.ones((1, 64), np.float32), "w")
    return _model([helper.make_node("Add", ["x", "w"], ["y"])], [w])


def bomb_model() -> bytes:
    """A few hundred bytes that become a 1 GiB tensor (ConstantOfShape [1, 2^28] f32)."""
    from onnx import TensorProto, helper, numpy_helper

    shape = numpy_helper.from_array(np.array([1, 1 << 28], np.int64), "shape")
    return _model([
        helper.make_node("ConstantOfShape", ["shape"], ["big"],
                         value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
        helper.make_node("ReduceSum", ["big"], ["s"], keepdims=1),
        helper.make_node("Add", ["x", "s"], ["y"]),
    ], [shape])


# -- HTTP --------------------------------------------------------------------------------------


class Client:
    """One keep-alive connection; reconnects after an error or a closed connection."""

    def __init__(self, url: str, timeout: float = 60) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.timeout = parts.hostname or "127.0.0.1", parts.port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def request(self, path: str, method: str = "GET", body: bytes | None = None) -> tuple[int, bytes]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=body)
            resp = self.conn.getresponse()
            data = resp.read()
            if resp.getheader("connection", "").lower() == "close":
                self.close()
            return resp.status, data
        except (OSError, http.client.HTTPException):
            self.close()
            return -1, b""

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# -- /proc -------------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a live process, in bytes ({} once it is gone or a zombie)."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line[:5]] = int(line.split()[1]) * _KIB
    return out


class Hosts:
    """The runtime's model host processes, found by their command line (`modelhost.child --name N`)."""

    def __init__(self, runtime_pid: int) -> None:
        self.runtime_pid = runtime_pid
        self.found: dict[int, tuple[str, Path | None] | None] = {}  # pid -> (name, cgroup) or None

    def scan(self) -> dict[int, tuple[str, Path | None]]:
        """pid -> (host name, its cgroup directory or None) of every host the runtime started."""
        live = {int(e) for e in os.listdir("/proc") if e.isdigit()}
        for pid in list(self.found):
            if pid not in live:
                del self.found[pid]
        for pid in live - self.found.keys():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            host = None
            if ppid == self.runtime_pid and b"wasminfer_runtime.modelhost.child" in argv and b"--name" in argv:
                cap = argv[argv.index(b"--cap") + 1].decode() if b"--cap" in argv else ""
                path = cap.partition(":")[2]
                host = (argv[argv.index(b"--name") + 1].decode(), Path(path) if path else None)
            self.found[pid] = host
        return {pid: host for pid, host in self.found.items() if host is not None}

    def pids(self, name: str) -> list[int]:
        return [pid for pid, (n, _) in self.scan().items() if n == name and proc_status(pid)]


def cgroup_usage(path: Path) -> int:
    """Bytes charged to a host's memory cgroup (v1 or v2); 0 once it is gone."""
    for file in ("memory.usage_in_bytes", "memory.current"):
        try:
            return int((path / file).read_text())
        except (OSError, ValueError):
            continue
    return 0


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sampler(runtime_pid: int, stop: Event, out: Connection) -> None:
    """Peaks per process until stopped, sent as {label: [VmRSS (10 ms samples), VmHWM, cgroup usage,
    CPU seconds used meanwhile]}."""
    hosts = Hosts(runtime_pid)
    peaks: dict[str, list[float]] = {}
    cpu_first: dict[int, float] = {}  # pid -> CPU time when first seen (0 for one started meanwhile)
    cpu_last: dict[int, tuple[str, float]] = {}
    first_scan = True
    while True:
        found: dict[int, tuple[str, Path | None]] = {runtime_pid: ("runtime", None)}
        found.update({pid: (f"host {name}", group) for pid, (name, group) in hosts.scan().items()})
        for pid, (label, group) in found.items():
            st = proc_status(pid)
            cpu = cpu_seconds(pid)
            if not st or cpu is None:
                continue
            cpu_first.setdefault(pid, cpu if first_scan else 0.0)
            cpu_last[pid] = (label, cpu)
            peak = peaks.setdefault(label, [0, 0, 0, 0.0])
            peak[0] = max(peak[0], st.get("VmRSS", 0))
            peak[1] = max(peak[1], st.get("VmHWM", 0))
            if group is not None:
                peak[2] = max(peak[2], cgroup_usage(group))
        first_scan = False
        if stop.wait(SAMPLE_SECONDS):
            break
    for pid, (label, cpu) in cpu_last.items():
        peaks[label][3] += cpu - cpu_first[pid]
    out.send(peaks)


def settled(runtime_pid: int) -> dict[str, int]:
    """VmRSS now, of the runtime and of every model host."""
    now = {"runtime": proc_status(runtime_pid).get("VmRSS", 0)}
    for pid, (name, _) in Hosts(runtime_pid).scan().items():
        rss = proc_status(pid).get("VmRSS")
        if rss is not None:
            now[f"host {name}"] = rss
    return now


# -- the attacks (each in its own process) ------------------------------------------------------


def attack_sleep(url: str, stop: Event, out: Connection, runtime_pid: int) -> None:
    """Attackers ask the sleep worker to sleep an hour, again as soon as each gets its 504."""
    counts: dict[int, int] = {}
    lock = threading.Lock()

    def one() -> None:
        client = Client(url)
        while not stop.is_set():
            status, _ = client.request("/sleep")
            with lock:
                counts[status] = counts.get(status, 0) + 1
            if status != 504:
                stop.wait(0.1)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(SLEEP_ATTACKERS)]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:  # every sleeper answered: none is left running into the next phase
        t.join(SLEEP_TIMEOUT_SECONDS * 3)
    out.send({"sleep replies": counts})


def attack_bomb(url: str, stop: Event, out: Connection, runtime_pid: int) -> None:
    """One attacker posting the memory bomb to the bomb worker, again as soon as it is answered."""
    bomb = bomb_model()
    client = Client(url)
    counts: dict[str, int] = {}
    while not stop.is_set():
        status, body = client.request("/bomb", "POST", bomb)
        try:
            doc = json.loads(body)
            what = f"{status} {doc.get('error') or doc.get('step')}"
        except ValueError:
            what = str(status)
        counts[what] = counts.get(what, 0) + 1
    out.send({"bomb replies": counts})


def _use_named(url: str, stop: Event, statuses: dict[int, int]) -> None:
    client = Client(url)
    while not stop.is_set():
        status, _ = client.request("/named")
        statuses[status] = statuses.get(status, 0) + 1
        stop.wait(NAMED_PAUSE_SECONDS)


def attack_crash(url: str, stop: Event, out: Connection, runtime_pid: int) -> None:
    """Kill the named model's host each time it is ready again; meanwhile request its worker."""
    statuses: dict[int, int] = {}
    user = threading.Thread(target=_use_named, args=(url, stop, statuses), daemon=True)
    user.start()
    hosts, client, kills = Hosts(runtime_pid), Client(url), 0
    while not stop.is_set():
        # Only a host that is ready: one killed while loading counts toward the model's failure.
        _, body = client.request("/readyz")
        try:
            ready = json.loads(body)["models"]["add"]["state"] == "ready"
        except (ValueError, KeyError):
            ready = False
        pids = hosts.pids("add") if ready else []
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
            kills += 1
        stop.wait(0.05 if not pids else 0.2)
    user.join(5)
    out.send({"host kills": kills, "named replies": statuses})


def attack_named(url: str, stop: Event, out: Connection, runtime_pid: int) -> None:
    """The crash loop's traffic without the kills: what the crashes add is the difference."""
    statuses: dict[int, int] = {}
    _use_named(url, stop, statuses)
    out.send({"named replies": statuses})


def attack_spin(url: str, stop: Event, out: Connection, runtime_pid: int) -> None:
    """No request at all: one process keeps one core busy, as a host's start does (a control)."""
    spins = 0
    while not stop.is_set():
        sum(range(100_000))
        spins += 1
    out.send({"spins": spins})


ATTACKS = {"sleep": attack_sleep, "bomb": attack_bomb, "crash": attack_crash, "named": attack_named,
           "spin": attack_spin}


# -- the victim ----------------------------------------------------------------------------------


def hello_phase(url: str, requests: int, clients: int, seconds: float) -> tuple[list[float], int]:
    """`requests` hello requests from `clients` threads, paced to spread over `seconds`."""
    interval = seconds * clients / requests
    per_client = [requests // clients + (1 if i < requests % clients else 0) for i in range(clients)]
    times: list[float] = []
    failed = [0]
    lock = threading.Lock()
    start = time.perf_counter() + 0.05
    limit = start + PHASE_LIMIT_SECONDS

    def run(i: int, n: int) -> None:
        client = Client(url, timeout=30)
        client.request("/hello")  # connect before timing
        mine, bad = [], 0
        for k in range(n):
            at = start + (k + i / clients) * interval
            pause = at - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            if time.perf_counter() > limit:
                break
            t0 = time.perf_counter()
            status, _ = client.request("/hello")
            mine.append(time.perf_counter() - t0)
            bad += status != 200
        client.close()
        with lock:
            times.extend(mine)
            failed[0] += bad

    threads = [threading.Thread(target=run, args=(i, n)) for i, n in enumerate(per_client)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return times, failed[0]


# -- the server ----------------------------------------------------------------------------------


def write_config(site: Path) -> Path:
    guests = {name: build_guest(src) for name, src in {
        "hello": ROOT / "examples" / "hello.c",
        "sleep": ROOT / "tests" / "guests" / "hostile_sleep.c",
        "nn_load": ROOT / "tests" / "guests" / "nn_load.c",
    }.items()}
    (site / "add.onnx").write_bytes(add_one_model())
    nn = {"enabled": True, "allowed_backends": ["onnxruntime"]}
    cfg = {
        "server": {"host": "127.0.0.1", "port": 0, "cache_dir": str(site / "_cache")},
        "models": [{"name": "add", "format": "onnx", "backend": "onnxruntime", "files": [str(site / "add.onnx")],
                    "memory_mib": MEMORY_MIB}],
        "workers": [
            {"name": "hello", "module": str(guests["hello"]), "route": "/hello"},
            {"name": "sleep", "module": str(guests["sleep"]), "route": "/sleep",
             "limits": {"timeout_seconds": SLEEP_TIMEOUT_SECONDS}},
            {"name": "bomb", "module": str(guests["nn_load"]), "route": "/bomb", "vars": {"INPUT_DIMS": "1,64"},
             "limits": {"memory_mib": MEMORY_MIB}, "wasi_nn": nn},
            {"name": "named", "module": str(guests["nn_load"]), "route": "/named",
             "vars": {"INPUT_DIMS": "1,64", "MODEL": "add"}, "wasi_nn": {**nn, "models": ["add"]}},
        ],
    }
    path = site / "runtime.json"  # JSON is YAML
    path.write_text(json.dumps(cfg, indent=1))
    return path


def start_server(config: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    wasminfer = Path(sys.executable).parent / "wasminfer"
    with log.open("wb") as sink:  # a file, not a pipe nobody reads: the server never blocks on its log
        proc = subprocess.Popen([str(wasminfer), "--log-level", "info", "serve", "--config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=sink)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        m = re.search(r"on (http://127\.0\.0\.1:\d+)", log.read_text())
        if m:
            url = m.group(1)
            client = Client(url)
            while time.monotonic() < deadline:
                if client.request("/readyz")[0] == 200:
                    return proc, url
                time.sleep(0.1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"the runtime did not start:\n{log.read_text()}")


def host_caps(log: str) -> dict[str, str]:
    """The memory cap each model host started with, as the runtime logged it."""
    started = re.finditer(r"model host (\S+) started \(pid \d+, (.*)\)$", log, re.M)
    return {f"host {m.group(1)}": m.group(2) for m in started}


# -- the run -------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    times: list[float]
    failed: int
    peaks: dict[str, list[float]]
    runtime_hwm: int
    settled: dict[str, int] = field(default_factory=dict)
    attack: dict[str, Any] = field(default_factory=dict)


def run_phase(name: str, url: str, runtime_pid: int, args: argparse.Namespace) -> Phase:
    ctx = mp.get_context("spawn")
    Path(f"/proc/{runtime_pid}/clear_refs").write_text("5")  # resets the runtime's VmHWM
    stop_sampler, stop_attack = ctx.Event(), ctx.Event()
    sample_rx, sample_tx = ctx.Pipe(duplex=False)
    attack_rx, attack_tx = ctx.Pipe(duplex=False)
    sampling = ctx.Process(target=sampler, args=(runtime_pid, stop_sampler, sample_tx), daemon=True)
    sampling.start()
    attacker = None
    if name in ATTACKS:
        attacker = ctx.Process(target=ATTACKS[name], args=(url, stop_attack, attack_tx, runtime_pid),
                               daemon=True)
        attacker.start()
        time.sleep(1.0)  # the attack is under way before the first timed request
    say(f"{name}: {args.requests} hello requests over ~{args.phase_seconds} s")
    times, failed = hello_phase(url, args.requests, args.clients, args.phase_seconds)
    attack: dict[str, Any] = {}
    if attacker is not None:
        stop_attack.set()
        if attack_rx.poll(30):
            attack = attack_rx.recv()
        attacker.join(5)
        if attacker.is_alive():
            attacker.terminate()
    stop_sampler.set()
    peaks = sample_rx.recv() if sample_rx.poll(10) else {}
    sampling.join(5)
    hwm = proc_status(runtime_pid).get("VmHWM", 0)
    phase = Phase(name, times, failed, peaks, hwm, attack=attack)
    if attacker is not None:
        time.sleep(SETTLE_SECONDS)
        phase.settled = settled(runtime_pid)
        ready = Client(url)  # the next phase starts once a restarted model host is up again
        deadline = time.monotonic() + 60
        while ready.request("/readyz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
    return phase


def pct(times: list[float], q: float) -> float:
    return float(np.percentile(np.array(times) * 1e3, q))


def report(phases: list[Phase], caps: dict[str, str], args: argparse.Namespace) -> None:
    quiet = [t for p in phases if p.name == "quiet" for t in p.times]
    q99 = pct(quiet, 99)
    print(f"\nhello under attack: {args.requests} hello requests per phase from {args.clients} clients, paced over "
          f"~{args.phase_seconds} s; quiet = {len(quiet) // args.requests} quiet phases together")
    print(f"{'phase':<12}{'requests':>8}{'failed':>8}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'p99/quiet':>11}")
    rows = [("quiet, all", quiet, sum(p.failed for p in phases if p.name == "quiet"))]
    n = 0
    for p in phases:
        n += p.name == "quiet"
        rows.append((f"quiet {n}" if p.name == "quiet" else p.name, p.times, p.failed))
    verdicts = []
    for name, times, failed in rows:
        ratio = pct(times, 99) / q99
        print(f"{name:<12}{len(times):>8}{failed:>8}{pct(times, 50):>10.2f}{pct(times, 99):>10.2f}"
              f"{pct(times, 100):>10.2f}{ratio:>11.2f}")
        if not name.startswith("quiet"):
            verdicts.append((name, ratio))
    for name, ratio in verdicts:
        verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
        print(f"  {name}: p99 {ratio:.2f}x quiet (target <= {TARGET_RATIO:.0f}x: {verdict})")

    print("\nattacks")
    for p in phases:
        if p.attack:
            print(f"  {p.name:<8}" + "; ".join(f"{k}: {v}" for k, v in p.attack.items()))

    from wasminfer_runtime.modelhost.caps import CGROUP_BASELINE_BYTES

    print(f"\nmemory (MiB): peak = max of 10 ms samples; HWM = VmHWM (the runtime's reset before each phase, a "
          f"host's over its life); cgroup = its memory cgroup's usage, limited to the cap + "
          f"{CGROUP_BASELINE_BYTES // _MIB} MiB for its libraries; settled = VmRSS {SETTLE_SECONDS:.0f} s after the "
          f"attack ('-': no process then; a worker's host starts again on its next load)")
    print("CPU s = CPU time the process(es) used during the phase (a host's: all its processes, restarts included)")
    print(f"{'phase':<8}{'process':<16}{'peak RSS':>9}{'HWM':>6}{'cgroup':>8}{'settled':>9}{'CPU s':>7}  limit")

    def mib(b: float) -> str:
        return f"{b / _MIB:.0f}" if b else "-"

    for p in phases:
        if p.name == "quiet" and p is not phases[0]:
            continue
        labels = ["runtime", *sorted(k for k in {*p.peaks, *p.settled} if k != "runtime")]
        for label in labels:
            rss, hwm, group, cpu = p.peaks.get(label, [0, 0, 0, 0.0])
            if label == "runtime":
                hwm, limit = p.runtime_hwm, "none (workers' memory_mib caps their guests' linear memory)"
            else:
                limit = caps.get(label, "?")
            print(f"{p.name:<8}{label:<16}{mib(rss):>9}{mib(hwm):>6}{mib(group):>8}{mib(p.settled.get(label, 0)):>9}"
                  f"{cpu:>7.2f}  {limit}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="hello requests per phase")
    parser.add_argument("--clients", type=int, default=3, help="hello client threads")
    parser.add_argument("--phase-seconds", type=float, default=6.0, help="how long a phase's requests are spread over")
    parser.add_argument("--attacks", default="sleep,bomb,crash", help="which attacks, in order")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="wasminfer-bench-") as tmp:
        site = Path(tmp)
        config = write_config(site)
        log = site / "runtime.log"
        runtime, url = start_server(config, log)
        say(f"runtime pid {runtime.pid} at {url}")
        try:
            Client(url).request("/bomb", "POST", add_one_model())  # the bomb worker's host is up, as after use
            warm = Client(url)
            for _ in range(50):
                warm.request("/hello")
                warm.request("/named")
            phases = [run_phase("quiet", url, runtime.pid, args)]
            for name in args.attacks.split(","):
                phases.append(run_phase(name, url, runtime.pid, args))
                phases.append(run_phase("quiet", url, runtime.pid, args))
            caps = host_caps(log.read_text())
        finally:
            runtime.terminate()
            try:
                runtime.wait(timeout=30)
            except subprocess.TimeoutExpired:
                runtime.kill()
    report(phases, caps, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
