"""`wasminfer serve`: the HTTP front of the runtime (aiohttp).

Every path goes through one handler so precedence is explicit and wws-like: a fixed worker route,
then a static file from the public folder, then a dynamic worker route, then 404. `/healthz`,
`/readyz` and `/metrics` are reserved. A worker request becomes the wws JSON on the guest's
stdin (protocol.py); the invocation runs in a thread; the verdict maps to an HTTP status:

    guest ok, valid response   -> the worker's status, headers and body
    trap, nonzero exit, memory -> 500      invalid JSON on stdout -> 500
    (memory includes output beyond the host's capture cap)
    kv missing or over limits.max_kv_bytes (a worker with a key/value store) -> 500
    timeout                    -> 504      body over the limit    -> 413
    worker or its model not loaded (yet, or ever)                 -> 503
    body not arrived within server.body_timeout_seconds           -> 408 (connection closed)

Errors are JSON: {"error": kind, "worker": name, "message": why}, with the kind in the
X-Wasminfer-Error header. A wws folder (server.wws_compat) gets wws's own answers where wws has
one (wws_answers.py: any 500, a bad base64 body, no route), without our header (wws sends none):
the reason is in the log line. No answer names our server software.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError

from wasminfer_runtime.config import (
    LOAD_FAILURE_EXIT,
    ConfigError,
    RuntimeConfig,
    ServerConfig,
    WorkerConfig,
    format_validation_error,
    load_runtime_config,
)
from wasminfer_runtime.executor import Invocation, WorkerExecutor
from wasminfer_runtime.kv import KvRefused, KvStore
from wasminfer_runtime.metrics import Metrics
from wasminfer_runtime.modelhost.link import HostLink
from wasminfer_runtime.processes import ServingRole, Supervisor, default_processes, kv_workers, links_for
from wasminfer_runtime import wws_answers
from wasminfer_runtime.protocol import ProtocolError, decode_response, encode_request, request_url
from wasminfer_runtime.routing import RESERVED_PATHS, RouteError, RouteMatch, RouteTable
from wasminfer_runtime.service import Service, Unavailable, default_threads
from wasminfer_runtime.slowclients import REQUEST_TIMEOUT, AppRunner, send_and_close
from wasminfer_runtime.wws import load_wws_folder
from wasminfer_runtime.wws_answers import ERROR_HEADER, Answer

log = logging.getLogger(__name__)

SERVICE_KEY = web.AppKey("service", Service)
ROUTES_KEY = web.AppKey("routes", RouteTable)
ROLE_KEY = web.AppKey("serving_role", ServingRole)  # one of several serving processes

# Verdicts other than "ok" -> (HTTP status, error kind).
_FAILURES = {
    "trap": (500, "trap"),
    "exit": (500, "exit"),
    "memory": (500, "memory"),
    "timeout": (504, "timeout"),
}


def _error(status: int, kind: str, message: str, worker: str | None = None,
           answer: Answer | None = None) -> web.Response:
    """Our JSON error; `answer` is what wws sends instead (any 500: its failure page), which
    _as_wws swaps in for a wws folder."""
    doc: dict[str, Any] = {"error": kind}
    if worker is not None:
        doc["worker"] = worker
    doc["message"] = message
    resp = web.json_response(doc, status=status, headers={ERROR_HEADER: kind})
    answer = answer or (wws_answers.FAILED if status == 500 else None)
    if answer is not None:
        resp[_WWS_ANSWER] = answer
    return resp


_WWS_ANSWER = web.ResponseKey("wws_answer", Answer)


def _as_wws(resp: web.StreamResponse) -> web.StreamResponse:
    """wws's answer in place of our error, where wws has one (the log line has the reason)."""
    answer = resp.get(_WWS_ANSWER)
    if answer is None:
        return resp
    out = web.Response(status=answer.status, body=answer.body)
    if answer.content_type is not None:
        out.headers["content-type"] = answer.content_type
    else:
        out[_NO_CONTENT_TYPE] = True
    return out


