"""Run every benchmark, one after the other, each printing its own table.

    python bench/run.py                 # all
    python bench/run.py wasinn_overhead # some, by script name

Run on an otherwise idle machine: every table compares against a baseline measured in the same
run, but two cores shared with a build still move the numbers.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SCRIPTS = ["wasinn_overhead", "named_vs_load", "http_latency", "under_attack", "overload", "processes", "profile_requests", "cli_start", "remote_models", "model_pool", "ggml_tokens", "supply_chain", "operator_scale", "real_node", "supply_chain_pods"]


def main(argv: list[str]) -> int:
    chosen = argv or [s for s in SCRIPTS if (BENCH / f"{s}.py").exists()]
    failed = []
    for name in chosen:
        print(f"\n=== bench/{name}.py", flush=True)
        if subprocess.run([sys.executable, str(BENCH / f"{name}.py")]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
