"""Models run in model host processes: a host that dies, hangs or blows up costs the calls in
flight on it, never the runtime, and the next request is served.

Real processes and real backends: the hosts are killed with SIGKILL, the slow model really
computes until it is stopped, and the memory bomb really asks for a gigabyte.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from wasminfer_runtime.config import RuntimeConfig
from wasminfer_runtime.modelhost import caps

from .support import ServerThread, metric, request, wait_ready

Serve = Callable[[RuntimeConfig], ServerThread]

WIDTH = 2048
SLOW_ROWS = 8  # the slow worker's input rows (8 x WIDTH f32 fills the nn_load guest's buffers)
SLOW_STEPS = 1_000_000  # matmuls for a multi-row input: ~7e13 flops, minutes on any CPU
ONE_ROW_OF_ZEROS = np.zeros(WIDTH, np.float32).tobytes().hex()  # the quick (patient) worker's answer


def slow_model(path: Path) -> Path:
    """y = x @ I over a Loop: one step for a one-row x (an instant answer), SLOW_STEPS for more rows.

    The same model (so the same host) answers quickly or computes for minutes, picked by the
    worker's INPUT_DIMS: the deadline test's compute outlasts its deadline by orders of magnitude
    on any machine, and the next request on that host still gets its answer at once.
    """
    w = numpy_helper.from_array(np.eye(WIDTH, dtype=np.float32), "w")
    consts = [numpy_helper.from_array(np.array(v), n)
              for n, v in (("zero", np.int64(0)), ("one", np.int64(1)), ("many", np.int64(SLOW_STEPS)), ("go", True))]
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("MatMul", ["v_in", "w"], ["v_out"])],
        "step",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, ["rows", WIDTH])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, ["rows", WIDTH])],
    )
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["rows"], axis=0),
        helper.make_node("Greater", ["rows", "one"], ["slow"]),
        helper.make_node("Where", ["slow", "many", "one"], ["steps"]),
        helper.make_node("Loop", ["steps", "go", "x"], ["y"], body=body),
    ]
    io = [helper.make_tensor_value_info(v, TensorProto.FLOAT, ["rows", WIDTH]) for v in ("x", "y")]
    graph = helper.make_graph(nodes, "slow", io[:1], io[1:], [w, *consts])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def bomb_model() -> bytes:
    """A few hundred bytes that become a 1 GiB tensor (ConstantOfShape) when the model runs or loads."""
    shape = numpy_helper.from_array(np.array([1, 1 << 28], np.int64), "shape")
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"],
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
             helper.make_node("ReduceSum", ["big"], ["s"], keepdims=1),
             helper.make_node("Add", ["x", "s"], ["y"])]
    io = [helper.make_tensor_value_info(v, TensorProto.FLOAT, [1, 64]) for v in ("x", "y")]
    graph = helper.make_graph(nodes, "bomb", io[:1], io[1:], [shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def add_one_model() -> bytes:
    """y = x + 1, [1, 64] f32: a good model for `load`."""
    w = numpy_helper.from_array(np.ones((1, 64), np.float32), "w")
    io = [helper.make_tensor_value_info(v, TensorProto.FLOAT, [1, 64]) for v in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "add", io[:1], io[1:], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def host_pids(name: str) -> list[int]:
    """Processes running the model host called `name` (read from /proc, as `ps` would)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"wasminfer_runtime.modelhost.child" in argv and argv[argv.index(b"--name") + 1] == name.encode():
            if Path(f"/proc/{entry}/stat").read_text().split(") ")[1][0] != "Z":
                pids.append(int(entry))
    return pids


def config(tmp_path: Path, guests: dict[str, Path], **slow_limits: Any) -> RuntimeConfig:
    nn = {"enabled": True, "allowed_backends": ["onnxruntime"], "models": ["slow"]}
    slow_dims = {"INPUT_DIMS": f"{SLOW_ROWS},{WIDTH}", "MODEL": "slow"}
    quick_dims = {"INPUT_DIMS": f"1,{WIDTH}", "MODEL": "slow"}
    return RuntimeConfig.model_validate({
        "models": [{"name": "slow", "format": "onnx", "backend": "onnxruntime",
                    "files": [slow_model(tmp_path / "slow.onnx")]}],
        "workers": [
            {"name": "slow", "module": guests["nn_load"], "route": "/slow", "vars": slow_dims, "wasi_nn": nn,
             "limits": slow_limits},
            {"name": "patient", "module": guests["nn_load"], "route": "/patient", "vars": quick_dims, "wasi_nn": nn},
            {"name": "hello", "module": guests["hello"], "route": "/hello"},
        ],
    })


