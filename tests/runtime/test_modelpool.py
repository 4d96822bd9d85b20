"""Placement of a pool's models on its replicas: balanced, stable under a replica's arrival or
departure, and the same wherever it is computed."""

from __future__ import annotations

import random

import pytest

from wasminfer_runtime.modelpool import capacity, held_by, loads, moved_copies, place

MODELS = [f"model-{i:04}" for i in range(1000)]
REPLICAS = [f"pool-{i}" for i in range(8)]


def test_the_same_names_give_the_same_placement_in_any_order() -> None:
    shuffled_models, shuffled_replicas = MODELS[:], REPLICAS[:]
    random.Random(5).shuffle(shuffled_models)
    random.Random(6).shuffle(shuffled_replicas)
    assert place(MODELS, REPLICAS) == place(shuffled_models, shuffled_replicas)


def test_every_model_on_distinct_replicas_within_the_cap() -> None:
    placement = place(MODELS, REPLICAS, copies=2)
    assert all(len(set(rs)) == 2 for rs in placement.values())
    counts = loads(placement, REPLICAS)
    assert sum(counts.values()) == 2000
    assert max(counts.values()) <= capacity(1000, 8) == 313
    assert max(counts.values()) / (2000 / 8) <= 1.25
    assert sorted(held_by(placement, "pool-3")) == sorted(m for m, rs in placement.items() if "pool-3" in rs)


@pytest.mark.parametrize("n", [3, 8, 16])
def test_a_replica_added_moves_about_its_share(n: int) -> None:
    replicas = [f"r{i}" for i in range(n)]
    before, after = place(MODELS, replicas), place(MODELS, [*replicas, "new"])
    share = moved_copies(before, after) / 2000
    assert share <= 1.5 / (n + 1), f"{share:.3f} of the copies moved for 1 of {n + 1} replicas"
    assert all(len(after[m]) == 2 for m in MODELS)


def test_a_replica_removed_moves_only_what_it_held() -> None:
    before = place(MODELS, REPLICAS)
    after = place(MODELS, REPLICAS[:-1])
    gone = held_by(before, REPLICAS[-1])
    assert moved_copies(before, after) == len(gone)
    unchanged = [m for m in MODELS if m not in gone]
    assert all(set(after[m]) == set(before[m]) for m in unchanged)


def test_small_pools_and_bad_arguments() -> None:
    assert place(["a", "b"], ["only"], copies=2) == {"a": ("only",), "b": ("only",)}
    assert place(["a"], []) == {"a": ()}
    with pytest.raises(ValueError, match="copies"):
        place(["a"], ["r"], copies=0)
