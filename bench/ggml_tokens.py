"""Tokens per second and time to first token of the GGML backend through a guest, against llama.cpp
called directly, on the same tiny llama GGUF (tests/guests/tiny_llama.py), greedy, in one process:

- llama.cpp (direct): llama-cpp-python's `Llama.generate`, its own sampler, on the model loaded once
- guest, streamed:    tests/guests/nn_llm.wasm in a real instance: load_by_name_with_config, set_input,
                      then compute_single / get_output_single per token (WasmEdge's llama-stream flow)
- guest, whole:       the same guest with one compute of n-predict tokens (WasmEdge's llama flow)
- component, whole:   tests/guests/llm_component.wasm, the WIT interface: one compute of n-predict
                      tokens with prompt and metadata tensors

Time to first token: prompt in to the first token out (for a guest, the whole invocation of one
token: instance, load_by_name, a context, the prompt). Tokens per second: from the difference
between generating 1 and 1 + N tokens, so the first token's cost is not in it. Medians of rounds
that interleave the rows.

Target: the guest's tokens/s >= 0.95x llama.cpp's.

    python bench/ggml_tokens.py [--tokens 256] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import ROOT, say

sys.path.insert(0, str(ROOT / "tests" / "guests"))
import tiny_llama  # noqa: E402

TARGET_RATIO = 0.95
PROMPT = "hello world, once upon a time"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=256, help="tokens generated after the first")
    parser.add_argument("--rounds", type=int, default=7)
    opts = parser.parse_args()
    try:
        import llama_cpp
    except ImportError:
        print("llama-cpp-python is not installed: run `make llama-cpp`", file=sys.stderr)
        return 1
    from harness import build_guest

    from wasminfer_runtime.component_executor import new_executor
    from wasminfer_runtime.config import ModelConfig, WorkerConfig
    from wasminfer_runtime.engine import RuntimeEngine
    from wasminfer_runtime.executor import WorkerExecutor
    from wasminfer_runtime.metrics import Metrics
    from wasminfer_runtime.models import ModelRegistry

    folder = Path(tempfile.mkdtemp(prefix="wasminfer-ggml-bench-"))
    model = tiny_llama.build(folder / "tiny.gguf")
    guest = build_guest(ROOT / "tests" / "guests" / "nn_llm.c")
    component = build_guest(ROOT / "tests" / "guests" / "llm_component.c")
    n_ctx = 1024
    config = json.dumps({"temp": 0.0, "ctx-size": n_ctx, "ignore-eos": True})  # threads: both sides' default

    llm = llama_cpp.Llama(model_path=str(model), n_ctx=n_ctx, verbose=False)
    prompt_tokens = llm.tokenize(PROMPT.encode(), add_bos=True, special=True)

    def direct(n: int) -> float:
        started = time.perf_counter()
        for i, _ in enumerate(llm.generate(prompt_tokens, temp=0.0, top_k=1, reset=True)):
            if i + 1 == n:
                break
        return time.perf_counter() - started

    metrics = Metrics()
    registry = ModelRegistry(metrics, "in-process")
    registry.load(ModelConfig.model_validate({"name": "tiny", "format": "ggml", "files": [str(model)]}))
    def worker(module: Path) -> WorkerConfig:
        return WorkerConfig.model_validate({"name": module.stem, "module": str(module), "route": "/",
                                            "wasi_nn": {"enabled": True, "models": ["tiny"]}, "limits": {"timeout_seconds": 300}})

    rows: dict[str, Any] = {}
    with RuntimeEngine(folder / "cache", metrics) as engine:
        executor = WorkerExecutor(engine, registry, worker(guest))
        wit = new_executor(engine, registry, worker(component))

        def streamed(n: int) -> float:
            started = time.perf_counter()
            inv = executor.invoke(b"", ["stream", "tiny", PROMPT, config, str(n)])
            took = time.perf_counter() - started
            assert inv.outcome == "ok" and inv.stdout.count(b"\ntoken ") == n, (inv.message, inv.stdout[-300:])
            return took

        def whole(n: int) -> float:
            started = time.perf_counter()
            inv = executor.invoke(b"", ["whole", "tiny", PROMPT, json.dumps({**json.loads(config), "n-predict": n})])
            took = time.perf_counter() - started
            assert inv.outcome == "ok" and b"\ntext " in inv.stdout, (inv.message, inv.stdout[-300:])
            return took

        def wit_whole(n: int) -> float:
            started = time.perf_counter()
            inv = wit.invoke(b"", ["tiny", f"prompt={PROMPT}", "metadata=" + json.dumps({**json.loads(config), "n-predict": n})])
            took = time.perf_counter() - started
            assert inv.outcome == "ok" and b"output 0 " in inv.stdout, (inv.message, inv.stdout[-300:])
            return took

        rows = {"llama.cpp (direct)": direct, "guest, streamed": streamed, "guest, whole": whole, "component, whole": wit_whole}
        for fn in rows.values():  # warm: the module compiled, llama.cpp's first allocations made
            fn(2)
        first: dict[str, list[float]] = {k: [] for k in rows}
        per_token: dict[str, list[float]] = {k: [] for k in rows}
        for r in range(opts.rounds):
            for name, fn in rows.items():
                one = fn(1)
                many = fn(1 + opts.tokens)
                first[name].append(one)
                per_token[name].append((many - one) / opts.tokens)
            say(f"round {r + 1}/{opts.rounds}: " + ", ".join(f"{k} {1 / per_token[k][-1]:.0f} tok/s" for k in rows))

    base = 1 / statistics.median(per_token["llama.cpp (direct)"])
    print(f"\nGGML backend, tiny llama GGUF ({tiny_llama.N_LAYER} layers, {tiny_llama.N_EMBD} wide), greedy, "
          f"{opts.tokens} tokens after the first, median of {opts.rounds} rounds")
    print(f"{'row':<22} {'tokens/s':>10} {'ratio':>7} {'first token ms':>15}")
    for name in rows:
        rate = 1 / statistics.median(per_token[name])
        print(f"{name:<22} {rate:10.0f} {rate / base:7.3f} {statistics.median(first[name]) * 1000:15.2f}")
    worst = min(1 / statistics.median(per_token[k]) for k in rows if k != "llama.cpp (direct)") / base
    print(f"\nthrough a guest: {worst:.3f}x llama.cpp's tokens/s (target >= {TARGET_RATIO}: {'met' if worst >= TARGET_RATIO else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
