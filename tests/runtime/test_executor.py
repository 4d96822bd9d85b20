"""One worker invocation: WASI stdio, argv, env, folders, limits and verdicts (real wasmtime)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import wasmtime

from wasminfer_runtime import engine as engine_module
from wasminfer_runtime.engine import RuntimeEngine, WorkerLoadError
from wasminfer_runtime.executor import MAX_CAPTURE_BYTES

from .conftest import Runtime


def wat_module(tmp_path: Path, name: str, wat: str) -> Path:
    path = tmp_path / f"{name}.wasm"
    path.write_bytes(wasmtime.wat2wasm(wat))
    return path


LOOP = '(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))'
TRAP = '(module (memory (export "memory") 1) (func (export "_start") unreachable))'
# Grows memory 1 MiB at a time until refused, then aborts (as a C program does when malloc fails).
GROW_THEN_ABORT = """(module (memory (export "memory") 1)
  (func (export "_start")
    (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    unreachable))"""
# Grows until refused, then spins: the cap shows as the reason when the deadline stops it.
GROW_THEN_SPIN = """(module (memory (export "memory") 1)
  (func (export "_start")
    (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    (loop $spin (br $spin))))"""
HUGE_INITIAL = '(module (memory (export "memory") 8192) (func (export "_start")))'
NO_START = '(module (memory (export "memory") 1) (func (export "main")))'
NN_IMPORT = """(module (import "wasi_ephemeral_nn" "compute" (func (param i32) (result i32)))
  (memory (export "memory") 1) (func (export "_start")))"""
UNKNOWN_IMPORT = """(module (import "env" "launch_missiles" (func))
  (memory (export "memory") 1) (func (export "_start")))"""


def test_stdin_reaches_the_guest_and_stdout_comes_back(runtime: Runtime, guests: Path) -> None:
    payload = bytes(range(256)) * 64
    result = runtime.run(guests / "wasi_probe.wasm", ["echo"], stdin=payload)
    assert result.outcome == "ok", result.message
    assert result.stdout == payload
    assert result.exit_code == 0


def test_each_invocation_sees_only_its_own_output(runtime: Runtime, guests: Path) -> None:
    """Output files are kept for the thread's next invocation: emptied, nothing of the last one left."""
    probe = guests / "wasi_probe.wasm"
    long = runtime.run(probe, ["echo"], stdin=b"x" * 100_000)
    assert long.stdout == b"x" * 100_000
    short = runtime.run(probe, ["echo"], stdin=b"short")
    assert short.stdout == b"short" and short.stderr == b""
    loud = runtime.run(probe, ["stderr", "e" * 5000])
    assert loud.stderr.startswith(b"e" * 5000)
    assert runtime.run(probe, ["echo"], stdin=b"").stderr == b""


def test_args_env_and_stderr(runtime: Runtime, guests: Path) -> None:
    probe = guests / "wasi_probe.wasm"
    assert runtime.run(probe, ["args", "a b", "ü", ""]).stdout == "a b\nü\n\n".encode()
    assert runtime.run(probe, ["env", "GREETING"], vars={"GREETING": "hej"}).stdout == b"hej\n"
    assert runtime.run(probe, ["env", "HOME"]).stdout == b"(unset)\n"  # nothing leaks from the host
    result = runtime.run(probe, ["stderr", "to stderr"])
    assert (result.stdout, result.stderr) == (b"", b"to stderr\n")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A host folder `data` holding in.txt, to be granted to guests."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "in.txt").write_text("from the host")
    return folder


def test_folders_are_read_only_unless_writable(runtime: Runtime, guests: Path, data: Path) -> None:
    probe = guests / "wasi_probe.wasm"
    ro = [{"from": str(data), "to": "/data"}]
    assert runtime.run(probe, ["read", "/data/in.txt"], folders=ro).stdout == b"from the host"
    denied = runtime.run(probe, ["write", "/data/out.txt", "x"], folders=ro)
    assert denied.stdout.startswith(b"error"), denied.stdout
    assert not (data / "out.txt").exists()
    overwrite = runtime.run(probe, ["write", "/data/in.txt", "changed"], folders=ro)
    assert overwrite.stdout.startswith(b"error"), overwrite.stdout
    assert (data / "in.txt").read_text() == "from the host"
    rw = [{"from": str(data), "to": "/data", "writable": True}]
    assert runtime.run(probe, ["write", "/data/out.txt", "written"], folders=rw).stdout == b"ok\n"
    assert (data / "out.txt").read_text() == "written"
    assert runtime.run(probe, ["write", "/data/in.txt", "changed"], folders=rw).stdout == b"ok\n"
    assert (data / "in.txt").read_text() == "changed"


def test_only_granted_folders_are_visible(runtime: Runtime, guests: Path, data: Path, tmp_path: Path) -> None:
    probe = guests / "wasi_probe.wasm"
    (tmp_path / "secret.txt").write_text("not granted")
    (data / "escape").symlink_to(tmp_path / "secret.txt")
    assert runtime.run(probe, ["read", "/data/in.txt"]).stdout.startswith(b"error")  # no folder granted at all
    granted = [{"from": str(data), "to": "/data", "writable": True}]
    assert runtime.run(probe, ["read", "/data/in.txt"], folders=granted).stdout == b"from the host"
    for path in ("/data/../secret.txt", "/data/escape", "/secret.txt", str(tmp_path / "secret.txt"), "/etc/passwd"):
        result = runtime.run(probe, ["read", path], folders=granted)
        assert result.stdout.startswith(b"error"), (path, result.stdout)
    # Not even a writable folder lets a guest create a way out.
    escape = runtime.run(probe, ["write", "/data/../planted.txt", "x"], folders=granted)
    assert escape.stdout.startswith(b"error") and not (tmp_path / "planted.txt").exists()


def test_exit_codes(runtime: Runtime, guests: Path) -> None:
    probe = guests / "wasi_probe.wasm"
    assert runtime.run(probe, ["exit", "0"]).outcome == "ok"
    result = runtime.run(probe, ["exit", "3"])
    assert (result.outcome, result.exit_code) == ("exit", 3)
    assert "code 3" in result.message


def test_trap_is_reported_with_its_reason(runtime: Runtime, tmp_path: Path) -> None:
    result = runtime.run(wat_module(tmp_path, "trap", TRAP))
    assert result.outcome == "trap"
    assert "unreachable" in result.message


def test_endless_loop_is_stopped_at_the_timeout(runtime: Runtime, tmp_path: Path) -> None:
    result = runtime.run(wat_module(tmp_path, "loop", LOOP), limits={"timeout_seconds": 0.2})
    assert result.outcome == "timeout"
    assert "0.2 s" in result.message


def test_memory_cap_stops_growth_and_names_the_cause(runtime: Runtime, tmp_path: Path) -> None:
    worker = runtime.worker(wat_module(tmp_path, "grow", GROW_THEN_ABORT), limits={"memory_mib": 32})
    result = worker.invoke(b"")
    assert result.outcome == "memory"
    assert "32 MiB" in result.message
    spin = runtime.run(wat_module(tmp_path, "spin", GROW_THEN_SPIN),
                       limits={"memory_mib": 16, "timeout_seconds": 0.2})
    assert spin.outcome == "memory"
    assert "timeout" in spin.message
    too_big = runtime.run(wat_module(tmp_path, "huge", HUGE_INITIAL), limits={"memory_mib": 64})
    assert too_big.outcome == "memory"
    assert "64 MiB" in too_big.message
    # and the same worker keeps serving
    assert worker.invoke(b"").outcome == "memory"


def test_an_ordinary_trap_near_no_cap_stays_a_trap(runtime: Runtime, tmp_path: Path) -> None:
    result = runtime.run(wat_module(tmp_path, "trap2", TRAP), limits={"memory_mib": 1})
    assert result.outcome == "trap"


def test_output_flood_is_cut_off(runtime: Runtime, guests: Path) -> None:
    flood = guests / "hostile_huge.wasm"
    if not flood.exists():
        pytest.fail("tests/guests/hostile_huge.c is missing (built by sdk/build.py)")
    result = runtime.run(flood, stdin=b'{"url":"http://x/","method":"GET","headers":{},"body":""}')
    assert result.outcome == "memory"
    assert len(result.stdout) <= MAX_CAPTURE_BYTES
    assert "stdout" in result.message


@pytest.mark.parametrize(
    ("wat", "needle"),
    [
        (NN_IMPORT, "wasi-nn is not enabled"),
        (NO_START, "no `_start`"),
        (UNKNOWN_IMPORT, "launch_missiles"),
    ],
)
def test_modules_that_cannot_run_are_refused_at_load(runtime: Runtime, tmp_path: Path, wat: str,
                                                     needle: str) -> None:
    module = wat_module(tmp_path, "bad", wat)
    with pytest.raises(WorkerLoadError) as err:
        runtime.worker(module)
    assert needle in str(err.value)
    assert "'bad'" in str(err.value)  # names the worker


def test_vars_that_are_not_text_are_refused_at_load(runtime: Runtime, guests: Path) -> None:
    # What `$NAME` expands to when the host's environment holds bytes that are not UTF-8.
    with pytest.raises(WorkerLoadError, match="worker 'wasi_probe': vars RAW are not UTF-8 text"):
        runtime.worker(guests / "wasi_probe.wasm", vars={"OK": "fine", "RAW": "caf\udce9"})


def test_not_wasm_and_missing_file_are_refused(runtime: Runtime, tmp_path: Path) -> None:
    junk = tmp_path / "junk.wasm"
    junk.write_bytes(b"\0asm garbage")
    with pytest.raises(WorkerLoadError, match="not a valid WebAssembly module"):
        runtime.worker(junk)
    with pytest.raises(WorkerLoadError, match="cannot read module"):
        runtime.worker(tmp_path / "absent.wasm")


def test_compiled_modules_are_cached_on_disk(runtime: Runtime, guests: Path, tmp_path: Path) -> None:
    first = RuntimeEngine(tmp_path / "cache", runtime.metrics)
    first.compile(guests / "wasi_probe.wasm")
    cached = list((tmp_path / "cache" / "modules").glob("*.cwasm"))
    assert len(cached) == 1
    key = first.cache_key((guests / "wasi_probe.wasm").read_bytes())
    assert cached[0].name == f"{key}.cwasm"
    # A new engine (a restarted runtime) loads the artifact instead of compiling.
    second = RuntimeEngine(tmp_path / "cache", runtime.metrics)
    mtime = cached[0].stat().st_mtime_ns
    second.compile(guests / "wasi_probe.wasm")
    assert cached[0].stat().st_mtime_ns == mtime
    # A corrupt entry is replaced, not fatal.
    cached[0].write_bytes(b"corrupt")
    RuntimeEngine(tmp_path / "cache", runtime.metrics).compile(guests / "wasi_probe.wasm")
    assert cached[0].read_bytes() != b"corrupt"


def test_cache_key_covers_module_wasmtime_version_and_engine_config(runtime: Runtime, guests: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    wasm = (guests / "wasi_probe.wasm").read_bytes()

    def key(module: bytes = wasm) -> str:
        return RuntimeEngine(tmp_path, runtime.metrics).cache_key(module)

    first = key()
    assert key() == first  # the same module under the same engine: a hit
    assert key(wasm + b"\0\x01\0") != first  # another module (a custom section more)
    with monkeypatch.context() as m:
        m.setattr(engine_module, "_wasmtime_version", lambda: "0.0.0")
        assert key() != first
    with monkeypatch.context() as m:
        m.setitem(engine_module._ENGINE_SETTINGS, "cranelift_opt_level", "none")
        assert key() != first
    with monkeypatch.context() as m:
        m.setitem(engine_module._POOLING, "max_memory_size", 1024 * 1024 * 1024)
        assert key() != first
    assert key() == first


def test_concurrent_invocations_are_isolated(runtime: Runtime, guests: Path) -> None:
    worker = runtime.worker(guests / "wasi_probe.wasm")
    results: dict[int, bytes] = {}

    def call(i: int) -> None:
        for _ in range(10):
            results[i] = worker.invoke(f"request {i}".encode() * 100, ["echo"]).stdout

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: f"request {i}".encode() * 100 for i in range(8)}
