"""The deadline of the invocation running on this thread, for host calls that block.

The executor sets it around each invocation; a host call that waits (a model host's compute or
load, a WASI sleep) waits at most until then.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_local = threading.local()


def bind(deadline: float | None) -> None:
    """Set (or clear, with None) this thread's deadline, in time.monotonic seconds."""
    _local.deadline = deadline


@contextmanager
def bound(deadline: float) -> Iterator[None]:
    """Run the block with `deadline` (time.monotonic) as this thread's deadline."""
    previous = getattr(_local, "deadline", None)
    _local.deadline = deadline
    try:
        yield
    finally:
        _local.deadline = previous


def remaining() -> float | None:
    """Seconds left before this thread's deadline (never negative); None when it has none."""
    deadline: float | None = getattr(_local, "deadline", None)
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())
