"""`wasminfer serve --processes N`: several real serving processes on one port, one supervisor.

Everything is real: the processes share the port through SO_REUSEPORT, are killed with SIGKILL,
and their metrics are read back from the files prometheus-client's multiprocess mode writes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from .support import guest_input_pattern, metric, put_worker, request, wait_ready, wasminfer_command, write_matmul_chain
from .test_server_lifecycle import NN_TOML

WIDTH = 64


class Pod:
    """`wasminfer serve` as a pod runs it: its stderr collected, its URL read from its log."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([*wasminfer_command(), "serve", *args], stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self.url = self._wait_for(r"serving on (http://\S+) with", 60).group(1)
        except BaseException:
            self.stop()
            raise

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def _wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log)
            if found:
                return found
            assert self.proc.poll() is None, f"exited with {self.proc.returncode}:\n{self.log}"
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in the log after {timeout} s:\n{self.log}")

    def children(self, marker: str) -> list[int]:
        return children_of(self.proc.pid, marker)

    def serving_pids(self) -> dict[str, int]:
        return {i: p["pid"] for i, p in request(self.url + "/readyz").json()["processes"].items() if "pid" in p}

    def folder(self) -> Path:
        """The supervisor's folder (metrics, readiness), as its serving processes are told it."""
        pid = next(iter(self.serving_pids().values()))
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        value = next(e for e in env if e.startswith(b"WASMINFER_SERVING=")).split(b"=", 1)[1].decode()
        return Path(value.split("/", 2)[2])

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(5)


