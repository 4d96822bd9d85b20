"""`wasminfer run MODULE.wasm`: run one WASI command once, flags shaped like `wasmtime run -S nn`.

    wasminfer run --dir ./fixture::/fixture --nn-graph openvino::./models/mobilenet app.wasm ARGS
    wasminfer run app.wasm --dir ./fixture::/fixture --nn-graph openvino::./models/mobilenet -- ARGS

Options go before the module, as with wasmtime, or right after it up to `--`; everything after
the module that is not one of these options belongs to the guest. The guest's stdout and stderr go to ours and its exit code becomes ours (134 when it traps, times
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
    Device,
    FolderConfig,
    Limits,
    ModelConfig,
    ModelFormat,
    WasiNnConfig,
    WorkerConfig,
)
from wasminfer_runtime.engine import RuntimeEngine, WorkerLoadError
from wasminfer_runtime.component_executor import ComponentExecutor, new_executor
from wasminfer_runtime.executor import WorkerExecutor
from wasminfer_runtime.metrics import Metrics
from wasminfer_runtime.models import ModelLoadError, ModelRegistry

log = logging.getLogger(__name__)

TRAP_EXIT_CODE = 134  # what wasmtime returns for a trap (128 + SIGABRT)
USAGE_EXIT_CODE = 2
MAX_TIMEOUT_SECONDS = 3600.0  # the most a worker's limits allow

_ENCODINGS = {"openvino": ModelFormat.openvino, "onnx": ModelFormat.onnx, "ggml": ModelFormat.ggml}


class UsageError(Exception):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_options(parser)
    # One list, module first: a separate `module` positional would swallow the `--` after it.
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="MODULE [OPTIONS] [--] [ARGS]",
                        help="the WebAssembly module (a WASI command), options of this command up to `--`, "
                             "then the guest's arguments")


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", action="append", default=[], metavar="HOST[::GUEST]",
                        help="preopen a host directory (read-write, as in wasmtime); repeatable")
    parser.add_argument("--env", action="append", default=[], metavar="NAME[=VALUE]",
                        help="set a guest environment variable (NAME alone passes ours on); repeatable")
    parser.add_argument("--nn-graph", action="append", default=[], metavar="ENCODING::DIR",
                        help="preload DIR as the named model basename(DIR) (encoding openvino or onnx); repeatable")
    parser.add_argument("--nn-preload", action="append", default=[], metavar="NAME:ENCODING:TARGET:PATH",
                        help="preload a model file as NAME, as WasmEdge does (e.g. default:GGML:AUTO:model.gguf); repeatable")
    parser.add_argument("-S", dest="wasi", action="append", default=[], metavar="OPTION",
                        help="wasmtime-style WASI options: nn, nn-graph=ENCODING::DIR")
    parser.add_argument("--timeout", type=float, default=MAX_TIMEOUT_SECONDS, metavar="SECONDS",
                        help="stop the guest after this long (default: %(default)g)")
    parser.add_argument("--max-memory-mib", type=int, default=4096, metavar="MIB",
                        help="linear memory limit (default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="compiled-module cache (~/.cache/wasminfer)")


# The options above; each takes a value (`--dir X` or `--dir=X`; `-Snn` is `-S nn`).
_VALUED = ("--dir", "--env", "--nn-graph", "--nn-preload", "-S", "--timeout", "--max-memory-mib", "--cache-dir")


def _is_option(token: str) -> bool:
    return token in _VALUED or token.split("=", 1)[0] in _VALUED or (token.startswith("-S") and len(token) > 2)


def split_command(args: argparse.Namespace) -> list[str]:
    """Sets `args.module` and applies options written after it (up to `--`); returns the guest's arguments."""
    rest = list(args.args)
    if rest and rest[0] == "--":
        rest.pop(0)
    if not rest:
        raise UsageError("which module? usage: wasminfer run [OPTIONS] MODULE.wasm [OPTIONS] [--] [ARGS]")
    args.module = Path(rest.pop(0))
    ours: list[str] = []
    while rest and _is_option(rest[0]):
        token = rest.pop(0)
        ours.append(token)
        if token in _VALUED and rest:
            ours.append(rest.pop(0))
    if rest and rest[0] == "--":
        rest.pop(0)
    if ours:
        parser = argparse.ArgumentParser(prog="wasminfer run", add_help=False, exit_on_error=False)
        _add_options(parser)
        try:
            parser.parse_args(ours, namespace=args)
        except argparse.ArgumentError as err:
            raise UsageError(str(err)) from None
    return rest


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


