"""How the operator should cache its children: kopf indexes, or the hand-made informers.

    python bench/operator_caches.py --kubeconfig FILE --namespace NS --variant kopf|handmade --expect N

One run in a fresh process: it caches the Deployments, Services, ConfigMaps and Pods the operator
rendered in NS (label app.kubernetes.io/managed-by=wasminfer-operator) until each kind holds N
objects, keeping the same compact views either way, then prints one JSON line: seconds until
filled, peak RSS (VmHWM) and RSS before the first list, in MB. `bench/operator_scale.py` runs both
variants over its 1,000 workers; the numbers decide which the operator uses
(`wasminfer_operator/handmade/__init__.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import kopf
from kubernetes import client, config

from wasminfer_operator.handmade.informer import ChildCaches
from wasminfer_operator.observe import child_view, pod_view

KINDS = [("apps", "v1", "deployments"), ("", "v1", "services"), ("", "v1", "configmaps"), ("", "v1", "pods")]
MB = 1024.0
TIMEOUT = 240.0  # seconds a variant may take to cache everything


def vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def report(variant: str, began: float, base_kib: int) -> None:
    print(json.dumps({
        "variant": variant, "seconds": round(time.monotonic() - began, 2),
        "peak_mb": round(vm_kib("VmHWM") / MB, 1), "base_mb": round(base_kib / MB, 1),
    }), flush=True)  # fmt: skip


def run_handmade(ns: str, expect: int) -> None:
    api_client = client.ApiClient(client.Configuration.get_default_copy())
    base = vm_kib("VmRSS")
    began = time.monotonic()

    async def main() -> None:
        caches = ChildCaches()
        filled = caches.start(api_client, [ns], asyncio.get_running_loop(), lambda *_: None, lambda *_: None)
        try:
            await asyncio.wait_for(asyncio.gather(*(event.wait() for event in filled)), TIMEOUT)
        except asyncio.TimeoutError:
            print(json.dumps({"variant": "handmade", "error": f"not filled after {TIMEOUT} s"}), flush=True)
            os._exit(1)
        sizes = [sum(len(v) for v in index.values()) for index in (caches.deployments, caches.services, caches.config_maps, caches.pods)]
        if min(sizes) < expect:
            raise SystemExit(f"handmade: cached {sizes}, expected {expect} of each kind")
        report("handmade", began, base)
        os._exit(0)  # the informer threads need no orderly stop here

    asyncio.run(main())


def run_kopf(ns: str, expect: int) -> None:
    registry = kopf.OperatorRegistry()
    base = vm_kib("VmRSS")
    began = time.monotonic()
    selector = {"app.kubernetes.io/managed-by": "wasminfer-operator"}

    for group, version, plural in KINDS:
        view = pod_view if plural == "pods" else child_view

        def index(body: kopf.Body, view: Any = view, **_: Any) -> dict[tuple[str, str], Any]:
            v = view(body)
            return {(str(body.metadata.namespace), v.worker): v}

        kopf.index(group, version, plural, labels=selector, registry=registry, id=f"{plural}_by_worker")(index)

    @kopf.on.startup(registry=registry)
    async def watch_sizes(**kwargs: Any) -> None:
        async def poll() -> None:
            indexes = [kwargs[f"{plural}_by_worker"] for _, _, plural in KINDS]
            last = 0.0
            while min(sizes := [sum(len(store) for store in index.values()) for index in indexes]) < expect:
                if time.monotonic() - last > 5:
                    print(f"kopf: cached {dict(zip((p for _, _, p in KINDS), sizes))} after {time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)
                    last = time.monotonic()
                if time.monotonic() - began > TIMEOUT:
                    print(json.dumps({"variant": "kopf", "error": f"cached {sizes} of {expect} after {TIMEOUT} s"}), flush=True)
                    os._exit(1)
                await asyncio.sleep(0.05)
            report("kopf", began, base)
            os._exit(0)  # the numbers are out; kopf's orderly stop adds nothing to them

        asyncio.get_running_loop().create_task(poll())

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    async def main() -> None:
        await kopf.operator(registry=registry, standalone=True, clusterwide=False, namespaces=[ns])

    asyncio.run(main())


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kubeconfig", type=Path, required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--variant", choices=["kopf", "handmade"], required=True)
    p.add_argument("--expect", type=int, required=True, help="objects of each kind to wait for")
    return p.parse_args()


def main() -> int:
    args = parse()
    logging.basicConfig(level=logging.WARNING)
    os.environ["KUBECONFIG"] = str(args.kubeconfig)
    config.load_kube_config(config_file=str(args.kubeconfig))  # type: ignore[no-untyped-call]
    if args.variant == "kopf":
        run_kopf(args.namespace, args.expect)
    else:
        run_handmade(args.namespace, args.expect)
    return 0


if __name__ == "__main__":
    sys.exit(main())