@pytest.fixture
def site(guests: dict[str, Path], tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    weights = write_matmul_chain(tmp_path / "_models" / "chain", layers=4, width=WIDTH)
    put_worker(tmp_path, "nn.wasm", guests["nn_named"], NN_TOML.format(name="nn", model="chain", width=WIDTH))
    put_worker(tmp_path, "hello.wasm", guests["hello"])
    return tmp_path, weights


@pytest.fixture
def pod(site: tuple[Path, list[np.ndarray]]) -> Iterator[Pod]:
    pod = Pod(str(site[0]), "--port", "0", "--processes", "2")
    try:
        wait_ready(pod.url)
        folder = pod.folder()
        yield pod
    finally:
        code = pod.stop()  # whatever failed above: no pod outlives its test
    assert code == 0, pod.log
    assert not folder.exists(), f"{folder} left behind"


def requests_by_process(folder: Path, pids: list[int]) -> dict[int, float]:
    """Requests each process counted, from its own file in the shared metrics folder."""
    counts = {}
    for pid in pids:
        files = [str(f) for f in (folder / "metrics").glob(f"counter_{pid}.db")]
        samples = [s for m in MultiProcessCollector.merge(files) for s in m.samples]
        counts[pid] = sum(s.value for s in samples if s.name == "wasminfer_requests_total")
    return counts


def expected_first(weights: list[np.ndarray]) -> np.ndarray:
    x = guest_input_pattern(WIDTH).astype(np.float64)
    for w in weights:
        x = x @ w.astype(np.float64)
    return x[:8]


def test_the_processes_share_the_port_and_answer_as_one_pod(pod: Pod, site: tuple[Path, list[np.ndarray]]) -> None:
    ready = request(pod.url + "/readyz").json()
    assert ready["ready"] is True and set(ready["processes"]) == {"0", "1"}, ready
    pids = pod.serving_pids()
    assert sorted(pids.values()) == pod.children("serve"), (pids, pod.log)
    # Fresh connections: the kernel spreads them over both listening sockets.
    for _ in range(40):
        assert request(pod.url + "/hello").status == 200
    by_process = requests_by_process(pod.folder(), list(pids.values()))
    assert all(n > 0 for n in by_process.values()), f"one process served everything: {by_process}"
    # /metrics, from whichever process answers, counts the pod's requests.
    assert metric(pod.url, "wasminfer_requests_total", worker="hello", status="200") == 40
    assert metric(pod.url, "wasminfer_worker_ready", worker="hello") == 1.0


def test_a_named_model_is_loaded_once_for_every_process(pod: Pod, site: tuple[Path, list[np.ndarray]]) -> None:
    hosts = pod.children("wasminfer_runtime.modelhost.child")
    assert len(hosts) == 1, f"model hosts: {hosts}"
    for pid in pod.serving_pids().values():
        assert children_of(pid, "modelhost.child") == [], "a serving process started a model host of its own"
    want = expected_first(site[1])
    for _ in range(20):
        reply = request(pod.url + "/nn")
        assert reply.status == 200, reply.body
        np.testing.assert_allclose(reply.json()["first"], want, rtol=1e-3, atol=1e-4)

    # The shared host dies: every process reports it, the supervisor restarts it once, and the
    # processes serve from the new one.
    os.kill(hosts[0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = pod.children("wasminfer_runtime.modelhost.child")
        if now and now != hosts and request(pod.url + "/readyz").status == 200:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the model host was not restarted:\n{pod.log}")
    for _ in range(20):
        reply = request(pod.url + "/nn")
        assert reply.status == 200, reply.body
        np.testing.assert_allclose(reply.json()["first"], want, rtol=1e-3, atol=1e-4)
    assert metric(pod.url, "wasminfer_model_host_restarts_total", model="chain") == 1.0
    assert metric(pod.url, "wasminfer_model_ready", model="chain") == 1.0


def test_a_dead_serving_process_is_restarted_while_the_other_serves(pod: Pod) -> None:
    for _ in range(10):
        assert request(pod.url + "/hello").status == 200
    before = pod.serving_pids()
    os.kill(before["0"], signal.SIGKILL)
    wait_exited(before["0"])
    # New connections go to the listening socket that is left; none is refused or dropped. (Those
    # the dead process's socket held, not yet accepted, when it died were reset: SO_REUSEPORT.)
    for i in range(30):
        try:
            reply = request(pod.url + "/hello")
        except OSError as err:
            raise AssertionError(f"request {i} after the kill: {err}\n{pod.log}") from None
        assert reply.status == 200, reply.body
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        reply = request(pod.url + "/readyz")
        now = {i: p.get("pid") for i, p in reply.json()["processes"].items()}
        if reply.status == 200 and now["0"] not in (None, before["0"]):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"serving process 0 was not restarted:\n{pod.log}")
    assert now["1"] == before["1"]
    assert f"serving process 0 (pid {before['0']}) was killed by SIGKILL" in pod.log
    # The dead process's requests still count; its gauges no longer do.
    assert metric(pod.url, "wasminfer_requests_total", worker="hello", status="200") == 40
    assert metric(pod.url, "wasminfer_worker_ready", worker="hello") == 1.0


def test_workers_with_a_key_value_store_are_served_by_one_process(guests: dict[str, Path], tmp_path: Path) -> None:
    put_worker(tmp_path, "counter.wasm", guests["kv_counter"], 'name = "counter"\n[data.kv]\nnamespace = "c"\n')
    refused = subprocess.run([*wasminfer_command(), "serve", str(tmp_path), "--port", "0", "--processes", "2"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert "worker(s) counter keep a key/value store" in refused.stderr and "--processes 1" in refused.stderr
    # Left to choose, it serves them with one process (the store is that process's memory).
    proc = subprocess.Popen([*wasminfer_command(), "serve", str(tmp_path), "--port", "0"], stderr=subprocess.PIPE,
                            text=True)
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        while not any(" on http://" in line for line in lines):
            line = proc.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert any("serving with one process: worker(s) counter" in line for line in lines), "".join(lines)
    assert not any("with 2 processes" in line for line in lines), "".join(lines)


def wait_exited(pid: int) -> None:
    """Until the process is reaped: only then have all its threads exited and its sockets closed
    (its main thread shows as a zombie while the others still hold them)."""
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, f"pid {pid} still there"
        time.sleep(0.01)


def children_of(pid: int, marker: str) -> list[int]:
    """The pids of the children of `pid` whose command line holds `marker`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and marker in cmdline:
            found.append(int(entry))
    return sorted(found)


def test_a_process_that_keeps_dying_stops_the_server(site: tuple[Path, list[np.ndarray]]) -> None:
    """Five deaths in a row, each soon after a start: the server stops with exit code 1 (in a pod,
    its restarts then say so) instead of restarting it for ever."""
    pod = Pod(str(site[0]), "--port", "0", "--processes", "2")
    try:
        killed: list[int] = []
        deadline = time.monotonic() + 120
        while len(killed) < 5 and time.monotonic() < deadline:
            started = [int(p) for p in re.findall(r"serving process 0 started \(pid (\d+)\)", pod.log)]
            fresh = [p for p in started if p not in killed]
            if fresh:
                os.kill(fresh[-1], signal.SIGKILL)
                killed.append(fresh[-1])
            time.sleep(0.05)
        code = pod.proc.wait(60)
    finally:
        pod.stop()
    assert code == 1, pod.log
    assert "serving process 0 was killed by SIGKILL 5 times in a row soon after starting; stopping" in pod.log, pod.log


def test_a_hostile_compute_on_the_shared_model_is_cut_off_while_both_processes_serve(
        guests: dict[str, Path], tmp_path: Path) -> None:
    """A guest whose compute on the shared model host would run for minutes gets 504 at its deadline
    (the compute cancelled from its serving process through the shared host); meanwhile both
    processes keep answering good requests on the same model normally, and the host lives on."""
    from wasminfer_runtime.config import dump_runtime_config

    from .test_model_hosts import ONE_ROW_OF_ZEROS, config

    cfg = config(tmp_path, guests, timeout_seconds=1)
    cfg = cfg.model_copy(update={"server": cfg.server.model_copy(update={"port": 0})})
    (tmp_path / "runtime.yaml").write_text(dump_runtime_config(cfg))
    pod = Pod("--config", str(tmp_path / "runtime.yaml"), "--processes", "2")
    try:
        wait_ready(pod.url)
        [host] = pod.children("wasminfer_runtime.modelhost.child")
        hostile: list[Any] = []
        attack = threading.Thread(target=lambda: hostile.append(request(pod.url + "/slow")))
        attack.start()
        good = 0
        while attack.is_alive():
            reply = request(pod.url + "/patient")  # fresh connections: both processes answer them
            assert reply.status == 200 and reply.json() == {"output": ONE_ROW_OF_ZEROS}, reply.body
            assert request(pod.url + "/hello").status == 200
            good += 1
        [reply] = hostile
        assert reply.status == 504 and reply.json()["error"] == "timeout", reply.body
        assert good > 3, f"only {good} good requests while the hostile one ran"
        assert pod.children("wasminfer_runtime.modelhost.child") == [host]  # cancelled, not killed
        assert metric(pod.url, "wasminfer_model_host_restarts_total", model="slow") == 0
    finally:
        assert pod.stop() == 0, pod.log
