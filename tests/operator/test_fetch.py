"""`wasminfer fetch` against a real HTTPS server on 127.0.0.1 (its own CA): sha256 checks, retries,
resumed downloads, fail-fast on 4xx, local ConfigMap/claim files, the command line and its exit codes."""

from __future__ import annotations

import argparse
import datetime
import hashlib
import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from wasminfer_runtime import fetch, modelpool, progress
from wasminfer_runtime.fetch import FetchPlan, fetch_all

MODEL = bytes(range(256)) * 4096  # 1 MiB
SMALL = b"\x00asm\x01\x00\x00\x00"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cert(tmp: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 signed by it."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fetch test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


@dataclass
class Server:
    base: str
    ca: Path
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    failures: dict[str, int] = field(default_factory=dict)  # path -> 503s still to answer
    truncate: set[str] = field(default_factory=set)  # paths whose first answer breaks off halfway


FILES = {"/m/model.bin": MODEL, "/m/hello.wasm": SMALL}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    ca, cert, key = _cert(tmp_path)
    srv = Server(base="", ca=ca)

    async def handle(request: web.Request) -> web.StreamResponse:
        path, rng = request.path, request.headers.get("Range")
        srv.requests.append((path, rng))
        if srv.failures.get(path, 0) > 0:
            srv.failures[path] -= 1
            return web.Response(status=503, text="try later")
        data = FILES.get(path.replace("/bad", ""))
        if data is None:
            return web.Response(status=404, text="no such file")
        if path.startswith("/bad"):
            data = data[:-1] + b"!"
        start = int(rng.split("=")[1].rstrip("-")) if rng else 0
        resp = web.StreamResponse(status=206 if rng else 200)
        resp.content_length = len(data) - start
        await resp.prepare(request)
        if path in srv.truncate:
            srv.truncate.discard(path)
            await resp.write(data[start : start + len(data) // 3])
            assert request.transport is not None
            request.transport.close()  # the connection drops mid-body
            return resp
        await resp.write(data[start:])
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    srv.base = f"https://127.0.0.1:{port}"
    yield srv
    await runner.cleanup()


def plan(server: Server, files: Sequence[Mapping[str, object]], **kw: object) -> FetchPlan:
    return FetchPlan.model_validate({"files": files, "ca_file": str(server.ca), "backoff_seconds": 0.01, **kw})


async def test_downloads_verify_and_report_progress(server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "PROGRESS_EVERY_SECONDS", 0.0)
    caplog.set_level(logging.INFO, "wasminfer.fetch")
    files = [
        {"url": f"{server.base}/m/model.bin", "sha256": sha(MODEL), "dest": str(tmp_path / "models/m/model.bin")},
        {"url": f"{server.base}/m/hello.wasm", "sha256": sha(SMALL), "dest": str(tmp_path / "modules/hello.wasm")},
    ]
    assert await fetch_all(plan(server, files)) == []
    assert (tmp_path / "models/m/model.bin").read_bytes() == MODEL
    assert (tmp_path / "modules/hello.wasm").read_bytes() == SMALL
    assert not list(tmp_path.rglob("*.part"))
    assert "model.bin: downloaded 1.0 MiB" in caplog.text and "sha256 ok" in caplog.text
    assert "MiB / 1.0 MiB" in caplog.text, "progress lines while bytes arrive"


async def test_a_file_already_in_place_is_not_downloaded_again(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    dest.write_bytes(MODEL)
    assert await fetch_all(plan(server, [{"url": f"{server.base}/m/model.bin", "sha256": sha(MODEL), "dest": str(dest)}])) == []
    assert server.requests == []


async def test_server_errors_are_retried(server: Server, tmp_path: Path) -> None:
    server.failures["/m/hello.wasm"] = 2
    dest = tmp_path / "hello.wasm"
    assert await fetch_all(plan(server, [{"url": f"{server.base}/m/hello.wasm", "sha256": sha(SMALL), "dest": str(dest)}])) == []
    assert dest.read_bytes() == SMALL and len(server.requests) == 3


async def test_a_broken_transfer_resumes_with_a_range_request(server: Server, tmp_path: Path) -> None:
    server.truncate.add("/m/model.bin")
    dest = tmp_path / "model.bin"
    assert await fetch_all(plan(server, [{"url": f"{server.base}/m/model.bin", "sha256": sha(MODEL), "dest": str(dest)}])) == []
    assert dest.read_bytes() == MODEL
    assert server.requests[0] == ("/m/model.bin", None)
    assert server.requests[1][1] is not None and server.requests[1][1].startswith("bytes=")


async def test_not_found_fails_at_once(server: Server, tmp_path: Path) -> None:
    errors = await fetch_all(plan(server, [{"url": f"{server.base}/m/absent.bin", "sha256": sha(b""), "dest": str(tmp_path / "x")}]))
    assert errors == [f"{server.base}/m/absent.bin: HTTP 404 Not Found"]
    assert len(server.requests) == 1 and not (tmp_path / "x").exists()


async def test_checksum_mismatch_is_refused_and_nothing_is_left_in_place(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "models" / "model.bin"
    errors = await fetch_all(plan(server, [{"url": f"{server.base}/bad/m/model.bin", "sha256": sha(MODEL), "dest": str(dest)}], retries=2))
    assert len(errors) == 1
    assert f"sha256 mismatch: expected {sha(MODEL)}, got {sha(MODEL[:-1] + b'!')}" in errors[0] and "gave up after 2 attempts" in errors[0]
    assert list(dest.parent.iterdir()) == [], "neither the file nor a partial download is left"


async def test_certificates_are_verified(server: Server, tmp_path: Path) -> None:
    p = FetchPlan.model_validate({"files": [{"url": f"{server.base}/m/hello.wasm", "sha256": sha(SMALL), "dest": str(tmp_path / "h")}], "retries": 1})
    (error,) = await fetch_all(p)
    assert "certificate" in error.lower()


async def test_local_files_are_verified_and_copied(server: Server, tmp_path: Path) -> None:
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    (mounted / "model.xml").write_bytes(b"<net/>")
    (mounted / "weights.bin").write_bytes(MODEL)
    files = [
        {"path": str(mounted / "model.xml"), "sha256": sha(b"<net/>"), "dest": str(tmp_path / "out/model.xml")},
        {"path": str(mounted / "weights.bin"), "sha256": sha(MODEL)},  # a claim: verified in place
    ]
    assert await fetch_all(plan(server, files)) == []
    assert (tmp_path / "out/model.xml").read_bytes() == b"<net/>"
    wrong = [{"path": str(mounted / "model.xml"), "sha256": sha(b"other")}, {"path": str(mounted / "absent.bin")}]
    errors = sorted(await fetch_all(plan(server, wrong)))
    assert "absent.bin: not found" in errors[0]
    assert "model.xml: sha256 mismatch" in errors[1]


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    fetch.add_arguments(parser)
    return fetch.main(parser.parse_args(list(argv)))


def test_cli_plan_success_and_failure_with_termination_log(tmp_path: Path) -> None:
    (tmp_path / "src.bin").write_bytes(SMALL)
    ok = tmp_path / "ok.yaml"
    ok.write_text(f"files:\n  - path: {tmp_path / 'src.bin'}\n    sha256: {sha(SMALL)}\n    dest: {tmp_path / 'dst/src.bin'}\n")
    assert run_cli("--plan", str(ok)) == 0 and (tmp_path / "dst/src.bin").read_bytes() == SMALL
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"files:\n  - path: {tmp_path / 'nope.bin'}\n")
    log = tmp_path / "termination-log"
    assert run_cli("--plan", str(bad), "--termination-log", str(log)) == 1
    assert "1 of 1 file(s) failed" in log.read_text() and "nope.bin: not found" in log.read_text()


def test_cli_single_file(tmp_path: Path) -> None:
    (tmp_path / "a.wasm").write_bytes(SMALL)
    assert run_cli(str(tmp_path / "a.wasm"), "--sha256", sha(SMALL), "-o", str(tmp_path / "b.wasm")) == 0
    assert (tmp_path / "b.wasm").read_bytes() == SMALL
    assert run_cli(str(tmp_path / "a.wasm"), "--sha256", sha(b"x"), "-o", str(tmp_path / "c.wasm")) == 1


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("files:\n  - url: https://x.example.com/a\n    dest: /a\n", "a url needs its sha256"),
        ("files:\n  - url: https://x.example.com/a\n    sha256: " + "ab" * 32 + "\n", "a url needs a dest"),
        ("files:\n  - url: http://x.example.com/a\n    sha256: " + "ab" * 32 + "\n    dest: /a\n", "plain http:// is refused"),
        ("files:\n  - path: /a\n    url: https://x.example.com/a\n", "set exactly one of url or path"),
        ("files:\n  - path: /a\n    sha256: XYZ\n", "files.0.sha256"),
        ("retries: 0\n", "retries"),
        ("files: [\n", "not valid YAML"),
    ],
)
def test_cli_refuses_bad_plans_naming_the_key(tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str, needle: str) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    assert run_cli("--plan", str(path)) == 2
    assert needle in caplog.text and str(path) in caplog.text


def test_cli_needs_a_plan_or_a_source(caplog: pytest.LogCaptureFixture) -> None:
    assert run_cli() == 2
    assert "give either --plan FILE or one SOURCE" in caplog.text


def test_a_pool_replica_fetches_only_the_files_of_the_models_placed_on_it(tmp_path: Path) -> None:
    models = [f"m{i}" for i in range(12)]
    lines = ["files:"]
    for m in models:
        (tmp_path / f"{m}.onnx").write_bytes(m.encode())
        lines += [f"  - path: {tmp_path / f'{m}.onnx'}", f"    dest: {tmp_path / 'dst' / m / 'model.onnx'}", f"    model: {m}"]
    (tmp_path / "w.wasm").write_bytes(SMALL)  # a file of no model (a worker's module) is always fetched
    lines += [f"  - path: {tmp_path / 'w.wasm'}", f"    dest: {tmp_path / 'dst' / 'w.wasm'}"]
    plan = tmp_path / "plan.yaml"
    plan.write_text("\n".join(lines) + "\n")
    replicas = ["pool-0", "pool-1", "pool-2"]
    assert run_cli("--plan", str(plan), "--pool-replicas", ",".join(replicas), "--pool-replica", "pool-1") == 0
    fetched = sorted(p.parent.name for p in (tmp_path / "dst").glob("*/model.onnx"))
    assert fetched == sorted(modelpool.held_by(modelpool.place(models, replicas), "pool-1"))
    assert 0 < len(fetched) < len(models) and (tmp_path / "dst" / "w.wasm").exists()
    assert run_cli("--plan", str(plan), "--pool-replicas", "pool-0", "--pool-replica", "pool-9") == 2