class Sampler(threading.Thread):
    """Counts, every few ms, the live processes of one model host and hello's latency."""

    def __init__(self, url: str, host: str) -> None:
        super().__init__(daemon=True)
        self.url, self.host = url, host
        self.most_hosts = 0
        self.error: OSError | None = None
        self.hello: list[tuple[int, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.most_hosts = max(self.most_hosts, len(host_pids(self.host)))
            t0 = time.monotonic()
            try:
                status = request(self.url + "/hello", timeout=10).status
            except OSError as err:
                status = -1
                self.error = err
            self.hello.append((status, time.monotonic() - t0))
            time.sleep(0.02)


def test_a_model_host_killed_mid_request_fails_that_request_and_the_next_is_served(
        guests: dict[str, Path], tmp_path: Path, serve: Serve) -> None:
    server = serve(config(tmp_path, guests))
    wait_ready(server.url)
    [pid] = host_pids("slow")

    sampler = Sampler(server.url, "slow")
    sampler.start()
    replies: list[Any] = []
    inflight = threading.Thread(target=lambda: replies.append(request(server.url + "/slow")))
    inflight.start()
    time.sleep(0.5)  # the compute takes minutes: the request is inside the host now
    os.kill(pid, signal.SIGKILL)
    inflight.join(30)
    [reply] = replies
    assert reply.status == 503, reply.body
    doc = reply.json()
    assert doc["error"] == "model_unavailable"
    assert "'slow'" in doc["message"] and "model host slow" in doc["message"] and "SIGKILL" in doc["message"]
    assert reply.headers.get("retry-after") == "1"

    # The gap shows: the model is restarting, then ready again in a new process.
    ready = wait_ready(server.url, timeout=60).json()
    assert ready["models"]["slow"]["state"] == "ready"
    assert metric(server.url, "wasminfer_model_host_restarts_total", model="slow") == 1
    assert metric(server.url, "wasminfer_model_ready", model="slow") == 1
    assert request(server.url + "/patient").json() == {"output": ONE_ROW_OF_ZEROS}
    sampler.stop.set()
    sampler.join(15)
    [new_pid] = host_pids("slow")
    assert new_pid != pid
    assert sampler.most_hosts == 1, "the model was loaded in two hosts at once"
    assert all(status == 200 for status, _ in sampler.hello), sampler.hello


def test_a_compute_past_the_deadline_is_cancelled_and_the_host_keeps_serving(
        guests: dict[str, Path], tmp_path: Path, serve: Serve) -> None:
    server = serve(config(tmp_path, guests, timeout_seconds=1))
    wait_ready(server.url)
    [pid] = host_pids("slow")
    t0 = time.monotonic()
    reply = request(server.url + "/slow")
    took = time.monotonic() - t0
    assert reply.status == 504, reply.body
    assert reply.json()["error"] == "timeout"
    assert took < 1 + 2 + 1.5, f"answered after {took:.1f} s"  # deadline + cancel grace + slack
    # ONNX Runtime's terminate flag stopped it: the same host serves the next request.
    assert request(server.url + "/patient").json() == {"output": ONE_ROW_OF_ZEROS}
    assert host_pids("slow") == [pid]
    assert metric(server.url, "wasminfer_model_host_restarts_total", model="slow") == 0


def _peak_rss_reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("cap", ["auto", "rlimit"])
def test_a_memory_bomb_passed_to_load_costs_only_its_workers_host(
        guests: dict[str, Path], serve: Serve, monkeypatch: pytest.MonkeyPatch, cap: str) -> None:
    if cap == "rlimit":  # what a container without a writable cgroup gets
        monkeypatch.setattr(caps, "plan", lambda name, limit: caps.MemoryCap("rlimit", limit))
    else:
        probe = caps.plan("probe", 1 << 20)
        probe.remove()
        if probe.kind == "rlimit":
            pytest.fail("the runtime could not create a cgroup here: run the tests as root on a cgroup v1 host or "
                        "in a delegated cgroup v2 subtree")
    cfg = RuntimeConfig.model_validate({"workers": [
        {"name": "load", "module": guests["nn_load"], "route": "/load", "vars": {"INPUT_DIMS": "1,64"},
         "limits": {"memory_mib": 64}, "wasi_nn": {"enabled": True, "allowed_backends": ["onnxruntime"]}},
        {"name": "hello", "module": guests["hello"], "route": "/hello"},
    ]})
    server = serve(cfg)
    wait_ready(server.url)
    good = request(server.url + "/load", method="POST", body=add_one_model())
    assert good.json() == {"output": np.ones(64, np.float32).tobytes().hex()}
    [pid] = host_pids("load.load")
    host_rss = int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0]) * 1024

    _peak_rss_reset()
    before = _peak_rss()
    bomb = request(server.url + "/load", method="POST", body=bomb_model())
    grew = _peak_rss() - before
    assert grew < 64 << 20, f"the runtime's peak RSS grew by {grew >> 20} MiB"
    if bomb.status == 503:  # the cgroup's OOM killer took the host
        assert bomb.json()["error"] == "model_unavailable" and "load" in bomb.json()["message"]
    else:  # RLIMIT_AS: the allocation failed inside the host
        assert bomb.status == 200, bomb.body
        assert bomb.json()["errno"] != 0 and bomb.json()["step"] in ("load", "compute"), bomb.body
    assert request(server.url + "/hello").status == 200
    again = request(server.url + "/load", method="POST", body=add_one_model())
    assert again.json() == {"output": np.ones(64, np.float32).tobytes().hex()}
    [pid_after] = host_pids("load.load")
    rss_after = int(Path(f"/proc/{pid_after}/status").read_text().split("VmRSS:")[1].split()[0]) * 1024
    assert rss_after < host_rss + (64 << 20), "the host kept the bomb's memory"
