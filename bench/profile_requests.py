"""Where a request's host time goes: a sampling profile of `wasminfer serve` under load.

One serving process (`--processes 1`) serves two routes: hello (examples/hello.wasm, no model) and
model (bench/guests/nn_named.c on the named model fc256, a 256x256 fully connected layer: the
inference is a few microseconds, so what is measured is the request path). bench/loadgen keeps
`--clients` keep-alive connections busy on one route while py-spy samples the server's threads
that hold the GIL (`--gil`): Python's share of the work, which one process cannot spread over
cores. For each route it prints requests/s, the share of samples with the GIL held, and the
functions with the most samples (self and inclusive), and keeps the samples as collapsed stacks
(OUT/ROUTE.txt: the input of flamegraph.pl, or open it in speedscope) for a flame graph.

    python bench/profile_requests.py [--seconds 8] [--clients 8] [--out .artifacts/profiles]
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import ROOT, build_guest, fetch_model, say
from processes import build_loadgen, free_port, start, stop

RATE = 500  # samples per second
_FRAME = re.compile(r"^(?P<fn>\S+) \((?P<file>[^:]*)(?::\d+)?\)$")


def py_spy() -> str:
    exe = Path(sys.executable).parent / "py-spy"
    if not exe.is_file():
        raise SystemExit("py-spy is missing: pip install -e '.[dev]' installs it")
    return str(exe)


def short(frame: str) -> str:
    """`fn (file)` with the file relative to its package."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for marker in ("site-packages/", "wasminfer_runtime/", "lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            path = path.split("/", 1)[1] if marker == "lib/python3." else path
            break
    return f"{m.group('fn')} ({path})"


def summarize(raw: Path, seconds: float, top: int) -> list[str]:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = [short(f) for f in stack.split(";")[1:]]  # the first is the thread
        if frames:
            own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    out = [f"samples with the GIL held: {total} ({total / (RATE * seconds):.0%} of the time)"]
    out.append(f"{'self':>7}  function")
    out += [f"{c / total:>7.1%}  {f}" for f, c in own.most_common(top)]
    out.append(f"{'incl.':>7}  function (those under a quarter of the samples)")
    # Without the frames every sample passes through (thread and event loop entry points).
    ours = [(f, c) for f, c in inclusive.most_common() if c < 0.25 * total]
    out += [f"{c / total:>7.1%}  {f}" for f, c in ours[:top]]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--out", type=Path, default=ROOT / ".artifacts" / "profiles")
    args = p.parse_args()
    spy = py_spy()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wasminfer-profile-") as tmp_name:
        tmp = Path(tmp_name)
        loadgen = build_loadgen(tmp)
        site = tmp / "site"
        site.mkdir()
        shutil.copy(build_guest(ROOT / "examples" / "hello.c"), site / "hello.wasm")
        shutil.copy(ROOT / "examples" / "hello.toml", site / "hello.toml")
        shutil.copy(build_guest(ROOT / "bench" / "guests" / "nn_named.c"), site / "model.wasm")
        fc256 = fetch_model("fc256")
        (site / "model.toml").write_text(
            'name = "model"\n[vars]\nMODEL = "fc256"\nINPUT_DIMS = "1,256"\nINPUT = "zeros"\n'
            '[features.wasi_nn]\nallowed_backends = ["openvino"]\n'
            f'[[features.wasi_nn.preload_models]]\nbackend = "openvino"\nprovider = {{ type = "local", dir = "{fc256}" }}\n')
        port = free_port()
        wasminfer = str(Path(sys.executable).parent / "wasminfer")
        server = start("wasminfer", [wasminfer, "--log-level", "warning", "serve", str(site), "--host", "127.0.0.1",
                                     "--port", str(port), "--processes", "1", "--cache-dir", str(tmp / "cache")],
                       f"http://127.0.0.1:{port}/model", tmp / "server.log")
        try:
            for route in ("hello", "model"):
                url = f"http://127.0.0.1:{port}/{route}"
                load = subprocess.Popen([str(loadgen), "-url", url, "-c", str(args.clients), "-d",
                                         f"{args.seconds + 2}s", "-warmup", "1s"], stdout=subprocess.PIPE, text=True)
                time.sleep(1.5)
                raw = args.out / f"{route}.txt"
                say(f"profiling /{route} for {args.seconds:g} s")
                subprocess.run([spy, "record", "--pid", str(server.proc.pid), "--gil", "--rate", str(RATE),
                                "--duration", str(int(args.seconds)), "--nonblocking", "--format", "raw",
                                "-o", str(raw)], check=True, capture_output=True)
                out, _ = load.communicate()
                doc = json.loads(out)
                print(f"\n/{route}: {args.clients} keep-alive clients, {doc['rps']:.0f} req/s, "
                      f"median {doc['median_ms']:.2f} ms")
                print("\n".join(summarize(raw, int(args.seconds), args.top)))
        finally:
            stop([server])
    say(f"collapsed stacks (flame graph input) in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