_NO_CONTENT_TYPE = web.ResponseKey("no_content_type", bool)


async def _final_headers(request: web.Request, resp: web.StreamResponse) -> None:
    """No Server header (it names our versions); none of the content type aiohttp adds to a body
    when wws sends none."""
    resp.headers.popall("Server", None)
    if resp.get(_NO_CONTENT_TYPE):
        resp.headers.popall("Content-Type", None)


def _static(path: Path, wws_compat: bool) -> web.FileResponse:
    """A static file; in a wws folder with the headers wws's file service sends."""
    return web.FileResponse(path, headers=wws_answers.static_file_headers(path.name) if wws_compat else None)


# -- configuration -------------------------------------------------------------------------------


def load_config(folder: Path | None, config: Path | None, cache_dir: Path | None = None) -> RuntimeConfig:
    """The RuntimeConfig for `serve DIR` or `serve --config FILE` (raises ConfigError); cache_dir:
    `--cache-dir`, where a folder's JavaScript engine is looked up."""
    if (folder is None) == (config is None):
        raise ConfigError("serve takes a wws folder or --config runtime.yaml (exactly one)")
    if config is not None:
        cfg = load_runtime_config(config)
        check_paths(cfg, config)
        return cfg
    assert folder is not None
    return load_wws_folder(folder, cache_dir=cache_dir)  # checks its paths as it reads them


def check_paths(cfg: RuntimeConfig, source: Path) -> None:
    """Refuse a config whose model files or worker folders are missing (raises ConfigError).

    A missing module is left to its worker (it fails alone, like a module that does not compile).
    """
    for i, m in enumerate(cfg.models):
        for j, f in enumerate(m.files):
            if not f.is_file():
                raise ConfigError(f"{source}: models[{i}].files[{j}] (model {m.name!r}): {f} does not exist")
    for i, w in enumerate(cfg.workers):
        for j, folder in enumerate(w.folders):
            if not folder.from_.is_dir():
                raise ConfigError(f"{source}: workers[{i}].folders[{j}].from (worker {w.name!r}): "
                                  f"folder {folder.from_} does not exist")


def with_overrides(cfg: RuntimeConfig, **overrides: object) -> RuntimeConfig:
    """cfg with command-line values (those not None) replacing its server settings, validated."""
    server = cfg.server.model_dump(by_alias=True)
    server.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return cfg.model_copy(update={"server": ServerConfig.model_validate(server)})
    except ValidationError as err:
        raise ConfigError(format_validation_error("command line", err)) from None


def build_routes(cfg: RuntimeConfig) -> RouteTable:
    for w in cfg.workers:
        if w.route.rstrip("/") in RESERVED_PATHS:
            raise ConfigError(f"worker {w.name!r} ({w.module_label}): route {w.route} is reserved by the server")
    try:
        return RouteTable((w.route, w.name) for w in cfg.workers)
    except RouteError as err:
        raise ConfigError(f"routes: {err}") from None


# -- handlers ------------------------------------------------------------------------------------


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def _readyz(request: web.Request) -> web.Response:
    readiness = request.app[SERVICE_KEY].readiness()
    role = request.app.get(ROLE_KEY)
    if role is None:
        return web.json_response(readiness.as_json(), status=200 if readiness.ready else 503)
    ready, doc = role.pod_readiness(readiness)
    return web.json_response(doc, status=200 if ready else 503)


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[SERVICE_KEY].metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _static_file(public: Path | None, path: str, html_suffix: bool = True) -> Path | None:
    """The file under the public folder for a URL path (dir -> index.html, /about -> about.html
    unless not html_suffix: wws 1.7.0 does not look for NAME.html)."""
    if public is None:
        return None
    parts = [p for p in path.split("/") if p]
    if any(p.startswith(".") or "\0" in p for p in parts):
        return None  # `..`, hidden files, and names no file system takes
    root = public.resolve()
    try:
        target = root.joinpath(*parts)
        if target.is_dir():
            target = target / "index.html"
        elif html_suffix and not target.exists() and target.suffix == "":
            target = target.with_name(target.name + ".html")
        # Resolved once, after every fallback: no link, neither on the way nor the file itself
        # (an index.html or NAME.html), may lead out of the folder.
        target = target.resolve()
        return target if target.is_relative_to(root) and target.is_file() else None
    except (OSError, ValueError):
        return None


