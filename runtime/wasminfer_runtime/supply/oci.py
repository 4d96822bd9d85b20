"""Modules and models as OCI artifacts: resolve a reference to its digest, pull, push.

The registry protocol (auth challenges, blob uploads) is oras-py's; this module adds what a runtime
needs on top: every manifest and blob checked against its digest, a tag resolved once to a digest,
our own retries with progress lines (oras-py's retry sleeps minutes on a refused login), and the
artifact layouts users publish:

- a Wasm module as wkg (wasm-pkg-tools) publishes it: config `application/vnd.wasm.config.v0+json`,
  one `application/wasm` layer;
- a Spin application: `application/vnd.wasm.content.layer.v1+wasm` layers (one, or one chosen by digest);
- a model folder as `oras push` publishes files: one layer per file, named by its
  `org.opencontainers.image.title` annotation; a folder pushed as a tar+gzip layer is unpacked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import requests

from wasminfer_runtime.backends.base import first_line
from wasminfer_runtime.progress import Progress, mib
from wasminfer_runtime.supply.reference import Reference, BadReference

log = logging.getLogger("wasminfer.oci")

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPTED_MANIFESTS = (MANIFEST_TYPE, DOCKER_MANIFEST_TYPE, INDEX_TYPE)
EMPTY_CONFIG_TYPE = "application/vnd.oci.empty.v1+json"
WASM_CONFIG_TYPE = "application/vnd.wasm.config.v0+json"
WASM_LAYER_TYPES = ("application/wasm", "application/vnd.wasm.content.layer.v1+wasm")
MODEL_ARTIFACT_TYPE = "application/vnd.wasminfer.model.v1"
FILE_LAYER_TYPE = "application/octet-stream"
TAR_GZIP_LAYER_TYPES = ("application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip")
TITLE = "org.opencontainers.image.title"
CHUNK = 1 << 20
MAX_MANIFEST_BYTES = 4 << 20  # the distribution spec's limit a registry must accept
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class OciError(BadReference):
    """A reference that cannot be resolved, pulled or pushed; the message says which and why, and
    `kind` what kind of failure it is: not_found, credentials (refused or missing), or other."""

    def __init__(self, message: str, kind: str = "other") -> None:
        super().__init__(message)
        self.kind = kind


class _Retry(Exception):
    """A failure worth another attempt (network error, 5xx, 429)."""


@dataclass(frozen=True)
class RegistryAccess:
    """How registries are reached: extra CA, credentials (a Docker config.json: the key of a
    kubernetes.io/dockerconfigjson Secret), plain http for loopback tests, and the retry policy."""

    ca_file: Path | None = None
    auth_file: Path | None = None
    plain_http: bool = False
    retries: int = 4
    backoff_seconds: float = 1.0
    timeout_seconds: float = 60.0


@dataclass(frozen=True)
class Manifest:
    """A manifest as the registry served it: its digest is the sha256 of exactly these bytes."""

    reference: Reference  # pinned to the digest
    raw: bytes
    content: dict[str, Any]

    @property
    def digest(self) -> str:
        assert self.reference.digest is not None
        return self.reference.digest

    @property
    def layers(self) -> list[dict[str, Any]]:
        layers = self.content.get("layers")
        return layers if isinstance(layers, list) else []

    @property
    def config(self) -> dict[str, Any]:
        config = self.content.get("config")
        return config if isinstance(config, dict) else {}


@dataclass
class Pulled:
    """What a pull left on disk, and the digest it came from."""

    reference: Reference
    files: list[Path] = field(default_factory=list)

    @property
    def digest(self) -> str:
        assert self.reference.digest is not None
        return self.reference.digest


def referrers_tag(digest: str) -> str:
    """The tag a registry without the referrers API keeps a digest's referrers under (sha256-<hex>)."""
    return digest.replace(":", "-")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _descriptor(media_type: str, data_digest: str, size: int, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"mediaType": media_type, "digest": data_digest, "size": size}
    if annotations:
        d["annotations"] = annotations
    return d


def _file_digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return "sha256:" + h.hexdigest(), size


