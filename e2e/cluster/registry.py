"""A real OCI distribution registry (github.com/distribution/distribution, built by e2e/cluster/build)
on 127.0.0.1 with TLS from its own CA and htpasswd basic auth: where the tests push and pull modules,
models and their cosign signatures. `e2e/cluster/up` starts one beside the control plane; the
runtime's tests start their own with `start_registry`, which can also run it with the token login
public registries use (Docker's token protocol: a Bearer challenge, and a token service here that
trades the login for a short-lived signed token)."""

from __future__ import annotations

import base64
import json
import os
import secrets
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import yaml

from . import pki, processes
from .launcher import Launcher

USERNAME = "wasminfer"
READY_SECONDS = 30.0


@dataclass(frozen=True)
class RegistryFiles:
    """What a client needs: the address, the CA that signed the registry's certificate, the login."""

    address: str  # 127.0.0.1:PORT
    ca_file: Path
    username: str
    password: str
    docker_config: Path  # a Docker config.json with the login (what a pull secret holds)
    storage: Path  # where the registry keeps repositories and blobs (docker/registry/v2/...)


def write_files(directory: Path, port: int, bin_dir: Path, host: str = "127.0.0.1", debug_port: int | None = None,
                tokens: TokenService | None = None) -> tuple[RegistryFiles, list[str]]:
    """The registry's certificate, htpasswd and config under directory; returns them and its argv. It
    listens on host:port (the real node's address when pods pull from it), and with debug_port answers
    its health at http://127.0.0.1:DEBUG_PORT/debug/health. With `tokens`, clients log in through that
    token service instead of sending the login to the registry."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = pki.new_ca("wasminfer-test-registry-ca")
    serving = pki.issue(ca, host, ip_addresses=tuple(sorted({"127.0.0.1", host})), dns_names=("localhost",), server=True)
    ca_file = directory / "ca.crt"
    ca_file.write_bytes(ca.cert_pem)
    cert, key = serving.write(directory, "registry")
    password = secrets.token_urlsafe(18)
    htpasswd = directory / "htpasswd"
    htpasswd.write_text(f"{USERNAME}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=6)).decode()}\n")
    storage = directory / "storage"
    storage.mkdir(exist_ok=True)
    config = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {
            "addr": f"{host}:{port}", "secret": secrets.token_hex(16), "tls": {"certificate": str(cert), "key": str(key)},
            **({"debug": {"addr": f"127.0.0.1:{debug_port}"}} if debug_port is not None else {}),
        },
        "auth": tokens.auth_config(directory) if tokens else {"htpasswd": {"realm": "wasminfer-test-registry", "path": str(htpasswd)}},
    }
    config_file = directory / "config.yml"
    config_file.write_text(yaml.safe_dump(config))
    address = f"{host}:{port}"
    login = {"auths": {address: {"auth": base64.b64encode(f"{USERNAME}:{password}".encode()).decode()}}}
    docker_config = directory / "docker-config.json"
    docker_config.write_text(json.dumps(login))
    docker_config.chmod(0o600)
    argv = [str(bin_dir / "registry"), "serve", str(config_file)]
    files = RegistryFiles(address, ca_file, USERNAME, password, docker_config, storage)
    if tokens is not None:
        tokens.password = password
    (directory / "registry.json").write_text(json.dumps({"address": address, "password": password}))
    return files, argv


def files_in(directory: Path) -> RegistryFiles:
    """The files of a registry started before (by `e2e/cluster/up`), from its folder."""
    saved = json.loads((directory / "registry.json").read_text())
    return RegistryFiles(saved["address"], directory / "ca.crt", USERNAME, saved["password"], directory / "docker-config.json",
                         directory / "storage")


def start_cluster_registry(launcher: Launcher, directory: Path, host: str) -> RegistryFiles:
    """The cluster's registry, started and watched like its other components."""
    files: RegistryFiles | None = None

    def make() -> tuple[list[str], str, list[int]]:
        nonlocal files
        port, debug = launcher.pick_port(), launcher.pick_port()
        files, argv = write_files(directory, port, Path(launcher.cluster.bin_dir), host, debug)
        return argv, f"http://127.0.0.1:{debug}/debug/health", [port, debug]

    launcher.start("registry", make, env=registry_env())
    assert files is not None
    return files


