"""`serve --processes N`: N serving processes on one port, under one supervisor.

Python serves one request at a time per process, so a pod with several cores runs several
processes. The supervisor (the process `wasminfer serve` started):
- reserves the port: it binds a socket with SO_REUSEPORT and never listens on it, so the port
  stays the pod's while a serving process restarts;
- starts N serving processes (this same command, with `--processes 1` and WASMINFER_SERVING in
  their environment); each binds its own listening socket to the port with SO_REUSEPORT, and the
  kernel spreads new connections over them (a keep-alive connection stays with its process);
- runs each named model in one model host and tells the serving processes where it listens and
  whenever it restarts (modelhost/link.py): a model is loaded once per pod, not once per process;
- restarts a serving process that dies (with backoff; after five deaths in a row, each within 30 s
  of its start, it stops the pod with exit code 1), and forwards SIGTERM to all of them.

Each process's metrics go to a folder all of them read (metrics.py), and each process writes its
readiness to a file, so `/readyz` answered by any process speaks for the pod.

One rule makes several processes refuse a folder: a worker with a key/value store keeps it in
its process's memory, as wws does, and the processes would each have their own.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from wasminfer_runtime import formats
from wasminfer_runtime.config import LOAD_FAILURE_EXIT, ModelConfig, RuntimeConfig
from wasminfer_runtime.metrics import Metrics, forget_process, share_between_processes
from wasminfer_runtime.modelhost.link import HostEvent, HostLink
from wasminfer_runtime.models import ModelRegistry
from wasminfer_runtime.supply.sources import Supply
from wasminfer_runtime.service import Readiness

log = logging.getLogger(__name__)

ROLE_ENV = "WASMINFER_SERVING"  # "INDEX/COUNT/FOLDER" in a serving process the supervisor started
_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 30.0
_STEADY_SECONDS = 30.0  # a process that ran this long before it died restarts at once
_FAILURES_BEFORE_GIVING_UP = 5  # deaths in a row, each before _STEADY_SECONDS


def default_processes() -> int:
    """The pod's CPU limit (cgroup v2 cpu.max, rounded up), or the cores this process may run on."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, len(os.sched_getaffinity(0)))


def kv_workers(cfg: RuntimeConfig) -> list[str]:
    return sorted(w.name for w in cfg.workers if w.kv is not None)


def shared_models(cfg: RuntimeConfig) -> list[str]:
    """The named models the supervisor hosts for all serving processes (those loaded from files
    into model hosts; a remote model's server is asked by each process itself)."""
    if cfg.server.model_isolation != "process":
        return []
    return [m.name for m in cfg.models if m.remote is None and m.format in formats.HOSTED]


# -- in a serving process --------------------------------------------------------------------------


