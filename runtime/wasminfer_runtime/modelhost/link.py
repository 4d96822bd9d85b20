"""A named model's host that the pod's serving supervisor runs, as one serving process sees it.

With several serving processes (`serve --processes N`), each named model is loaded once, in one
host the supervisor starts, watches and restarts; every serving process connects to it. The
supervisor tells the processes each change of the host (`HostEvent`, one JSON line on their
stdin); a HostLink turns those into what the runtime's callers expect of a host: connect, the
generation that makes old contexts stale, and why it is down.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass

from wasminfer_runtime.modelhost.client import HostDown, HostEndpoint

log = logging.getLogger(__name__)

StateHook = Callable[[str, str | None], None]  # (state, reason), as supervisor.ModelHost reports it


@dataclass(frozen=True)
class HostEvent:
    """One change of a named model's host, from the supervisor to its serving processes."""

    model: str
    state: str  # starting, ready, restarting, failed, stopped
    reason: str | None = None
    generation: int = 0
    restarts: int = 0
    socket: str | None = None
    pid: int | None = None

    def line(self) -> bytes:
        """The event as the supervisor writes it: one JSON line."""
        return (json.dumps(asdict(self)) + "\n").encode()

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> HostEvent:
        def opt_int(key: str) -> int | None:
            v = doc.get(key)
            return v if isinstance(v, int) else None

        def opt_str(key: str) -> str | None:
            v = doc.get(key)
            return v if isinstance(v, str) else None

        return cls(model=str(doc["model"]), state=str(doc["state"]), reason=opt_str("reason"),
                   generation=opt_int("generation") or 0, restarts=opt_int("restarts") or 0,
                   socket=opt_str("socket"), pid=opt_int("pid"))


class HostLink(HostEndpoint):
    def __init__(self, name: str, poll_seconds: float, on_state: StateHook | None = None) -> None:
        self.name = name
        self.poll_seconds = poll_seconds
        self.on_state = on_state
        self.generation = 0
        self.restarts = 0
        self.state = "starting"
        self.reason: str | None = None
        self._socket: str | None = None
        self._pid: int | None = None
        self._changed = threading.Condition()

    def update(self, event: HostEvent) -> None:
        with self._changed:
            self.state, self.reason = event.state, event.reason
            self.generation, self.restarts = event.generation, event.restarts
            self._socket, self._pid = event.socket, event.pid
            self._changed.notify_all()
        if self.on_state is not None:
            self.on_state(event.state, event.reason)

    def wait_ready(self, closing: threading.Event) -> None:
        """Block until the host serves; HostDown when it failed, or this process is closing."""
        with self._changed:
            while self.state != "ready":
                if self.state in ("failed", "stopped") or closing.is_set():
                    raise HostDown(f"model host {self.name}: {self.reason or self.state}")
                self._changed.wait(0.2)

    def connect(self) -> socket.socket:
        with self._changed:
            path, state = self._socket, self.state
        if state != "ready" or path is None:
            raise self._down()
        return self.dial(path)

    def gone_error(self, what: str, err: BaseException | None = None) -> HostDown:
        return self._down(what)

    def _down(self, what: str | None = None) -> HostDown:
        about = f" during {what}" if what else ""
        why = self.reason or (f"it is {self.state}" if self.state != "ready" else "its connection broke")
        return HostDown(f"the model host {self.name} failed{about}: {why}")

    def kill(self, reason: str) -> None:
        """Kill the shared host (it hangs); the supervisor sees it die and restarts it."""
        with self._changed:
            pid = self._pid
        if pid is None:
            return
        log.warning("model host %s (pid %d, shared by the serving processes): killing it: %s", self.name, pid, reason)
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass  # already gone
