"""Progress lines for long transfers: a line per file every few seconds while bytes arrive."""

from __future__ import annotations

import logging
import time

PROGRESS_EVERY_SECONDS = 5.0


def mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


class Progress:
    """Logs a line per file every few seconds while bytes arrive."""

    def __init__(self, log: logging.Logger, label: str, total: int | None, start: int = 0) -> None:
        self.log = log
        self.label, self.total, self.done = label, total, start
        self.started = self.last = time.monotonic()
        self.start = start

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_SECONDS:
            self.last = now
            rate = (self.done - self.start) / max(now - self.started, 1e-6)
            if self.total:
                pct = 100.0 * self.done / self.total
                self.log.info("%s: %s / %s (%.0f%%), %s/s", self.label, mib(self.done), mib(self.total), pct, mib(rate))
            else:
                self.log.info("%s: %s, %s/s", self.label, mib(self.done), mib(rate))
