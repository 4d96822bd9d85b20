"""Which replicas of a model pool hold which models: rendezvous hashing with bounded loads.

A pool serves many models from few model-server replicas. Each model goes on `copies` replicas
(default 2: one can restart while the other serves): its highest-ranked replicas by
hash(model, replica) that still have room. Room is capped at (1 + slack) times the mean load, so no
replica holds more than 25% above its share by default.

Why this scheme: a replica's arrival or departure changes only the models that rank it among their
first choices (about copies/n of them, each moving one copy: 1/n of all copies), since every other
model's ranking of the remaining replicas is unchanged; the cap moves a few more where a replica was
full. Everyone who knows the model names and the replica names computes the same placement (the
operator, to tell each replica what to load; the runtime, to route a model's calls), with nothing
stored or exchanged.
"""

from __future__ import annotations

import argparse
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence

DEFAULT_COPIES = 2
DEFAULT_SLACK = 0.25


def _score(model: str, replica: str) -> int:
    digest = hashlib.blake2b(f"{model}\0{replica}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _order(model: str) -> int:
    return _score(model, "")


def capacity(models: int, replicas: int, copies: int = DEFAULT_COPIES, slack: float = DEFAULT_SLACK) -> int:
    """The most model copies one replica holds."""
    if replicas == 0:
        return 0
    return math.ceil((1 + slack) * models * min(copies, replicas) / replicas)


def place(
    models: Iterable[str], replicas: Sequence[str], copies: int = DEFAULT_COPIES, slack: float = DEFAULT_SLACK
) -> dict[str, tuple[str, ...]]:
    """model -> the replicas holding it (best first). The same names give the same answer in any
    order; with fewer replicas than `copies`, every replica holds every model."""
    if copies < 1:
        raise ValueError("copies must be at least 1")
    if slack < 0:
        raise ValueError("slack must not be negative")
    names = sorted(set(models))
    pool = sorted(set(replicas))
    if not pool:
        return {m: () for m in names}
    want = min(copies, len(pool))
    cap = capacity(len(names), len(pool), want, slack)
    load = dict.fromkeys(pool, 0)
    out: dict[str, tuple[str, ...]] = {}
    # Models in an order of their own (not of the names' sort): which ones meet a full replica
    # does not then depend on how they are named.
    for model in sorted(names, key=_order):
        ranked = sorted(pool, key=lambda r: _score(model, r), reverse=True)
        chosen = [r for r in ranked if load[r] < cap][:want]
        for r in chosen:
            load[r] += 1
        out[model] = tuple(chosen)
    return out


def held_by(placement: Mapping[str, Sequence[str]], replica: str) -> list[str]:
    """The models one replica loads."""
    return sorted(m for m, rs in placement.items() if replica in rs)


def loads(placement: Mapping[str, Sequence[str]], replicas: Sequence[str]) -> dict[str, int]:
    out = dict.fromkeys(replicas, 0)
    for rs in placement.values():
        for r in rs:
            out[r] = out.get(r, 0) + 1
    return out


def moved_copies(before: Mapping[str, Sequence[str]], after: Mapping[str, Sequence[str]]) -> int:
    """Copies that must load somewhere new going from `before` to `after`."""
    return sum(len(set(after[m]) - set(before.get(m, ()))) for m in after)


# --- the command-line options of a pool replica (`wasminfer model-server`, `wasminfer fetch`) -------


class PoolArgsError(ValueError):
    pass


def add_pool_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """--pool-replicas, --pool-replica, --pool-copies: this process is one replica of a pool and
    `what` (loads, fetches) only the models placed on it."""
    parser.add_argument("--pool-replicas", default="",
                        help=f"the replicas of the model pool this process is one of, comma-separated: it {what} "
                        "only the models wasminfer_runtime.modelpool places on it")  # fmt: skip
    parser.add_argument("--pool-replica", default="", help="this replica's name among --pool-replicas")
    parser.add_argument("--pool-copies", type=int, default=DEFAULT_COPIES, help="replicas holding each model (default: %(default)s)")


def pool_share(args: argparse.Namespace, models: Sequence[str]) -> dict[str, tuple[str, ...]] | None:
    """With pool options: each model of `models` NOT placed on this replica, with its holders; None
    without them. PoolArgsError for options that do not go together."""
    replicas = [r for r in args.pool_replicas.split(",") if r]
    if bool(replicas) != bool(args.pool_replica) or (replicas and args.pool_replica not in replicas):
        raise PoolArgsError("--pool-replica must be one of --pool-replicas (both set, or neither)")
    if args.pool_copies < 1:
        raise PoolArgsError("--pool-copies must be at least 1")
    if not replicas:
        return None
    placement = place(models, replicas, args.pool_copies)
    return {m: holders for m, holders in placement.items() if args.pool_replica not in holders}
