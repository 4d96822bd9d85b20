"""`wasminfer model-server CONFIG`: the named models of a runtime.yaml, served over the Open Inference Protocol.

The models load with the same backends, options and files as in `wasminfer serve`; the server
listens at once and answers `/v2/health/ready` (and each model's `ready`) once they are loaded, so
a Kubernetes readiness probe on it holds traffic until then. Workers in the file are not run here.
Models load in this process: a model server is a process of its own already, and the protocol's
metadata and output shapes come from the backends directly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from aiohttp import web

from wasminfer_runtime.config import LOAD_FAILURE_EXIT, ConfigError, RuntimeConfig, load_runtime_config
from wasminfer_runtime.metrics import Metrics
from wasminfer_runtime.modelpool import PoolArgsError, add_pool_arguments, pool_share
from wasminfer_runtime.models import ModelLoadError, ModelRegistry
from wasminfer_runtime.supply.sources import Supply, SupplyError
from wasminfer_runtime.oip.dataplane import DataPlane
from wasminfer_runtime.oip.rest import build_app
from wasminfer_runtime.service import default_threads

log = logging.getLogger(__name__)

DEFAULT_PORT = 8000  # the protocol's usual ports (Triton, KServe)
DEFAULT_GRPC_PORT = 8001
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
GRACE_SECONDS = 5.0  # inferences in flight when a stop comes get this long


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="a runtime.yaml: its models are served")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="HTTP port (default: %(default)s; 0 picks one)")
    parser.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT,
                        help="gRPC port (default: %(default)s; 0 picks one; -1: no gRPC)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=default_threads(), help="inferences at once (default: %(default)s)")
    parser.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES,
                        help="largest inference request body (default: %(default)s)")  # fmt: skip
    parser.add_argument("--max-requests", type=int, default=None,
                        help="inference requests in hand at once, per transport; more get 503 (gRPC: RESOURCE_EXHAUSTED) "
                        "before their bodies are read (default: 4 x --threads)")  # fmt: skip
    add_pool_arguments(parser, "loads")
    parser.add_argument("--exit-on-load-failure", action="store_true",
                        help=f"exit with code {LOAD_FAILURE_EXIT} when a model fails to load instead of serving the rest")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    try:
        cfg = load_runtime_config(args.config)
    except ConfigError as err:
        log.error("%s", err)
        return 2
    if not cfg.models:
        log.error("%s: no models to serve (add them under `models:`)", args.config)
        return 2
    if args.max_requests is None:
        args.max_requests = 4 * args.threads
    if args.threads < 1 or args.max_request_bytes < 1 or args.max_requests < 1:
        log.error("--threads, --max-request-bytes and --max-requests must be at least 1")
        return 2
    if cfg.workers:
        log.info("%s: %d worker(s) are not run by the model server", args.config, len(cfg.workers))
    try:
        elsewhere = pool_share(args, [m.name for m in cfg.models])
    except PoolArgsError as err:
        log.error("%s", err)
        return 2
    if elsewhere is not None:
        total = len(cfg.models)
        cfg = cfg.model_copy(update={"models": [m for m in cfg.models if m.name not in elsewhere]})
        log.info("pool replica %s of %d: %d of %d model(s) are placed here", args.pool_replica,
                 len(args.pool_replicas.split(",")), len(cfg.models), total)  # fmt: skip
    return asyncio.run(_serve(cfg, args, elsewhere or {}))


async def _serve(cfg: RuntimeConfig, args: argparse.Namespace, elsewhere: dict[str, tuple[str, ...]]) -> int:
    metrics = Metrics()
    registry = ModelRegistry(metrics, isolation="in-process")
    plane = DataPlane(registry, metrics, [m.name for m in cfg.models], threads=args.threads, elsewhere=elsewhere)
    runner = web.AppRunner(build_app(plane, metrics, args.max_request_bytes, args.max_requests), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    try:
        await site.start()
    except OSError as err:
        log.error("cannot listen on %s:%d: %s", args.host, args.port, err.strerror or err)
        await runner.cleanup()
        return 1
    port = runner.addresses[0][1] if runner.addresses else args.port
    log.info("model server listening on http://%s:%d (Open Inference Protocol v2 over REST)", args.host, port)
    grpc_server = None
    if args.grpc_port >= 0:
        from wasminfer_runtime.oip.grpc_server import build_server  # grpc loads only where it serves

        grpc_server = build_server(plane, args.max_request_bytes, args.max_requests)
        try:
            grpc_port = grpc_server.add_insecure_port(f"{args.host}:{args.grpc_port}")
        except RuntimeError as err:
            log.error("cannot listen on %s:%d for gRPC: %s", args.host, args.grpc_port, err)
            await runner.cleanup()
            return 1
        await grpc_server.start()
        log.info("model server listening on %s:%d (Open Inference Protocol v2 over gRPC)", args.host, grpc_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    failed: list[str] = []
    loading = asyncio.create_task(_load_all(cfg, registry, failed, stop if args.exit_on_load_failure else None))
    await stop.wait()
    loading.cancel()
    log.info("stopping")
    if grpc_server is not None:
        await grpc_server.stop(GRACE_SECONDS)
    await runner.cleanup()
    plane.close()
    registry.close()
    return LOAD_FAILURE_EXIT if failed and args.exit_on_load_failure else 0


async def _load_all(cfg: RuntimeConfig, registry: ModelRegistry, failed: list[str], stop: asyncio.Event | None) -> None:
    supply = Supply(cfg.server)
    for model in cfg.models:
        try:
            await asyncio.to_thread(lambda: registry.load(supply.prepare_model(model)))
        except (ModelLoadError, SupplyError) as err:
            log.error("%s", err)
            failed.append(str(err))
    log.info("%d of %d model(s) loaded", len(cfg.models) - len(failed), len(cfg.models))
    if failed and stop is not None:
        log.error("exiting with code %d: %d model(s) failed to load", LOAD_FAILURE_EXIT, len(failed))
        if cfg.server.termination_log is not None:  # where Kubernetes puts it into the pod's status
            try:
                cfg.server.termination_log.write_text(f"failed to load: {'; '.join(failed)}"[:4000])
            except OSError as err:
                log.warning("cannot write the termination log %s: %s", cfg.server.termination_log, err)
        stop.set()