async def _dispatch(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE_KEY]
    match = request.app[ROUTES_KEY].match(request.path)
    if match is not None and not match.dynamic:
        return await _serve_worker(request, service, match)
    if request.method in ("GET", "HEAD"):
        static = _static_file(service.cfg.server.public_dir, request.path, not service.cfg.server.wws_compat)
        if static is not None:
            log.debug("%s %s -> static %s", request.method, request.path_qs, static)
            return _static(static, service.cfg.server.wws_compat)
    if match is not None:
        return await _serve_worker(request, service, match)
    log.debug("%s %s -> 404", request.method, request.path_qs)
    if service.cfg.server.wws_compat:
        return _wws_not_found(request, service.cfg.server.public_dir)
    not_found = _static_file(service.cfg.server.public_dir, "/404.html")
    if not_found is not None and request.method in ("GET", "HEAD"):
        return web.FileResponse(not_found, status=404)
    return _error(404, "not_found", f"no worker or static file for {request.path}")


def _wws_not_found(request: web.Request, public: Path | None) -> web.StreamResponse:
    """wws's answer when nothing serves a path: with a public folder, a method other than GET or
    HEAD is refused by its static file service, and public/404.html is sent as a file (status 200,
    as wws sends it); otherwise an empty 404."""
    if public is not None and request.method not in ("GET", "HEAD"):
        answer = wws_answers.METHOD_NOT_ALLOWED
    else:
        page = _static_file(public, "/404.html")
        if page is not None:
            return _static(page, True)
        answer = wws_answers.NOT_FOUND
    return _as_wws(_error(answer.status, "not_found", f"no worker or static file for {request.path}",
                          answer=answer))


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The request body, or None when it is larger than `limit`."""
    if not request.body_exists:
        return b""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _serve_worker(request: web.Request, service: Service, match: RouteMatch) -> web.StreamResponse:
    t0 = time.perf_counter()
    worker = service.workers[match.target]
    response = await _run_worker(request, service, worker, match)
    if service.cfg.server.wws_compat:
        response = _as_wws(response)
    seconds = time.perf_counter() - t0
    service.record_request(worker.name, response.status, seconds)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s %s -> %s %s %.2f ms", request.method, request.path_qs, worker.name, response.status,
                  seconds * 1e3)
    return response


async def _run_worker(
    request: web.Request, service: Service, worker: WorkerConfig, match: RouteMatch
) -> web.StreamResponse:
    executor = service.executor(worker.name)
    if isinstance(executor, Unavailable):
        resp = _error(503, "unavailable", executor.reason, worker.name)
        if not executor.failed:
            resp.headers["Retry-After"] = "1"
        return resp
    for name, value in request.headers.items():
        if not _is_text(value):
            # aiohttp keeps undecodable bytes as surrogates; the worker's JSON must be UTF-8.
            return _error(400, "bad_request", f"header {name!r} is not valid UTF-8", worker.name)
    limit = worker.limits.max_body_bytes
    # Read before the worker's gate, so a body that trickles in holds no slot, and within a time
    # limit, so it does not hold the connection either.
    body_timeout = service.cfg.server.body_timeout_seconds
    try:
        async with asyncio.timeout(body_timeout):
            body = await _read_body(request, limit)
    except TimeoutError:
        log.info("client %s: request body for worker %s not complete within %g s; answering 408 and closing",
                 request.remote, worker.name, body_timeout)
        return await send_and_close(request, _error(
            408, REQUEST_TIMEOUT, f"the request body did not arrive within {body_timeout:g} s", worker.name))
    if body is None:
        return _error(413, "body_too_large", f"the request body is larger than {limit} bytes", worker.name)
    # Encoded as the invocation starts, with the key/value state as it is then (wws reads the
    # store as it runs the worker, not while the request waits for a slot or a thread).
    stdin = functools.partial(
        encode_request,
        url=request_url(headers=request.headers.items(), host=request.host, target=request.raw_path),
        method=request.method,
        headers=request.headers.items(),
        body=body,
        params=match.params,
        binary_body=worker.binary_body,
    )
    gate = service.gates[worker.name]
    if gate.full():
        resp = _error(
            503, "busy", f"worker {worker.name!r} already runs {gate.running} request(s) and has {gate.waiting} waiting",
            worker.name,
        )
        resp.headers["Retry-After"] = "1"
        return resp
    kv = service.kv.for_worker(worker.name)
    try:
        async with gate:
            inv = await service.invoke_pool.run(_invoke, executor, stdin, kv)
            # Answered, and the store written, before the slot frees: with max_concurrency = 1
            # a worker's requests never overlap, so none of its writes is lost.
            return _respond(worker, inv, kv, strict=service.cfg.server.wws_compat)
    except Exception as err:  # a host bug must cost one request, never the server
        if service.closing:  # the pool refuses new work once shutdown began
            return _error(503, "unavailable", "the server is shutting down", worker.name)
        log.exception("worker %s: the host failed to run it", worker.name)
        return _error(500, "internal", f"the host failed to run worker {worker.name!r}: {err}", worker.name)


def _invoke(executor: WorkerExecutor, stdin: functools.partial[bytes], kv: KvStore | None) -> Invocation:
    return executor.invoke(stdin(kv=kv.snapshot() if kv is not None else None))


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _stderr_tail(inv: Invocation) -> str:
    tail = inv.stderr[-400:].decode("utf-8", "replace").strip()
    return f" (stderr: {tail})" if tail else ""


def _respond(worker: WorkerConfig, inv: Invocation, kv: KvStore | None = None, *, strict: bool = False) -> web.Response:
    if inv.model_failure is not None:  # not the guest's doing: the model's host failed under it
        log.warning("worker %s: %s", worker.name, inv.model_failure)
        resp = _error(503, "model_unavailable", f"worker {worker.name!r}: {inv.model_failure}", worker.name)
        resp.headers["Retry-After"] = "1"
        return resp
    if inv.outcome != "ok":
        status, kind = _FAILURES.get(inv.outcome, (500, inv.outcome))
        log.warning("worker %s: %s%s", worker.name, inv.message, _stderr_tail(inv))
        return _error(status, kind, f"worker {worker.name!r} {inv.message}", worker.name)
    try:
        out = decode_response(inv.stdout, strict=strict)
    except ProtocolError as err:
        extra = f"; {inv.message}" if inv.message else ""
        log.warning("worker %s: invalid response: %s%s%s", worker.name, err, extra, _stderr_tail(inv))
        return _error(500, "invalid_response", f"worker {worker.name!r} gave an invalid response: {err}{extra}",
                      worker.name, answer=err.answer)
    if kv is not None:  # as in wws, any valid response writes the store, whatever its status
        try:
            kv.replace(out.kv, worker=worker.name, limit=worker.limits.max_kv_bytes)
        except KvRefused as err:
            log.warning("%s", err)  # names the worker
            return _error(500, err.kind, str(err), worker.name)
    resp = web.Response(status=out.status, body=out.body)
    for name, value in out.headers:
        resp.headers.add(name, value)
    return resp


# -- app and lifecycle ---------------------------------------------------------------------------


def build_app(service: Service, routes: RouteTable, role: ServingRole | None = None) -> web.Application:
    app = web.Application()
    app[SERVICE_KEY] = service
    app[ROUTES_KEY] = routes
    if role is not None:
        app[ROLE_KEY] = role
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_route("*", "/{tail:.*}", _dispatch)
    app.on_response_prepare.append(_final_headers)

    async def on_startup(app: web.Application) -> None:
        app[SERVICE_KEY].start()

    async def on_shutdown(app: web.Application) -> None:  # before aiohttp waits for the requests in flight
        app[SERVICE_KEY].begin_shutdown()

    async def on_cleanup(app: web.Application) -> None:
        log.info("shutting down: waiting for running invocations")
        await asyncio.get_running_loop().run_in_executor(None, app[SERVICE_KEY].close)

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


def _log_plan(cfg: RuntimeConfig) -> None:
    for w in sorted(cfg.workers, key=lambda w: w.route):
        nn = f", wasi-nn models: {', '.join(w.wasi_nn.models) or '-'}" if w.wasi_nn.enabled else ""
        what = f"{w.source.file} on {w.module_label}" if w.source is not None else w.module_label
        log.info("route %-24s -> worker %s (%s%s)", w.route, w.name, what, nn)
    if cfg.server.public_dir is not None:
        log.info("static files from %s", cfg.server.public_dir)


async def start_server(
    cfg: RuntimeConfig, *, threads: int | None = None, metrics: Metrics | None = None,
    role: ServingRole | None = None, links: dict[str, HostLink] | None = None,
) -> tuple[web.AppRunner, str]:
    """Start serving cfg; returns the runner (await runner.cleanup() to stop) and the base URL.

    role, links: this is one of a supervisor's serving processes (processes.py), sharing the port
    and the hosts of the named models."""
    routes = build_routes(cfg)
    service = Service(cfg, metrics or Metrics(), threads=threads, links=links)
    if role is not None:
        service.on_change = role.publish
        role.publish(service.readiness())
    runner = AppRunner(build_app(service, routes, role), header_timeout=cfg.server.header_timeout_seconds,
                       access_log=None, handle_signals=False, shutdown_timeout=cfg.server.shutdown_grace_seconds)
    await runner.setup()
    site = web.TCPSite(runner, cfg.server.host, cfg.server.port, reuse_port=role is not None)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    host, port = runner.addresses[0][:2]
    url = f"http://{host}:{port}"
    log.info("serving %d worker(s) and %d model(s) on %s (models and workers load in the background)",
             len(cfg.workers), len(cfg.models), url)
    return runner, url


async def _serve(cfg: RuntimeConfig, threads: int, role: ServingRole | None) -> int:
    links = None
    if role is None:
        _log_plan(cfg)
    else:
        links = links_for(cfg)
        role.follow(links)
    # Before it listens: once the log says where it serves, a signal stops it gracefully.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        runner, _ = await start_server(cfg, threads=threads, role=role, links=links)
    except ConfigError as err:
        log.error("%s", err)
        return 2
    except OSError as err:
        log.error("cannot listen on %s:%d: %s", cfg.server.host, cfg.server.port, err.strerror or err)
        return 1
    failed: dict[str, str] = {}
    watcher = None
    if cfg.server.exit_on_load_failure:
        watcher = asyncio.create_task(_watch_loading(runner.app[SERVICE_KEY], cfg, failed, stop))
    await stop.wait()
    if watcher is not None:
        watcher.cancel()
    if not failed:
        log.info("signal received; stopping (grace %g s)", cfg.server.shutdown_grace_seconds)
    await runner.cleanup()
    log.info("stopped")
    return LOAD_FAILURE_EXIT if failed else 0


async def _watch_loading(service: Service, cfg: RuntimeConfig, failed: dict[str, str], stop: asyncio.Event) -> None:
    """With exit_on_load_failure: once loading is over, stop if anything failed, saying what and why
    (in the termination log too, where Kubernetes puts it into the pod's status)."""
    # Polled, not waited for in a thread: a stop during loading cancels the loads still queued, so
    # `loaded` may never be set, and a thread blocked on it would keep the process from exiting.
    while not service.loaded.is_set():
        await asyncio.sleep(0.05)
    failed.update(service.readiness().failed)
    if not failed:
        return
    summary = "; ".join(f"{what}: {why}" for what, why in sorted(failed.items()))
    log.error("exiting with code %d: failed to load: %s", LOAD_FAILURE_EXIT, summary)
    if cfg.server.termination_log is not None:
        try:
            cfg.server.termination_log.write_text(f"failed to load: {summary}"[:4000])
        except OSError as err:
            log.warning("cannot write the termination log %s: %s", cfg.server.termination_log, err)
    stop.set()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", nargs="?", type=Path, help="a wws folder: *.wasm workers, *.toml configs, public/")
    parser.add_argument("--config", type=Path, help="a runtime.yaml instead of a folder")
    parser.add_argument("--host", help="address to listen on (default: the config's, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default: the config's, 8080; 0 picks one)")
    parser.add_argument("--cache-dir", type=Path, help="compiled-module cache (default ~/.cache/wasminfer)")
    parser.add_argument("--threads", type=int,
                        help=f"concurrent worker invocations per process (default: {default_threads()} with one "
                        "process, that divided among several, at least 4)")
    parser.add_argument("--processes", type=int,
                        help="serving processes sharing the port (default: the config's server.processes, else the "
                        "CPU limit of this cgroup or the cores; 1 when a worker has a key/value store)")


def main(args: argparse.Namespace) -> int:
    try:
        cfg = with_overrides(load_config(args.folder, args.config, args.cache_dir), host=args.host, port=args.port,
                             cache_dir=args.cache_dir)
        build_routes(cfg)
    except ConfigError as err:
        log.error("%s", err)
        return 2
    if args.threads is not None and args.threads < 1:
        log.error("--threads must be at least 1")
        return 2
    role = ServingRole.from_env()
    if role is not None:  # one of a supervisor's serving processes (which passes --threads)
        for handler in logging.getLogger().handlers:
            handler.setFormatter(logging.Formatter(role.log_format()))
        return asyncio.run(_serve(cfg, args.threads or default_threads(), role))
    count = _process_count(cfg, args.processes)
    if count is None:
        return 2
    threads = args.threads or default_threads(count)
    if count > 1:
        _log_plan(cfg)
        return Supervisor(cfg, count, _child_argv(args, threads)).run()
    return asyncio.run(_serve(cfg, threads, None))


def _process_count(cfg: RuntimeConfig, flag: int | None) -> int | None:
    """How many serving processes (None: a refusal, logged)."""
    asked = flag if flag is not None else cfg.server.processes
    if asked is not None and asked < 1:
        log.error("--processes must be at least 1")
        return None
    count = asked or default_processes()
    kv = kv_workers(cfg)
    if count > 1 and kv:
        if asked is not None:
            log.error("%d processes asked for, but worker(s) %s keep a key/value store in the memory of one "
                      "process; serve them with --processes 1", count, ", ".join(kv))
            return None
        log.info("serving with one process: worker(s) %s keep a key/value store in its memory", ", ".join(kv))
        return 1
    return count


def _child_argv(args: argparse.Namespace, threads: int) -> list[str]:
    """This `serve` command for a serving process (the supervisor adds --port and --processes)."""
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
    argv = [sys.executable, "-m", "wasminfer_runtime", "--log-level", level, "serve"]
    argv += [str(args.folder)] if args.folder is not None else ["--config", str(args.config)]
    if args.host is not None:
        argv += ["--host", args.host]
    if args.cache_dir is not None:
        argv += ["--cache-dir", str(args.cache_dir)]
    return [*argv, "--threads", str(threads)]
