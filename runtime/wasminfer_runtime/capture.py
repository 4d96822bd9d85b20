"""A guest's stdout and stderr, captured in memory files and held to a size limit.

wasmtime writes guest output straight into a memfd (an in-memory file), with no Python on the
write path; a callback stream would cost a thread hop and ~0.1 ms per invocation. The limit is
enforced while the guest runs: the epoch ticker calls `check_all` every tick, and a file past
the limit is sealed against writes, so the guest's next write fails and a flood costs at most
one tick's worth of writes beyond the limit.

Each invocation thread keeps its files for the next invocation (emptied, not closed): two
memfd_create and two close calls less per request. A sealed file is never reused.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading

log = logging.getLogger(__name__)

MAX_OUTPUT_BYTES = 64 * 1024 * 1024

_live: set[GuestOutput] = set()
_lock = threading.Lock()
_spares = threading.local()  # name -> an emptied output file this thread may use again


class GuestOutput:
    """One output stream of one invocation; `path` is what wasmtime opens."""

    __slots__ = ("fd", "path", "path_bytes", "sealed", "_name", "__weakref__")

    def __init__(self, name: str) -> None:
        self.fd = os.memfd_create(f"wasminfer-{name}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        self.path = f"/proc/self/fd/{self.fd}"
        self.path_bytes = self.path.encode()
        self.sealed = False
        self._name = name

    @classmethod
    def take(cls, name: str) -> GuestOutput:
        """An empty output file for one invocation: this thread's spare one, or a new one."""
        out = _thread_spares().pop(name, None) or cls(name)
        with _lock:
            _live.add(out)
        return out

    def _check(self) -> None:
        if not self.sealed and os.fstat(self.fd).st_size > MAX_OUTPUT_BYTES:
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE)
            self.sealed = True

    def collect(self) -> tuple[bytes, bool]:
        """(the output, up to the limit; whether the guest wrote more) and the file is closed."""
        with _lock:
            _live.discard(self)
        keep = False
        try:
            size = os.fstat(self.fd).st_size
            data = os.pread(self.fd, min(size, MAX_OUTPUT_BYTES), 0)
            over = self.sealed or size > MAX_OUTPUT_BYTES
            if not over:
                os.ftruncate(self.fd, 0)
                keep = True
        finally:
            if keep:
                _thread_spares()[self._name] = self
            else:
                os.close(self.fd)
        return data, over


def _thread_spares() -> dict[str, GuestOutput]:
    spares: dict[str, GuestOutput] | None = getattr(_spares, "files", None)
    if spares is None:
        spares = _spares.files = {}
    return spares


def check_all() -> None:
    """Seal every live output past the limit (called from the epoch ticker)."""
    with _lock:
        for out in _live:
            try:
                out._check()
            except OSError as err:
                log.warning("cannot check guest output %s: %s", out.path, err)
