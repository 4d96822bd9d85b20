"""Starting, probing and stopping the component processes, and picking free loopback ports."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1

# Components this process started, so stopping one also reaps it through its Popen.
_children: dict[int, subprocess.Popen[bytes]] = {}


def free_port() -> int:
    """A port nobody listens on right now. Another process may take it before the component
    binds it; bring-up notices ("address already in use") and tries again with a new one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether a server could listen on the port now. SO_REUSEADDR as servers set it: connections
    of a stopped server lingering in TIME_WAIT do not keep its port from being reused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _die_with_parent(parent: int) -> Callable[[], None]:
    def preexec() -> None:
        # The kernel sends SIGTERM when the process that started us dies, even by SIGKILL, so a
        # crashed test run leaves no component running. Checked after, in case it died already.
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def start(
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    die_with_parent: bool = False,
) -> subprocess.Popen[bytes]:
    """Starts a component in its own session (a Ctrl-C at the terminal does not reach it; it is
    stopped in order instead), appending its output to `log_path` after a header naming the run."""
    with log_path.open("ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"=== {stamp} started: {' '.join(argv)}\n".encode())
        log.flush()
        child = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()) if die_with_parent else None,
        )
    _children[child.pid] = child
    return child


def _alive(pid: int) -> bool:
    """Whether any thread of `pid` still runs. The main thread of a killed Go program can be a
    zombie while other threads still exit and hold its sockets open, so each thread is checked."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    for task in tasks:
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
            return True
    return False


def start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot: with the pid it names one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def is_running(pid: int, exe: str | None = None) -> bool:
    """Whether `pid` is alive (not a zombie) and, when `exe` is given, still runs that binary: a pid
    reused by an unrelated process after a crash must never be signalled."""
    if not _alive(pid):
        return False
    if exe is None:
        return True
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
    except OSError:
        return False
    return argv0 == exe


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _children[pid]
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: its own parent (or init) reaps it


def stop(pid: int, exe: str, grace: float = 10.0) -> bool:
    """Stops the process: SIGTERM, then SIGKILL after `grace` seconds. False if it was not running."""
    if not is_running(pid, exe):
        _reap(pid)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(pid)
        if not is_running(pid):
            return True
        time.sleep(0.05)
    if is_running(pid, exe):
        os.kill(pid, signal.SIGKILL)
    while is_running(pid):
        _reap(pid)
        time.sleep(0.05)
    return True


def http_ok(url: str, context: ssl.SSLContext | None = None, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, context=context, timeout=timeout) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def mentions_port_in_use(path: Path) -> bool:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    last_run = text.rsplit("=== ", 1)[-1]
    return "address already in use" in last_run