def registry_env() -> dict[str, str]:
    # distribution v3 exports traces over OTLP by default; nothing listens for them here.
    return {**os.environ, "OTEL_TRACES_EXPORTER": "none", "OTEL_SDK_DISABLED": "true"}


def is_ready(files: RegistryFiles) -> bool:
    """The registry answers /v2/ over TLS (401 without credentials is an answer)."""
    import urllib.error
    import urllib.request

    context = ssl.create_default_context(cafile=str(files.ca_file))
    try:
        urllib.request.urlopen(f"https://{files.address}/v2/", context=context, timeout=2)
        return True
    except urllib.error.HTTPError as err:
        return err.code == 401
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class RunningRegistry:
    files: RegistryFiles
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_registry(directory: Path, bin_dir: Path, tokens: TokenService | None = None) -> RunningRegistry:
    """Starts a registry for this process's tests and waits until it answers (a taken port is retried)."""
    log = directory / "registry.log"
    for _ in range(3):
        files, argv = write_files(directory, processes.free_port(), bin_dir, tokens=tokens)
        child = processes.start(argv, log, env=registry_env(), die_with_parent=True)
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline and child.poll() is None:
            if is_ready(files):
                return RunningRegistry(files, child, log)
            time.sleep(0.1)
        if child.poll() is None:
            child.kill()
        child.wait()
        if not processes.mentions_port_in_use(log):
            break
    raise RuntimeError(f"the test registry did not start; its log ({log}) ends with:\n{processes.tail(log)}")


class TokenService:
    """Docker's token protocol on http://127.0.0.1:PORT/token: a client that the registry answered with a
    Bearer challenge sends its login here (Basic) with the scopes it wants, and gets a JWT (ES256, its
    certificate in the x5c header) that grants them; the registry trusts that certificate. Anonymous
    clients get a token that grants nothing; a wrong login gets 401. `issued` counts the tokens."""

    ISSUER = "wasminfer-test-token-service"
    SERVICE = "wasminfer-test-registry"

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.signer = pki.new_ca("wasminfer-test-token-signer")
        self.password = ""
        self.issued = 0
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                status, body = service._answer(self.path, self.headers.get("Authorization", ""))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def auth_config(self, directory: Path) -> dict[str, object]:
        bundle = directory / "token-signer.crt"
        bundle.write_bytes(self.signer.cert_pem)
        return {"token": {"realm": self.realm, "service": self.SERVICE, "issuer": self.ISSUER, "rootcertbundle": str(bundle)}}

    def stop(self) -> None:
        self._server.shutdown()

    def _answer(self, path: str, authorization: str) -> tuple[int, bytes]:
        from urllib.parse import parse_qs, urlparse

        query = parse_qs(urlparse(path).query)
        user = ""
        if authorization.startswith("Basic "):
            given = base64.b64decode(authorization[6:]).decode(errors="replace")
            if given != f"{USERNAME}:{self.password}":
                return 401, b'{"errors":[{"code":"UNAUTHORIZED","message":"wrong login"}]}'
            user = USERNAME
        access = []
        for scope in query.get("scope", []) if user else []:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]})
        token = self._token(user, access)
        self.issued += 1
        return 200, json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()

    def _token(self, subject: str, access: list[dict[str, object]]) -> str:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        def b64url(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(self.signer.cert.public_bytes(serialization.Encoding.DER)).decode()]}
        claims = {"iss": self.ISSUER, "sub": subject, "aud": self.SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now,
                  "jti": secrets.token_hex(8), "access": access}
        signed = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        r, s_ = decode_dss_signature(self.signer.key.sign(signed.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signed}.{b64url(r.to_bytes(32, 'big') + s_.to_bytes(32, 'big'))}"