@dataclass(frozen=True)
class ServingRole:
    """What a serving process knows of its pod: its place among the processes and their folder."""

    index: int
    count: int
    folder: Path

    @classmethod
    def from_env(cls) -> ServingRole | None:
        value = os.environ.get(ROLE_ENV)
        if not value:
            return None
        index, count, folder = value.split("/", 2)
        return cls(int(index), int(count), Path(folder))

    def as_env(self) -> str:
        return f"{self.index}/{self.count}/{self.folder}"

    def readiness_file(self, index: int) -> Path:
        return self.folder / "ready" / f"{index}.json"

    def publish(self, readiness: Readiness) -> None:
        """This process's readiness, for /readyz in the others (written whole, then renamed)."""
        doc = {"pid": os.getpid(), "ready": readiness.ready, "pending": readiness.pending, "failed": readiness.failed}
        path = self.readiness_file(self.index)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, path)
        except OSError as err:  # the supervisor removes the folder as the pod stops
            log.debug("cannot publish readiness to %s: %s", path, err)

    def pod_readiness(self, own: Readiness) -> tuple[bool, dict[str, object]]:
        """The pod's /readyz: ready when every serving process is; pending and failed of them all."""
        doc = own.as_json()
        pending: list[str] = list(own.pending)
        failed: dict[str, str] = dict(own.failed)
        processes: dict[str, object] = {}
        for i in range(self.count):
            if i == self.index:
                processes[str(i)] = {"pid": os.getpid(), "ready": own.ready}
                continue
            try:
                other = json.loads(self.readiness_file(i).read_text())
            except (OSError, ValueError):
                other = None
            if not isinstance(other, dict):
                processes[str(i)] = {"ready": False}
                pending.append(f"serving process {i}")
                continue
            processes[str(i)] = {"pid": other.get("pid"), "ready": bool(other.get("ready"))}
            pending += [p for p in other.get("pending", []) if p not in pending]
            failed.update({k: v for k, v in dict(other.get("failed", {})).items() if k not in failed})
        ready = not pending and not failed
        doc.update(ready=ready, pending=pending, failed=failed, processes=processes)
        return ready, doc

    def follow(self, links: Mapping[str, HostLink]) -> None:
        """Apply the supervisor's model host events from stdin; when it closes, the supervisor is
        gone, and this process stops as on SIGTERM."""
        def read() -> None:
            # os.read, not sys.stdin: a daemon thread blocked in a buffered read aborts the
            # interpreter's exit.
            pending = b""
            while chunk := os.read(0, 65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    apply(line)
            log.warning("the supervisor is gone; stopping")
            os.kill(os.getpid(), signal.SIGTERM)

        def apply(line: bytes) -> None:
            try:
                event = HostEvent.from_json(json.loads(line))
            except (ValueError, KeyError, TypeError):
                log.warning("ignoring a malformed event from the supervisor: %r", line[:200])
                return
            link = links.get(event.model)
            if link is not None:
                link.update(event)

        threading.Thread(target=read, name="wasminfer-supervisor-events", daemon=True).start()

    def log_format(self) -> str:
        return f"%(asctime)s %(levelname)s [{self.index}] %(name)s: %(message)s"


def links_for(cfg: RuntimeConfig) -> dict[str, HostLink]:
    poll = cfg.server.model_host_poll_us / 1e6
    return {name: HostLink(name, poll) for name in shared_models(cfg)}


# -- the supervisor --------------------------------------------------------------------------------


class _Child:
    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.failures = 0  # deaths in a row, each soon after its start


class Supervisor:
    def __init__(self, cfg: RuntimeConfig, count: int, child_argv: list[str]) -> None:
        self.cfg = cfg
        self.count = count
        self.child_argv = child_argv  # `wasminfer serve ...` without --port and --processes
        self.folder = Path(tempfile.mkdtemp(prefix="wasminfer-serve-"))
        self._children = [_Child(i) for i in range(count)]
        self._events: dict[str, HostEvent] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._exit_code = 0
        self._registry: ModelRegistry | None = None
        self._loads = ThreadPoolExecutor(2, thread_name_prefix="wasminfer-load")  # as many at once as one server loads
        self._reserved: socket.socket | None = None
        self.port = 0

    # -- start and stop ------------------------------------------------------------------------

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self._stop.set())
        try:
            self.port = self._reserve_port()
        except OSError as err:
            log.error("cannot listen on %s:%d: %s", self.cfg.server.host, self.cfg.server.port, err.strerror or err)
            self._remove_folder()
            return 1
        (self.folder / "metrics").mkdir()
        (self.folder / "ready").mkdir()
        share_between_processes(str(self.folder / "metrics"))
        self._start_models()
        for child in self._children:
            self._spawn(child)
        if self._wait_listening():
            log.info("serving on http://%s:%d with %d processes (pid %d supervises)", self.cfg.server.host, self.port,
                     self.count, os.getpid())
        self._stop.wait()
        self._shut_down()
        return self._exit_code

    def _reserve_port(self) -> int:
        host, port = self.cfg.server.host, self.cfg.server.port
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind(addr)
        except OSError:
            sock.close()
            raise
        self._reserved = sock  # bound, never listening: it takes no connection, it only holds the port
        return int(sock.getsockname()[1])

    def _wait_listening(self) -> bool:
        """Until a serving process accepts connections (the log's "serving on" means it can be called)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.cfg.server.host, self.cfg.server.host)
        while not self._stop.is_set():
            try:
                socket.create_connection((host, self.port), timeout=1.0).close()
                return True
            except OSError:
                self._stop.wait(0.02)
        return False

    def _shut_down(self) -> None:
        grace = self.cfg.server.shutdown_grace_seconds
        log.info("stopping %d serving process(es) (grace %g s)", self.count, grace)
        with self._lock:
            procs = [c.proc for c in self._children if c.proc is not None]
        for proc in procs:
            _signal(proc, signal.SIGTERM)
        end = time.monotonic() + grace + 5.0
        for proc in procs:
            try:
                proc.wait(max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("serving process pid %d did not stop within the grace; killing it", proc.pid)
                proc.kill()
                proc.wait()
        self._loads.shutdown(wait=False, cancel_futures=True)
        if self._registry is not None:
            self._registry.close()
        if self._reserved is not None:
            self._reserved.close()
        self._remove_folder()
        log.info("stopped")

    def _remove_folder(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- named models ----------------------------------------------------------------------------

    def _start_models(self) -> None:
        names = set(shared_models(self.cfg))
        if not names:
            return
        registry = self._registry = ModelRegistry(Metrics(), "process", poll_us=self.cfg.server.model_host_poll_us,
                                                  watch=self._host_changed)
        for model in self.cfg.models:
            if model.name in names:
                self._loads.submit(self._load, registry, model)

    def _load(self, registry: ModelRegistry, model: ModelConfig) -> None:
        try:
            registry.load(Supply(self.cfg.server).prepare_model(model))
        except Exception as err:  # told to the serving processes, which report it as they would their own
            self._tell(HostEvent(model.name, "failed", str(err) or type(err).__name__))

    def _host_changed(self, model: str, state: str, reason: str | None) -> None:
        assert self._registry is not None
        host = self._registry.host(model)
        if host is None:
            return
        path = host.socket_path
        self._tell(HostEvent(model, state, reason, host.generation, host.restarts,
                             None if path is None else str(path), host.pid))

    def _tell(self, event: HostEvent) -> None:
        line = event.line()
        with self._lock:
            self._events[event.model] = event
            for child in self._children:
                _write(child.proc, line)

    # -- serving processes -----------------------------------------------------------------------

    def _spawn(self, child: _Child) -> None:
        role = ServingRole(child.index, self.count, self.folder)
        env = dict(os.environ, **{ROLE_ENV: role.as_env()})
        argv = [*self.child_argv, "--port", str(self.port), "--processes", "1"]
        with self._lock:
            if self._stop.is_set():
                return
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, env=env)
            child.proc, child.started = proc, time.monotonic()
            for event in self._events.values():
                _write(proc, event.line())
        log.info("serving process %d started (pid %d)", child.index, proc.pid)
        threading.Thread(target=self._watch, args=(child, proc), name=f"wasminfer-serving-{child.index}",
                         daemon=True).start()

    def _watch(self, child: _Child, proc: subprocess.Popen[bytes]) -> None:
        code = proc.wait()
        forget_process(proc.pid)
        try:
            ServingRole(child.index, self.count, self.folder).readiness_file(child.index).unlink()
        except OSError:
            pass
        with self._lock:
            child.proc = None
        if self._stop.is_set():
            return
        if code == LOAD_FAILURE_EXIT:  # a worker or model failed to load and the config says stop
            log.error("serving process %d exited with code %d; stopping the others", child.index, code)
            self._exit_code = LOAD_FAILURE_EXIT
            self._stop.set()
            return
        ran = time.monotonic() - child.started
        child.failures = 0 if ran >= _STEADY_SECONDS else child.failures + 1
        if child.failures >= _FAILURES_BEFORE_GIVING_UP:  # it cannot run here: let the pod's restart say so
            log.error("serving process %d %s %d times in a row soon after starting; stopping", child.index,
                      _exit_text(code), child.failures)
            self._exit_code = 1
            self._stop.set()
            return
        delay = 0.0 if child.failures == 0 else min(_BACKOFF_MAX, _BACKOFF_FIRST * 2 ** (child.failures - 1))
        log.error("serving process %d (pid %d) %s after %.1f s; restarting it in %.1f s", child.index, proc.pid,
                  _exit_text(code), ran, delay)
        if not self._stop.wait(delay):
            self._spawn(child)


def _write(proc: subprocess.Popen[bytes] | None, line: bytes) -> None:
    stdin: IO[bytes] | None = None if proc is None else proc.stdin
    if stdin is None:
        return
    try:
        stdin.write(line)
        stdin.flush()
    except OSError:
        pass  # it is exiting; its watcher restarts it, and a new one gets every event again


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        proc.send_signal(sig)
    except OSError:
        pass


def _exit_text(code: int) -> str:
    return f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
