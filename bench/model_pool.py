"""How a model pool spreads its models (runtime/wasminfer_runtime/modelpool.py): 1,000 models over
8 model-server replicas, 2 copies each.

Measured: the load imbalance (max/mean copies per replica; target <= 1.25), the share of copies that
must load somewhere new when one replica is added (target <= 1.5 x 1/n, n the replicas after) and when
one is removed, and the time to compute a placement (median of a few).

    python bench/model_pool.py [--models 1000] [--replicas 8] [--copies 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from wasminfer_runtime.modelpool import loads, moved_copies, place

TARGET_IMBALANCE = 1.25
TARGET_MOVED = 1.5  # x 1/n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--copies", type=int, default=2)
    opts = parser.parse_args()
    models = [f"model-{i:05}" for i in range(opts.models)]
    replicas = [f"pool-{i}" for i in range(opts.replicas)]
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        before = place(models, replicas, opts.copies)
        times.append(time.perf_counter() - t0)
    counts = loads(before, replicas)
    mean = sum(counts.values()) / len(counts)
    imbalance = max(counts.values()) / mean
    copies = sum(counts.values())
    added = place(models, [*replicas, f"pool-{opts.replicas}"], opts.copies)
    add_share = moved_copies(before, added) / copies
    add_models = sum(1 for m in models if set(added[m]) != set(before[m])) / len(models)
    removed = place(models, replicas[:-1], opts.copies)
    remove_share = moved_copies(before, removed) / copies
    n_add = opts.replicas + 1
    print(f"\nmodel pool: {opts.models} models x {opts.copies} copies over {opts.replicas} replicas")
    print(f"copies per replica: min {min(counts.values())}, max {max(counts.values())}, mean {mean:.1f}")
    print(f"load imbalance (max/mean): {imbalance:.3f} (target <= {TARGET_IMBALANCE}: {'met' if imbalance <= TARGET_IMBALANCE else 'NOT met'})")
    print(f"one replica added: {add_share:.3f} of the copies move ({add_models:.3f} of the models gain a new replica); "
          f"1/n = {1 / n_add:.3f} (target <= {TARGET_MOVED} x 1/n = {TARGET_MOVED / n_add:.3f}: "
          f"{'met' if add_share <= TARGET_MOVED / n_add else 'NOT met'})")  # fmt: skip
    print(f"one replica removed: {remove_share:.3f} of the copies move (what it held: {counts[replicas[-1]] / copies:.3f})")
    print(f"placement computed in {statistics.median(times) * 1e3:.1f} ms (median of {len(times)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