def _safe_title(title: str, where: str) -> PurePosixPath:
    """A layer's file name, refused when it would land outside the pull's folder."""
    path = PurePosixPath(title)
    if not title or path.is_absolute() or ".." in path.parts or "\\" in title or "\x00" in title:
        raise OciError(f"{where}: layer title {title!r} is not a relative file name; refused")
    return path


class OciClient:
    """One registry conversation per reference; safe to use from one thread at a time."""

    def __init__(self, access: RegistryAccess | None = None) -> None:
        import oras.auth
        import oras.provider  # imported here: `wasminfer run` never needs it

        self.access = access or RegistryAccess()
        self._oras = oras.provider
        self._basic_auth = oras.auth.BasicAuth
        self._clients: dict[str, Any] = {}

    # -- the registry conversation ------------------------------------------------------------
    def _client(self, registry: str) -> Any:
        """oras-py's client for a registry, with the auth scheme the registry asks for (Basic or Bearer)."""
        if registry in self._clients:
            return self._clients[registry]
        tls: bool | str = str(self.access.ca_file) if self.access.ca_file else True
        scheme = "http" if self.access.plain_http else "https"
        try:
            probe = requests.get(f"{scheme}://{registry}/v2/", timeout=self.access.timeout_seconds, verify=tls)
        except requests.exceptions.SSLError as err:
            raise OciError(f"{registry}: TLS verification failed ({_first_line(err)}); is its CA in the ca_file?") from None
        except requests.RequestException as err:
            raise _Retry(f"{registry}: {_first_line(err)}") from None
        challenge = probe.headers.get("WWW-Authenticate", "")
        backend = "basic" if challenge.lower().startswith("basic") else "token"
        client = self._oras.Registry(hostname=registry, insecure=self.access.plain_http, tls_verify=tls, auth_backend=backend)
        container = client.get_container(f"{registry}/probe:probe")
        client.auth.load_configs(container, configs=[str(self.access.auth_file)] if self.access.auth_file else None)
        if backend == "basic" and not getattr(client.auth, "_basic_auth", None):
            client.auth._basic_auth = None  # anonymous: a 401 then says so, instead of failing inside oras-py
        self._clients[registry] = client
        return client

    def _request(
        self, ref: Reference, method: str, url_path: str, *, headers: dict[str, str] | None = None,
        data: bytes | None = None, stream: bool = False,
    ) -> requests.Response:
        """One request through oras-py's auth handling, without its retry loop (ours is `_retrying`)."""
        client = self._client(ref.registry)
        url = url_path if url_path.startswith("http") else f"{client.prefix}://{ref.registry}/v2/{ref.repository}/{url_path}"
        send = self._oras.Registry.do_request.__wrapped__  # oras-py's retry sleeps minutes on a refused login
        headers = dict(headers or {})
        if getattr(client.auth, "_basic_auth", None) and isinstance(client.auth, self._basic_auth):
            # Up front: a registry answers an upload without it with 401 and closes the connection
            # while the body is still being sent.
            headers.update(client.auth.get_auth_header())
        try:
            response: requests.Response = send(client, url, method, data=data, headers=dict(headers), stream=stream)
            if response.status_code == 401 and getattr(client.auth, "token", None) is not None:
                # A token holds the scopes it was asked for (pull, for a read before a push); the registry
                # answers 401 for a wider one, and oras-py keeps presenting the old token. Ask anew once.
                response.close()
                client.auth.token = None
                response = send(client, url, method, data=data, headers=dict(headers), stream=stream)
        except ValueError as err:  # oras-py: the registry asked for credentials it could not give
            raise OciError(f"{ref.name}: authentication failed ({err}); check the registry credentials", "credentials") from None
        except requests.exceptions.SSLError as err:
            raise OciError(f"{ref.registry}: TLS verification failed ({_first_line(err)})") from None
        except requests.RequestException as err:
            raise _Retry(f"{ref.registry}: {_first_line(err)}") from None
        if response.status_code in RETRYABLE_STATUS:
            raise _Retry(f"{ref.name}: HTTP {response.status_code} {response.reason}")
        if response.status_code in (401, 403):
            if not getattr(client.auth, "_basic_auth", None):
                raise OciError(f"{ref.name}: the registry needs credentials (HTTP {response.status_code}) and none "
                               f"were given for {ref.registry}; give a Docker config.json with its login", "credentials")
            raise OciError(
                f"{ref.name}: the registry refused the credentials (HTTP {response.status_code}); "
                "check the pull secret or the Docker config given", "credentials",
            )
        return response

    def _retrying(self, what: str, attempt_once: Any) -> Any:
        for attempt in range(1, self.access.retries + 1):
            try:
                return attempt_once()
            except _Retry as err:
                if attempt == self.access.retries:
                    raise OciError(f"{what}: {err} (gave up after {self.access.retries} attempts)") from None
                delay = min(self.access.backoff_seconds * 2.0 ** (attempt - 1), 30.0)
                log.warning("%s: attempt %d/%d failed: %s; retrying in %.0fs", what, attempt, self.access.retries, err, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    # -- reading ------------------------------------------------------------------------------
    def resolve(self, ref: Reference) -> Manifest:
        """The manifest a reference names, checked against its digest; a tag is resolved here, once."""
        manifest = self._get_manifest(ref, ACCEPTED_MANIFESTS)
        if manifest is None:
            raise OciError(f"{ref}: not found in the registry", "not_found")
        if manifest.content.get("mediaType") == INDEX_TYPE or "manifests" in manifest.content:
            raise OciError(f"{ref}: an image index, not one artifact; name the artifact's own digest")
        return manifest

    def _get_manifest(self, ref: Reference, accept: tuple[str, ...], url_path: str | None = None) -> Manifest | None:
        """A manifest (or an index), checked against the reference's digest; None when the registry has none."""

        def once() -> Manifest | None:
            response = self._request(ref, "GET", url_path or f"manifests/{ref.selector}", headers={"Accept": ", ".join(accept)},
                                     stream=True)
            with response:
                if response.status_code == 404:
                    return None
                if response.status_code != 200:
                    raise OciError(f"{ref}: HTTP {response.status_code} {response.reason} for its manifest")
                raw = _read_at_most(response, MAX_MANIFEST_BYTES, f"{ref}: the manifest")
            digest = sha256_digest(raw)
            if url_path is None and ref.digest is not None and digest != ref.digest:
                raise OciError(f"{ref}: the registry served a manifest whose digest is {digest}, not {ref.digest}; refused")
            try:
                content = json.loads(raw)
            except ValueError:
                raise OciError(f"{ref}: the manifest is not JSON") from None
            if not isinstance(content, dict):
                raise OciError(f"{ref}: the manifest is not a JSON object")
            return Manifest(ref.pinned(digest), raw, content)

        manifest: Manifest | None = self._retrying(str(ref), once)
        return manifest

    def referrers(self, subject: Reference, artifact_type: str) -> list[dict[str, Any]]:
        """Descriptors of the manifests that name `subject` (pinned) as theirs (OCI 1.1) and may be of
        `artifact_type` (check each manifest's own): from the referrers API, or where a registry lacks it,
        from its fallback tag `sha256-<hex>`."""
        assert subject.digest is not None
        index = self._get_manifest(subject, (INDEX_TYPE,), f"referrers/{subject.digest}?artifactType={artifact_type}")
        if index is None:
            index = self._get_manifest(subject.with_tag(referrers_tag(subject.digest)), (INDEX_TYPE,))
        listed = index.content.get("manifests") if index is not None else None
        if not isinstance(listed, list):
            return []
        # go-containerregistry (cosign) lists a referrer in the fallback index under its config's media type.
        kinds = (artifact_type, EMPTY_CONFIG_TYPE, None)
        return [d for d in listed if isinstance(d, dict) and d.get("artifactType") in kinds
                and isinstance(d.get("digest"), str) and _DIGEST.match(d["digest"])]

    def blob_bytes(self, ref: Reference, descriptor: dict[str, Any], limit: int = 4 << 20) -> bytes:
        """A small blob (a config, a signature payload), checked against its digest."""
        digest, size = _checked_descriptor(ref, descriptor)
        if size > limit:
            raise OciError(f"{ref}: blob {digest} is {size} bytes, more than the {limit} expected here")

        def once() -> bytes:
            response = self._request(ref, "GET", f"blobs/{digest}", stream=True)
            with response:
                if response.status_code != 200:
                    raise OciError(f"{ref}: blob {digest}: HTTP {response.status_code} {response.reason}")
                data = _read_at_most(response, size, f"{ref}: blob {digest}")
            if sha256_digest(data) != digest or len(data) != size:
                raise OciError(f"{ref}: blob {digest} arrived with other content; refused")
            return data

        data: bytes = self._retrying(f"{ref} blob {digest[:19]}", once)
        return data

    def download_blob(self, ref: Reference, descriptor: dict[str, Any], dest: Path, label: str) -> Path:
        """Streams a blob to dest (moved into place only once its digest and size matched)."""
        digest, size = _checked_descriptor(ref, descriptor)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_file() and _file_digest(dest) == (digest, size):
            log.info("%s: already present, digest ok", label)
            return dest
        part = dest.with_name(f"{dest.name}.part{os.getpid()}")  # serving processes may pull at once

        def once() -> None:
            response = self._request(ref, "GET", f"blobs/{digest}", stream=True)
            with response:
                if response.status_code != 200:
                    raise OciError(f"{ref}: blob {digest}: HTTP {response.status_code} {response.reason}")
                h, got = hashlib.sha256(), 0
                progress = Progress(log, label, size)
                try:
                    with part.open("wb") as out:
                        for chunk in response.iter_content(CHUNK):
                            got += len(chunk)
                            if got > size:
                                raise OciError(f"{ref}: blob {digest} is longer than its {size} bytes; refused")
                            h.update(chunk)
                            out.write(chunk)
                            progress.add(len(chunk))
                except requests.RequestException as err:
                    raise _Retry(f"{label}: {_first_line(err)}") from None
            if "sha256:" + h.hexdigest() != digest or got != size:
                part.unlink(missing_ok=True)
                raise OciError(f"{ref}: blob {digest} arrived with other content ({got} bytes); refused")

        started = time.monotonic()
        try:
            self._retrying(label, once)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, dest)
        log.info("%s: pulled %s in %.1fs, digest ok", label, mib(size), time.monotonic() - started)
        return dest

    def _manifest(self, target: Reference | Manifest) -> Manifest:
        return target if isinstance(target, Manifest) else self.resolve(target)

    def pull_module(self, target: Reference | Manifest, dest: Path, layer: str | None = None) -> Pulled:
        """The Wasm module of a wkg or Spin artifact (a reference, or a manifest already resolved), stored at dest."""
        manifest = self._manifest(target)
        wasm = [d for d in manifest.layers if d.get("mediaType") in WASM_LAYER_TYPES]
        if layer is not None:
            wasm = [d for d in wasm if d.get("digest") == layer]
            if not wasm:
                raise OciError(f"{manifest.reference}: no Wasm layer has digest {layer}")
        if not wasm:
            types = sorted({str(d.get("mediaType")) for d in manifest.layers}) or ["none"]
            raise OciError(
                f"{manifest.reference}: no Wasm layer (media types found: {', '.join(types)}); "
                f"a module is a layer of type {' or '.join(WASM_LAYER_TYPES)}"
            )
        if len(wasm) > 1:
            digests = ", ".join(str(d.get("digest")) for d in wasm)
            raise OciError(f"{manifest.reference}: {len(wasm)} Wasm layers ({digests}); choose one with its layer digest")
        self.download_blob(manifest.reference, wasm[0], dest, dest.name)
        return Pulled(manifest.reference, [dest])

    def pull_folder(self, target: Reference | Manifest, dest_dir: Path) -> Pulled:
        """Every file of an ORAS-style artifact (a model folder) into dest_dir, by layer title."""
        manifest = self._manifest(target)
        dest_dir.mkdir(parents=True, exist_ok=True)
        files: list[Path] = []
        for i, layer in enumerate(manifest.layers):
            title = (layer.get("annotations") or {}).get(TITLE)
            if title is None:
                raise OciError(f"{manifest.reference}: layer {i} has no {TITLE} annotation, so no file name")
            rel = _safe_title(str(title), str(manifest.reference))
            if layer.get("mediaType") in TAR_GZIP_LAYER_TYPES:
                files += self._unpack(manifest.reference, layer, dest_dir / rel)
            else:
                files.append(self.download_blob(manifest.reference, layer, dest_dir / rel, str(rel)))
        if not files:
            raise OciError(f"{manifest.reference}: the artifact has no files")
        return Pulled(manifest.reference, files)

    def _unpack(self, ref: Reference, layer: dict[str, Any], dest: Path) -> list[Path]:
        with tempfile.TemporaryDirectory(dir=dest.parent if dest.parent.exists() else None) as tmp:
            archive = self.download_blob(ref, layer, Path(tmp) / "layer.tar.gz", f"{dest.name} (tar+gzip)")
            try:
                with tarfile.open(archive, "r:gz") as tar:
                    tar.extractall(dest.parent, filter="data")  # refuses links and paths outside dest.parent
            except (tarfile.TarError, OSError) as err:
                raise OciError(f"{ref}: layer {layer.get('digest')} does not unpack: {err}") from None
        return sorted(p for p in dest.rglob("*") if p.is_file()) if dest.is_dir() else [dest]

    # -- writing ------------------------------------------------------------------------------
    def push_blob(self, ref: Reference, path: Path | None, data: bytes | None, media_type: str,
                  annotations: dict[str, str] | None = None) -> dict[str, Any]:
        """Uploads one blob (skipped when the registry has it) and returns its descriptor."""
        if path is not None:
            digest, size = _file_digest(path)
        else:
            assert data is not None
            digest, size = sha256_digest(data), len(data)
        descriptor = _descriptor(media_type, digest, size, annotations)

        def once() -> None:
            head = self._request(ref, "HEAD", f"blobs/{digest}")
            if head.status_code == 200:
                return
            start = self._request(ref, "POST", "blobs/uploads/", headers={"Content-Length": "0"})
            location = start.headers.get("Location")
            if start.status_code != 202 or not location:
                raise OciError(f"{ref}: cannot start an upload: HTTP {start.status_code} {start.reason}")
            if not location.startswith("http"):
                location = f"{self._client(ref.registry).prefix}://{ref.registry}{location}"
            location += ("&" if "?" in location else "?") + f"digest={digest}"
            body = path.read_bytes() if path is not None else data
            done = self._request(ref, "PUT", location, data=body,
                                 headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
            if done.status_code != 201:
                raise OciError(f"{ref}: upload of {digest} refused: HTTP {done.status_code} {_registry_errors(done)}")

        self._retrying(f"{ref} upload {digest[:19]}", once)
        log.info("%s: pushed %s (%s)", ref.name, (annotations or {}).get(TITLE, digest[:19]), mib(size))
        return descriptor

    def push_manifest(self, ref: Reference, manifest: dict[str, Any]) -> Reference:
        """Puts a manifest under the reference's tag (or its digest) and returns the pinned reference."""
        pinned, _ = self._put_manifest(ref, manifest)
        return pinned

    def _put_manifest(self, ref: Reference, manifest: dict[str, Any]) -> tuple[Reference, bool]:
        """The pinned reference, and whether the registry took note of the manifest's subject (OCI 1.1)."""
        raw = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
        digest = sha256_digest(raw)

        def once() -> bool:
            response = self._request(ref, "PUT", f"manifests/{ref.tag or digest}", data=raw,
                                     headers={"Content-Type": str(manifest.get("mediaType", MANIFEST_TYPE))})
            if response.status_code != 201:
                raise OciError(f"{ref}: manifest refused: HTTP {response.status_code} {_registry_errors(response)}")
            return "OCI-Subject" in response.headers

        subject_noted: bool = self._retrying(f"{ref} manifest", once)
        return ref.pinned(digest), subject_noted

    def push_referrer(self, subject: Reference, manifest: dict[str, Any]) -> Reference:
        """Puts a manifest that refers to `subject` (pinned) and lists it where a registry without the
        referrers API keeps referrers: the index under the fallback tag `sha256-<hex>`."""
        assert subject.digest is not None
        subject_manifest = self.resolve(subject)
        manifest = {**manifest, "subject": _descriptor(str(subject_manifest.content.get("mediaType", MANIFEST_TYPE)),
                                                      subject.digest, len(subject_manifest.raw))}
        pinned, noted = self._put_manifest(subject.with_tag(None), manifest)
        if not noted:
            tag = subject.with_tag(referrers_tag(subject.digest))
            index = self._get_manifest(tag, (INDEX_TYPE,))
            listed = [d for d in (index.content.get("manifests") or []) if isinstance(d, dict)] if index else []
            raw = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
            entry = {**_descriptor(MANIFEST_TYPE, pinned.digest or "", len(raw), manifest.get("annotations")),
                     "artifactType": manifest.get("artifactType")}
            listed = [d for d in listed if d.get("digest") != pinned.digest] + [entry]
            self._put_manifest(tag, {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": listed})
        return pinned

    def push_module(self, module: Path, ref: Reference) -> Reference:
        """A module in the wkg layout (which Spin and runwasi shims pull too)."""
        layer = self.push_blob(ref, module, None, WASM_LAYER_TYPES[0], {TITLE: module.name})
        config = json.dumps({"architecture": "wasm", "os": "wasip1", "layerDigests": [layer["digest"]]}).encode()
        config_desc = self.push_blob(ref, None, config, WASM_CONFIG_TYPE)
        manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "config": config_desc, "layers": [layer]}
        return self.push_manifest(ref, manifest)

    def push_folder(self, folder: Path, ref: Reference, artifact_type: str = MODEL_ARTIFACT_TYPE) -> Reference:
        """Every file under folder as one layer named by its relative path (as `oras push` does)."""
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        if not files:
            raise OciError(f"{folder}: no files to push")
        layers = [self.push_blob(ref, f, None, FILE_LAYER_TYPE, {TITLE: f.relative_to(folder).as_posix()}) for f in files]
        config_desc = self.push_blob(ref, None, b"{}", EMPTY_CONFIG_TYPE)
        manifest = {
            "schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": artifact_type,
            "config": config_desc, "layers": layers,
        }
        return self.push_manifest(ref, manifest)


def _read_at_most(response: requests.Response, limit: int, what: str) -> bytes:
    """A body of at most `limit` bytes; a registry that sends more is refused before it fills memory."""
    chunks, got = [], 0
    try:
        for chunk in response.iter_content(CHUNK):
            got += len(chunk)
            if got > limit:
                raise OciError(f"{what} is larger than {limit} bytes; refused")
            chunks.append(chunk)
    except requests.RequestException as err:
        raise _Retry(f"{what}: {_first_line(err)}") from None
    return b"".join(chunks)


def _checked_descriptor(ref: Reference, descriptor: dict[str, Any]) -> tuple[str, int]:
    digest, size = descriptor.get("digest"), descriptor.get("size")
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise OciError(f"{ref}: a layer's digest {digest!r} is not sha256:<64 hex>")
    if not isinstance(size, int) or size < 0:
        raise OciError(f"{ref}: layer {digest} has no valid size")
    return digest, size


def _registry_errors(response: requests.Response) -> str:
    try:
        errors = response.json().get("errors", [])
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict)) or response.reason
    except ValueError:
        return str(response.reason)


def _first_line(err: BaseException) -> str:
    """The reason of a network error, without urllib3's wrapping (`[Errno 111] Connection refused`)."""
    text = str(err).strip()
    inner = re.findall(r"\[Errno -?\d+\] [^'\")]+", text)
    return str(inner[-1]).strip() if inner else first_line(err)