def parse_nn_preload(spec: str) -> ModelConfig:
    """WasmEdge's `--nn-preload NAME:ENCODING:TARGET:PATH` (a file; a GGUF model for GGML)."""
    parts = spec.split(":", 3)
    if len(parts) != 4 or not parts[0] or parts[1].lower() not in _ENCODINGS or not parts[3]:
        raise UsageError(f"--nn-preload {spec!r}: expected NAME:ENCODING:TARGET:PATH with ENCODING one of {', '.join(_ENCODINGS)}")
    name, encoding, target, path = parts
    devices = {"cpu": Device.CPU, "gpu": Device.GPU, "auto": Device.CPU if encoding.lower() == "ggml" else Device.AUTO}
    if target.lower() not in devices:
        raise UsageError(f"--nn-preload {spec!r}: TARGET is one of CPU, GPU, AUTO")
    fmt = _ENCODINGS[encoding.lower()]
    file = Path(path).resolve()
    files = [file, file.with_suffix(".bin")] if fmt is ModelFormat.openvino else [file]
    return ModelConfig.model_validate({"name": name, "format": fmt, "device": devices[target.lower()], "files": files})


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
    models = [parse_nn_graph(g) for g in graphs] + [parse_nn_preload(p) for p in args.nn_preload]
    worker = WorkerConfig(
        name=args.module.stem,
        module=args.module.resolve(),
        route="/",
        vars=dict(parse_env(e) for e in args.env),
        folders=[parse_dir(d) for d in args.dir],
        limits=Limits(memory_mib=args.max_memory_mib, timeout_seconds=args.timeout),
        wasi_nn=WasiNnConfig(
            enabled=nn_enabled or bool(models),
            allowed_backends=[BackendName.openvino, BackendName.onnxruntime, BackendName.llamacpp],
            models=[m.name for m in models],
        ),
    )
    return worker, models


def main(args: argparse.Namespace) -> int:
    try:
        argv = split_command(args)
        worker, models = build(args)
    except (UsageError, ValueError) as err:
        print(f"wasminfer run: {err}", file=sys.stderr)
        return USAGE_EXIT_CODE
    metrics = Metrics()
    registry = ModelRegistry(metrics)
    try:
        for m in models:
            if m.format is ModelFormat.ggml and not m.files[0].is_file():
                print(f"wasminfer run: --nn-preload {m.name}: {m.files[0]} does not exist; the guest gets model_not_found",
                      file=sys.stderr)
                registry.mark_missing(m)
                continue
            registry.load(m)
    except ModelLoadError as err:
        print(f"wasminfer run: {err}", file=sys.stderr)
        return 1
    stdin = b"" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer.read()
    with RuntimeEngine(args.cache_dir, metrics) as engine:
        try:
            executor = new_executor(engine, registry, worker)
        except WorkerLoadError as err:
            hint = " (pass -S nn, or --nn-graph to preload a model)" if not worker.wasi_nn.enabled else ""
            print(f"wasminfer run: {err}{hint}", file=sys.stderr)
            return 1
        tee = _StreamedStdout(executor)
        if executor.nn is not None:  # stream-stdout: an LLM guest's tokens as they come
            executor.nn.llm_stdout = tee.token
        result = executor.invoke(stdin, argv)
    sys.stdout.buffer.write(result.stdout[tee.printed:])
    sys.stdout.buffer.flush()
    sys.stderr.buffer.write(result.stderr)
    sys.stderr.flush()
    for reason in result.nn_errors:  # the guest saw an errno; the user sees why
        print(f"wasminfer run: {reason}", file=sys.stderr)
    if result.outcome == "ok":
        return 0
    if result.outcome == "exit":
        return result.exit_code
    print(f"wasminfer run: {args.module}: {result.message}", file=sys.stderr)
    # wasmtime run: a core module's trap exits as an abort, a component's as a plain failure
    return 1 if isinstance(executor, ComponentExecutor) else TRAP_EXIT_CODE



class _StreamedStdout:
    """An LLM context's stream-stdout tokens on our stdout, in order with what the guest printed before
    each (its stdout is collected while it runs, and printed when it ends)."""

    def __init__(self, executor: WorkerExecutor) -> None:
        self.executor = executor
        self.printed = 0  # bytes of the guest's own stdout already printed

    def token(self, piece: bytes) -> None:
        out = self.executor.current_stdout
        if out is not None:
            size = os.fstat(out.fd).st_size
            if size > self.printed:
                sys.stdout.buffer.write(os.pread(out.fd, size - self.printed, self.printed))
                self.printed = size
        sys.stdout.buffer.write(piece)
        sys.stdout.buffer.flush()
