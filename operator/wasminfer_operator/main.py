"""`wasminfer-operator`: reconcile InferenceModels and WasmWorkers into runtime Deployments.

Runs kopf with a liveness endpoint, JSON logs and Lease-based leader election on kopf's event loop
(several replicas can run; the Lease holder acts, the others keep warm caches; a holder stopped by
SIGTERM releases the Lease to them). Connects with the in-cluster service
account, or with $KUBECONFIG / --kubeconfig outside a cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

import kopf
from kubernetes import client, config

from wasminfer_operator import __version__
from wasminfer_operator.handlers import Operator, register
from wasminfer_operator.kube import Kube
from wasminfer_operator.handmade.namespaces import install as notice_every_new_namespace
from wasminfer_operator.handmade.lease import Leadership, LeaseSettings, default_identity
from wasminfer_operator.profiles import ConfigurationError, load_operator_config
from wasminfer_operator.reconcile import Reconciler

log = logging.getLogger("wasminfer.operator")

LOST_LEADERSHIP_EXIT = 3


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wasminfer-operator", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--config", type=Path, help="operator configuration YAML: device profiles, images (env WASMINFER_OPERATOR_CONFIG)")
    p.add_argument("--runtime-image", help="default runtime image (env WASMINFER_RUNTIME_IMAGE)")
    p.add_argument("--kubeconfig", type=Path, help="kubeconfig file (default: in-cluster account, else $KUBECONFIG)")
    p.add_argument("-n", "--namespace", action="append", default=[], help="watch only this namespace (repeatable; default: all)")
    p.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint URL (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=16, help="objects reconciled at the same time (default: %(default)s)")
    p.add_argument("--leader-election", action=argparse.BooleanOptionalAction, default=True, help="hold a Lease before acting (default: on)")
    p.add_argument("--lease-name", default="wasminfer-operator")
    p.add_argument("--lease-namespace", default=os.environ.get("POD_NAMESPACE", "default"), help="namespace of the Lease (env POD_NAMESPACE)")
    p.add_argument("--lease-duration", type=float, default=15, help="seconds a standby waits before taking a Lease not renewed (default: %(default)s)")
    p.add_argument("--renew-deadline", type=float, default=10, help="seconds the leader keeps retrying a failed renewal before it stops (default: %(default)s)")
    p.add_argument("--retry-period", type=float, default=2, help="seconds between renewals and between a standby's attempts (default: %(default)s)")
    p.add_argument("--identity", default=None, help="this replica's name in the Lease (default: hostname + random suffix)")
    p.add_argument("--log-format", choices=["json", "text"], default="json", help="structured JSON lines or text (default: %(default)s)")
    p.add_argument("--verbose", action="store_true", help="debug logs")
    return p


def _load_kube(kubeconfig: Path | None) -> client.ApiClient:
    if kubeconfig is not None:
        os.environ["KUBECONFIG"] = str(kubeconfig)  # kopf's own login reads it too
        config.load_kube_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    elif os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = 32
    return client.ApiClient(configuration)


def liveness_clash(url: str) -> str | None:
    """Why the liveness endpoint cannot listen, or None. Checked before the Lease is taken: a replica
    that cannot serve its probe must not hold leadership while its pod is restarted."""
    parts = urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port or 80
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the endpoint's server does
            s.bind(address)
    except OSError as err:
        return f"--liveness {url}: cannot listen on {host} port {port}: {err.strerror or err}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL)
    if not args.verbose:
        # kopf reports every handled watch event at INFO; with thousands of objects that is noise.
        for noisy in ("kopf.objects", "aiohttp.access"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        cfg = load_operator_config(args.config)
        lease = LeaseSettings(args.lease_name, args.lease_namespace, args.lease_duration, args.renew_deadline, args.retry_period)
        lease.check()
    except (ConfigurationError, ValueError) as err:
        log.error("%s", err)
        return 2
    if args.runtime_image:
        cfg = cfg.model_copy(update={"image": args.runtime_image})
    clash = liveness_clash(args.liveness)
    if clash is not None:
        log.error("%s", clash)
        return 2
    try:
        api_client = _load_kube(args.kubeconfig)
    except (config.ConfigException, OSError) as err:
        log.error("cannot load Kubernetes credentials: %s", err)
        return 2

    kube = Kube(api_client, threads=args.concurrency)
    op = Operator(cfg=cfg, kube=kube, concurrency=args.concurrency, namespaces=list(args.namespace))
    notice_every_new_namespace()
    registry = kopf.OperatorRegistry()
    register(registry, op)
    log.info(
        "wasminfer-operator %s: namespaces=%s, profiles=%s, image=%s, leader election=%s",
        __version__,
        ",".join(args.namespace) or "all",
        ",".join(cfg.profiles),
        cfg.image,
        "on" if args.leader_election else "off",
    )
    lost: list[str] = []

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[None] = loop.create_future()  # kopf stops as on SIGTERM when it is set
        leadership: Leadership | None = None
        election: asyncio.Task[None] | None = None

        def lead() -> None:
            if op.reconciler is not None:
                op.reconciler.become_leader()

        def step_down(reason: str) -> None:
            lost.append(reason)
            if op.reconciler is not None:
                op.reconciler.leading.clear()
            if not stop.done():
                stop.set_result(None)

        def on_ready(r: Reconciler) -> None:
            if leadership is None or leadership.leading.is_set():
                r.become_leader()

        op.on_ready.append(on_ready)
        if args.leader_election:
            leadership = Leadership(lease, args.identity or default_identity(), api_client, on_started=lead, on_stopped=step_down)
            election = asyncio.create_task(leadership.run(), name="leader-election")
        try:
            await kopf.operator(
                registry=registry,
                standalone=True,
                clusterwide=not args.namespace,
                namespaces=args.namespace,
                liveness_endpoint=args.liveness,
                stop_flag=stop,
            )
        finally:
            if leadership is not None and election is not None:
                # kopf's cleanup has stopped the reconciler: nothing acts for this replica any more.
                leadership.halt()
                await asyncio.gather(election, return_exceptions=True)
                await leadership.release()

    try:
        asyncio.run(serve())
    except asyncio.CancelledError:
        pass
    finally:
        kube.close()
    if lost:
        log.error("stopped: no longer the leader (%s); exiting so that the pod restarts as a standby", lost[0])
        return LOST_LEADERSHIP_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
