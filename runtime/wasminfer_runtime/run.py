"""`wasminfer run MODULE.wasm`: run one WASI command once, flags shaped like `wasmtime run -S nn`.

    wasminfer run --dir ./fixture::/fixture --nn-graph openvino::./models/mobilenet app.wasm -- ARGS

The guest's stdout and stderr go to ours and its exit code becomes ours (134 when it traps, times
out or runs out of memory, as with wasmtime). Standard input is read to its end before the guest
starts.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from wasminfer_runtime.config import (
    BackendName,
    FolderConfig,
    Limits,
    ModelConfig,
    ModelFormat,
    WasiNnConfig,
    WorkerConfig,
)
from wasminfer_runtime.engine import RuntimeEngine, WorkerLoadError
from wasminfer_runtime.executor import WorkerExecutor
from wasminfer_runtime.metrics import Metrics
from wasminfer_runtime.models import ModelLoadError, ModelRegistry

log = logging.getLogger(__name__)

TRAP_EXIT_CODE = 134  # what wasmtime returns for a trap (128 + SIGABRT)
USAGE_EXIT_CODE = 2
MAX_TIMEOUT_SECONDS = 3600.0  # the most a worker's limits allow

_ENCODINGS = {"openvino": ModelFormat.openvino, "onnx": ModelFormat.onnx}


class UsageError(Exception):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("module", type=Path, help="the WebAssembly module (a WASI command)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the guest (after the module or --)")
    parser.add_argument("--dir", action="append", default=[], metavar="HOST[::GUEST]",
                        help="preopen a host directory (read-write, as in wasmtime); repeatable")
    parser.add_argument("--env", action="append", default=[], metavar="NAME[=VALUE]",
                        help="set a guest environment variable (NAME alone passes ours on); repeatable")
    parser.add_argument("--nn-graph", action="append", default=[], metavar="ENCODING::DIR",
                        help="preload DIR as the named model basename(DIR) (encoding openvino or onnx); repeatable")
    parser.add_argument("-S", dest="wasi", action="append", default=[], metavar="OPTION",
                        help="wasmtime-style WASI options: nn, nn-graph=ENCODING::DIR")
    parser.add_argument("--timeout", type=float, default=MAX_TIMEOUT_SECONDS, metavar="SECONDS",
                        help="stop the guest after this long (default: %(default)g)")
    parser.add_argument("--max-memory-mib", type=int, default=4096, metavar="MIB",
                        help="linear memory limit (default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="compiled-module cache (~/.cache/wasminfer)")


def parse_dir(spec: str) -> FolderConfig:
    host, sep, guest = spec.partition("::")
    if not host:
        raise UsageError(f"--dir {spec!r}: expected HOST[::GUEST]")
    path = Path(host).resolve()
    if not path.is_dir():
        raise UsageError(f"--dir {spec!r}: {host} is not a directory")
    return FolderConfig.model_validate({"from": path, "to": guest if sep else host, "writable": True})


def parse_env(spec: str) -> tuple[str, str]:
    name, sep, value = spec.partition("=")
    if not name:
        raise UsageError(f"--env {spec!r}: expected NAME[=VALUE]")
    return name, value if sep else os.environ.get(name, "")


def parse_nn_graph(spec: str) -> ModelConfig:
    encoding, sep, folder = spec.partition("::")
    if not sep or encoding not in _ENCODINGS or not folder:
        raise UsageError(f"--nn-graph {spec!r}: expected ENCODING::DIR with ENCODING one of {', '.join(_ENCODINGS)}")
    path = Path(folder).resolve()
    if not path.is_dir():
        raise UsageError(f"--nn-graph {spec!r}: {folder} is not a directory")
    fmt = _ENCODINGS[encoding]
    files = [path / "model.xml", path / "model.bin"] if fmt is ModelFormat.openvino else [path / "model.onnx"]
    return ModelConfig.model_validate({"name": path.name, "format": fmt, "files": files})


def build(args: argparse.Namespace) -> tuple[WorkerConfig, list[ModelConfig]]:
    """The worker and named models a command line describes (raises UsageError)."""
    nn_enabled = False
    graphs = list(args.nn_graph)
    for opt in args.wasi:
        if opt in ("nn", "nn=y"):
            nn_enabled = True
        elif opt.startswith("nn-graph="):
            graphs.append(opt.removeprefix("nn-graph="))
        else:
            raise UsageError(f"-S {opt}: unsupported (known: nn, nn-graph=ENCODING::DIR)")
    models = [parse_nn_graph(g) for g in graphs]
    worker = WorkerConfig(
        name=args.module.stem,
        module=args.module.resolve(),
        route="/",
        vars=dict(parse_env(e) for e in args.env),
        folders=[parse_dir(d) for d in args.dir],
        limits=Limits(memory_mib=args.max_memory_mib, timeout_seconds=args.timeout),
        wasi_nn=WasiNnConfig(
            enabled=nn_enabled or bool(models),
            allowed_backends=[BackendName.openvino, BackendName.onnxruntime],
            models=[m.name for m in models],
        ),
    )
    return worker, models


def main(args: argparse.Namespace) -> int:
    try:
        worker, models = build(args)
    except (UsageError, ValueError) as err:
        print(f"wasminfer run: {err}", file=sys.stderr)
        return USAGE_EXIT_CODE
    metrics = Metrics()
    registry = ModelRegistry(metrics)
    try:
        for m in models:
            registry.load(m)
    except ModelLoadError as err:
        print(f"wasminfer run: {err}", file=sys.stderr)
        return 1
    stdin = b"" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer.read()
    with RuntimeEngine(args.cache_dir, metrics) as engine:
        try:
            executor = WorkerExecutor(engine, registry, worker)
        except WorkerLoadError as err:
            hint = " (pass -S nn, or --nn-graph to preload a model)" if not worker.wasi_nn.enabled else ""
            print(f"wasminfer run: {err}{hint}", file=sys.stderr)
            return 1
        result = executor.invoke(stdin, extra_args(args))
    sys.stdout.buffer.write(result.stdout)
    sys.stdout.buffer.flush()
    sys.stderr.buffer.write(result.stderr)
    if result.outcome == "ok":
        return 0
    if result.outcome == "exit":
        return result.exit_code
    print(f"wasminfer run: {args.module}: {result.message}", file=sys.stderr)
    return TRAP_EXIT_CODE


def extra_args(args: argparse.Namespace) -> list[str]:
    extra = list(args.args)
    return extra[1:] if extra and extra[0] == "--" else extra
