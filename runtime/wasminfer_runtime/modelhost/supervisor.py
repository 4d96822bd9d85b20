"""One model host process: started, watched, capped, killed and restarted by the runtime.

A named model's host loads its model at start and is restarted (with backoff) whenever it dies,
reloading the model; while it is down the model is not ready. A worker's host for the models
its guests `load` starts on the first load and, when it dies, on the next one: what was loaded
in it is gone, and the guests that held it get `runtime_error`.

The old process is always reaped before a new one starts, so a model is never loaded twice at
once.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from wasminfer_runtime import deadlines
from wasminfer_runtime.backends.base import BackendError, Graph, ShapeBounds
from wasminfer_runtime.config import BackendName, Device, ModelConfig, ModelFormat, ModelOptions
from wasminfer_runtime.modelhost import caps, wire
from wasminfer_runtime.modelhost.client import HostDown, HostEndpoint, RemoteGraph

log = logging.getLogger(__name__)

StateHook = Callable[[str, str | None], None]  # (state, reason): starting, ready, restarting, failed

_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 30.0
_CRASHES_BEFORE_FAILED = 3  # deaths in a row before the first ready: the model cannot be served
_START_TIMEOUT = 120.0  # seconds for a host without a model to come up
STOP_SECONDS = 3.0  # a host that has not exited this long after its lifeline closed is killed


__all__ = ["HostDown", "ModelHost", "STOP_SECONDS"]


class ModelHost(HostEndpoint):
    def __init__(self, name: str, *, backends: Sequence[BackendName], memory_bytes: int,
                 model: ModelConfig | None = None, on_state: StateHook | None = None,
                 poll_seconds: float = 0.0) -> None:
        self.name = name
        self.poll_seconds = poll_seconds  # see wire.Spinner
        self.model = model
        self.backends = list(backends)
        self.memory_bytes = memory_bytes
        self.on_state = on_state
        self.generation = 0
        self.state = "stopped"
        self.reason: str | None = None
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._cap = caps.MemoryCap("none", 0)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._closing = False
        self._kill_reason: str | None = None
        self._crashes = 0  # deaths since the host was last ready

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            self._settle_locked()
            if self.state in ("starting", "ready", "restarting") or self._closing:
                return
            self._spawn_locked()

    def _settle_locked(self) -> None:
        """A process that has exited but whose watcher has not caught up yet: let it catch up."""
        proc, end = self._proc, time.monotonic() + 5.0
        while proc is not None and proc.poll() is not None and self._proc is proc and time.monotonic() < end:
            self._changed.wait(0.05)

    def wait_ready(self, timeout: float | None) -> None:
        """Block until the host serves (HostDown when it failed or the time ran out)."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self.state != "ready":
                if self.state in ("failed", "stopped") or self._closing:
                    raise HostDown(f"model host {self.name}: {self.reason or self.state}")
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise HostDown(f"model host {self.name} did not start in time")
                self._changed.wait(left)

    def stop(self) -> None:
        """Ask the host to exit (closing its lifeline) and never restart it."""
        with self._lock:
            self._closing = True
            proc = self._proc
            self._changed.notify_all()
        if proc is not None and proc.poll() is None and proc.stdin is not None:
            proc.stdin.close()

    def wait_stopped(self, timeout: float) -> None:
        """Wait for the host to exit after stop(); kill it when it takes longer."""
        proc = self._proc
        if proc is None:
            return
        try:
            proc.wait(max(0.0, timeout))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with self._lock:  # now, not in the watcher: the runtime may be about to exit
            self._clean_up_locked()

    def close(self) -> None:
        self.stop()
        self.wait_stopped(STOP_SECONDS)

    def kill(self, reason: str) -> None:
        """Kill the host now (it hangs or misbehaves); the watcher restarts it."""
        with self._lock:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                return
            self._kill_reason = reason
        log.warning("model host %s: killing it: %s", self.name, reason)
        proc.kill()
        proc.wait()  # reaped now: nothing takes a killed host for a ready one

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def socket_path(self) -> Path | None:
        """Where the running host listens (None while it is not running)."""
        folder = self._dir
        return None if folder is None else folder / "s"

    # -- calls -----------------------------------------------------------------------------------

    def connect(self) -> socket.socket:
        with self._lock:
            proc = self._proc
            if self.state != "ready" or self._dir is None or proc is None or proc.poll() is not None:
                died = None if proc is None or proc.returncode is None else _exit_text(proc.returncode, self._cap)
                raise self._down_locked(None, died)
            path = str(self._dir / "s")
        return self.dial(path)

    def gone_error(self, what: str, err: BaseException | None = None) -> HostDown:
        """Why a call failed: a connection that broke usually means the process is exiting."""
        proc, code = self._proc, None
        if proc is not None:
            try:
                code = proc.wait(1.0)
            except subprocess.TimeoutExpired:
                pass
        with self._lock:
            return self._down_locked(what, None if code is None else _exit_text(code, self._cap))

    def _down_locked(self, what: str | None = None, exit_text: str | None = None) -> HostDown:
        why = self._kill_reason or exit_text or self.reason or f"it is {self.state}"
        about = f" during {what}" if what else ""
        return HostDown(f"the model host {self.name} failed{about}: {why}")

    def load_bytes(self, backend: BackendName, fmt: ModelFormat, parts: Sequence[bytes], device: Device,
                   label: str) -> Graph:
        """A guest's model, loaded in this host (started now if it is not running)."""
        self.start()
        left = deadlines.remaining()
        self.wait_ready(_START_TIMEOUT if left is None else left)
        generation = self.generation
        arena = wire.Arena.create(max(1, sum(len(p) for p in parts)), "wasminfer-model-bytes")
        try:
            at = 0
            for p in parts:
                ctypes.memmove(arena.addr + at, p, len(p))
                at += len(p)
            doc = self.request({"op": "load", "backend": backend.value, "format": fmt.value, "device": device.value,
                                "sizes": [len(p) for p in parts]}, [arena.fd])
        finally:
            arena.close()
        bounds = ShapeBounds(ModelOptions.model_validate({}))  # what the host's backend applies to loaded models
        graph = RemoteGraph(self, int(str(doc["graph"])), label, bounds, pool_size=1, owned=True)
        graph.generation = generation
        return graph

    # -- the process -----------------------------------------------------------------------------

    def _spawn_locked(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="wasminfer-host-"))
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self._dir / "s"))
        listener.listen(128)
        self._cap = caps.plan(self.name, self.memory_bytes)
        argv = [sys.executable, "-m", "wasminfer_runtime.modelhost.child", "--name", self.name,
                "--listen-fd", str(listener.fileno()), "--backends", ",".join(b.value for b in self.backends),
                "--memory-bytes", str(self.memory_bytes), "--cap", self._cap.spec,
                "--poll-seconds", repr(self.poll_seconds)]
        if self.model is not None:
            argv += ["--model", self.model.model_dump_json()]
        env = dict(os.environ, MALLOC_ARENA_MAX=caps.MALLOC_ARENAS)
        env.setdefault("WASMINFER_LOG_LEVEL", logging.getLevelName(logging.getLogger().getEffectiveLevel()))
        try:
            # The host's working directory is its own empty folder: a loader that resolves a
            # relative path finds nothing of the runtime's.
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=[listener.fileno()],
                                    cwd=self._dir, env=env)
        finally:
            listener.close()
        self._proc = proc
        self.generation += 1
        self._kill_reason = None
        self._set_state_locked("starting", self.reason)
        log.info("model host %s started (pid %d, %s)", self.name, proc.pid, self._cap.describe())
        threading.Thread(target=self._watch, args=(proc,), daemon=True, name=f"model-host-{self.name}").start()

    def _watch(self, proc: subprocess.Popen[bytes]) -> None:
        failed: str | None = None
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "ready":
                with self._lock:
                    self.reason = None
                    self._crashes = 0
                    self._set_state_locked("ready", None)
            elif event.get("event") == "failed":
                failed = str(event.get("error"))
        code = proc.wait()
        with self._lock:
            self._clean_up_locked()
            self._proc = None
            was_ready = self.state == "ready"
            if self._closing:
                self._set_state_locked("stopped", None)
                return
            why = failed or self._kill_reason or _exit_text(code, self._cap)
            self.reason = why
            if failed is not None:  # the model itself cannot be served: restarting will not help
                self._set_state_locked("failed", why)
                return
            log.error("model host %s died: %s", self.name, why)
            if self.model is None:  # a worker's host starts again on the next load
                self._set_state_locked("stopped", why)
                return
            self._crashes = 0 if was_ready else self._crashes + 1
            if self._crashes >= _CRASHES_BEFORE_FAILED:
                self._set_state_locked("failed", f"{why} ({self._crashes} times in a row while loading)")
                return
            self.restarts += 1
            self._set_state_locked("restarting", why)
            delay = min(_BACKOFF_MAX, _BACKOFF_FIRST * 2 ** self._crashes)
        threading.Timer(delay, self._restart).start()

    def _restart(self) -> None:
        with self._lock:
            if self._closing or self._proc is not None:
                return
            self._spawn_locked()

    def _clean_up_locked(self) -> None:
        """Remove the exited host's cgroup and socket folder (once)."""
        self._cap.remove()
        if self._dir is not None:
            _remove_dir(self._dir)
            self._dir = None

    def _set_state_locked(self, state: str, reason: str | None) -> None:
        self.state = state
        self._changed.notify_all()
        if self.on_state is not None:
            self.on_state(state, reason)


def _exit_text(code: int, cap: caps.MemoryCap) -> str:
    if code < 0:
        sig = signal.Signals(-code).name
        if -code == signal.SIGKILL and cap.kind.startswith("cgroup"):
            return f"killed by {sig} (out of memory? {cap.describe()})"
        return f"killed by {sig}"
    return f"exited with code {code}"


def _remove_dir(path: Path) -> None:
    for p in path.iterdir():
        try:
            p.unlink()
        except OSError:
            pass
    try:
        path.rmdir()
    except OSError:
        pass
