"""`wasminfer fetch`: bring a worker's module and models into the pod, each checked against its sha256.

The operator runs this as the init container of every runtime pod, with a plan it renders next to
`runtime.yaml`:

    files:
      - url: https://models.example.com/mobilenet/model.xml   # downloaded to dest
        sha256: 1f0e...
        dest: /var/lib/wasminfer/models/mobilenet/model.xml
      - path: /var/run/wasminfer/sources/hello/hello.wasm       # a mounted ConfigMap key: copied to dest
        dest: /var/lib/wasminfer/modules/hello.wasm
      - path: /var/run/wasminfer/claims/models/big/model.bin    # a file on a claim: verified in place
        sha256: 9ab1...
    artifacts:
      - oci: registry.example.com/demo/hello@sha256:5e1c...           # a module from a registry
        dest: /var/lib/wasminfer/modules/hello.wasm
        policies: [{keys: [/etc/wasminfer/config/trust-0.pub]}]         # its attached signature must verify
        registry_config: /var/run/wasminfer/registry/0/.dockerconfigjson
      - oci: registry.example.com/models/mobilenet@sha256:0a9f...
        kind: folder                                                  # a model folder: its files under dest
        dest: /var/lib/wasminfer/models/mobilenet

Downloads are retried with exponential backoff and resumed with HTTP ranges; a file already at its
destination with the right sha256 is kept (a restarted init container does not download again); a
file is moved into place only after its sha256 matched. Progress is logged while bytes arrive.
One file can also be fetched without a plan: `wasminfer fetch URL --sha256 HEX -o DEST`, or one
artifact: `wasminfer fetch oci://REF -o DEST [--folder] [--key cosign.pub]`. An artifact's manifest
and every blob are checked against their digests.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import logging
import os
import shutil
import ssl
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Annotated, Any, Literal

import aiohttp
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from wasminfer_runtime.config import format_validation_error, read_yaml_file
from wasminfer_runtime.modelpool import PoolArgsError, add_pool_arguments, pool_share
from wasminfer_runtime.progress import Progress, mib
from wasminfer_runtime.supply.reference import BadReference, Reference

log = logging.getLogger("wasminfer.fetch")

CHUNK = 1 << 20
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class FetchError(Exception):
    """A file that could not be fetched or verified; the message says which and why."""


class _Retry(Exception):
    """A failure worth another attempt (network error, 5xx, 429, checksum of a truncated transfer)."""


class FetchIdentity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    identity: str
    issuer: str


class FetchPolicy(BaseModel):
    """Who must have signed the file or artifact: one of the trusted keys (PEM public keys), or for a
    file, one of the Sigstore identities under the trusted root (keyless)."""

    model_config = ConfigDict(extra="forbid")

    keys: list[Path] = Field(default_factory=list)
    trusted_root: Path | None = Field(None, description="A Sigstore trusted_root.json, for keyless bundles.")
    identities: list[FetchIdentity] = Field(default_factory=list)
    required: bool = Field(True, description="false: what carries no signature is fetched (a signature present must verify).")
    origin: str = Field("signature policy", description="Whose policy it is, for the messages.")

    @model_validator(mode="after")
    def _trusts_someone(self) -> FetchPolicy:
        if not self.keys and (self.trusted_root is None or not self.identities):
            raise ValueError("a policy needs keys, or a trusted_root with identities")
        return self

    def trust(self) -> Any:
        """The policy as signatures.Trust (imported when a signature is checked)."""
        from wasminfer_runtime.supply import keyless, signatures

        pairs = [(i.identity, i.issuer) for i in self.identities]
        sigstore = keyless.SigstoreTrust.of(self.trusted_root, pairs) if self.trusted_root is not None and pairs else None
        return signatures.load_trust(self.keys, sigstore)


class FetchFile(BaseModel):
    """One artifact: a URL to download or a local path to verify (and copy when dest is set)."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    path: Path | None = None
    sha256: Sha256 | None = None
    dest: Path | None = None
    model: str | None = Field(None, description="The named model the file belongs to: a pool replica fetches only its models' files.")
    signature: str | None = Field(None, description="The file's cosign sign-blob signature (base64).")
    policies: list[FetchPolicy] = Field(default_factory=list, description="Each must verify the signature before the file is in place.")

    @model_validator(mode="after")
    def _check(self) -> FetchFile:
        if (self.url is None) == (self.path is None):
            raise ValueError("set exactly one of url or path")
        if self.url is not None:
            if not self.url.startswith(("https://", "http://")):
                raise ValueError("url must be an https:// URL")
            if self.sha256 is None:
                raise ValueError("a url needs its sha256")
            if self.dest is None:
                raise ValueError("a url needs a dest")
        if self.dest is not None and not self.dest.is_absolute():
            raise ValueError("dest must be an absolute path")
        return self

    @property
    def label(self) -> str:
        return self.dest.name if self.dest is not None else Path(self.path or "").name


class FetchArtifact(BaseModel):
    """An OCI artifact: a module (stored at dest) or a model folder (its files under dest), its
    digest checked and, with keys, its attached cosign signature verified before it is stored."""

    model_config = ConfigDict(extra="forbid")

    oci: str = Field(description="registry[:port]/repository[:tag][@sha256:…]; pinned by the operator.")
    dest: Path
    kind: Literal["module", "folder"] = "module"
    layer: str | None = Field(None, description="A module's Wasm layer, for an artifact with several.")
    policies: list[FetchPolicy] = Field(default_factory=list, description="Each must verify the signature attached to the artifact.")
    model: str | None = Field(None, description="The named model the artifact holds (pool replicas fetch their own).")
    registry_config: Path | None = Field(None, description="A Docker config.json with the registry login (a pull Secret's).")
    ca_file: Path | None = Field(None, description="The registry's CA certificate, for a registry with its own CA.")

    @model_validator(mode="after")
    def _check(self) -> FetchArtifact:
        try:
            Reference.parse(self.oci)
        except BadReference as err:
            raise ValueError(str(err)) from None
        if not self.dest.is_absolute():
            raise ValueError("dest must be an absolute path")
        return self


class FetchPlan(BaseModel):
    """Everything one pod needs, fetched before the runtime starts."""

    model_config = ConfigDict(extra="forbid")

    files: list[FetchFile] = Field(default_factory=list)
    artifacts: list[FetchArtifact] = Field(default_factory=list)
    retries: Annotated[int, Field(ge=1, le=100)] = 6
    timeout_seconds: Annotated[float, Field(gt=0)] = 60.0
    concurrency: Annotated[int, Field(ge=1, le=32)] = 4
    backoff_seconds: Annotated[float, Field(ge=0, le=60)] = 1.0
    ca_file: Path | None = None
    allow_http: bool = Field(default=False, description="Accept plain http:// URLs (tests and air-gapped mirrors only).")

    @model_validator(mode="after")
    def _http(self) -> FetchPlan:
        for i, f in enumerate(self.files):
            if f.url is not None and f.url.startswith("http://") and not self.allow_http:
                raise ValueError(f"files[{i}]: plain http:// is refused; use https:// (or allow_http for tests)")
        dests = [str(f.dest) for f in self.files if f.dest is not None]
        if len(set(dests)) != len(dests):
            raise ValueError("two files have the same dest")
        return self


def dump_fetch_plan(plan: FetchPlan) -> str:
    """YAML text of a plan, as the operator writes it into the worker's ConfigMap."""
    return yaml.safe_dump(plan.model_dump(mode="json", exclude_none=True, exclude_defaults=False), sort_keys=False)


def load_fetch_plan(path: Path) -> FetchPlan:
    data = read_yaml_file(path, FetchError)
    try:
        return FetchPlan.model_validate(data)
    except ValidationError as err:
        raise FetchError(format_validation_error(str(path), err)) from None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


async def _download_once(session: aiohttp.ClientSession, f: FetchFile, part: Path) -> None:
    """One attempt: continue `part` with a range request when it holds bytes from an earlier attempt."""
    assert f.url is not None and f.dest is not None
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        async with session.get(f.url, headers=headers) as resp:
            if resp.status in RETRYABLE_STATUS:
                raise _Retry(f"HTTP {resp.status} {resp.reason}")
            if resp.status == 416 and have:  # the part is already complete (or stale): start over
                part.unlink()
                raise _Retry("range not satisfiable, restarting")
            if resp.status >= 400:
                raise FetchError(f"{f.url}: HTTP {resp.status} {resp.reason}")
            if resp.status != 206:
                have = 0
            total = resp.content_length + have if resp.content_length is not None else None
            progress = Progress(log, f.label, total, have)
            with part.open("ab" if have else "wb") as out:
                async for chunk in resp.content.iter_chunked(CHUNK):
                    out.write(chunk)
                    progress.add(len(chunk))
    except (aiohttp.ClientError, asyncio.TimeoutError) as err:
        raise _Retry(f"{type(err).__name__}: {err}".rstrip(": ")) from None


async def _download(session: aiohttp.ClientSession, f: FetchFile, plan: FetchPlan) -> None:
    assert f.url is not None and f.dest is not None and f.sha256 is not None
    part = f.dest.with_name(f.dest.name + ".part")
    started = time.monotonic()
    for attempt in range(1, plan.retries + 1):
        try:
            await _download_once(session, f, part)
            digest = await asyncio.to_thread(sha256_file, part)
            if digest != f.sha256:
                part.unlink()
                raise _Retry(f"sha256 mismatch: expected {f.sha256}, got {digest}")
            try:
                await asyncio.to_thread(_check_signature, f, part)
            except FetchError:
                part.unlink()
                raise
            os.replace(part, f.dest)
            size = f.dest.stat().st_size
            log.info("%s: downloaded %s in %.1fs, sha256 ok", f.label, mib(size), time.monotonic() - started)
            return
        except _Retry as err:
            if attempt == plan.retries:
                raise FetchError(f"{f.url}: {err} (gave up after {plan.retries} attempts)") from None
            delay = min(plan.backoff_seconds * 2.0 ** (attempt - 1), 30.0)
            log.warning("%s: attempt %d/%d failed: %s; retrying in %.0fs", f.label, attempt, plan.retries, err, delay)
            await asyncio.sleep(delay)


def _local(f: FetchFile) -> None:
    """Verify a mounted file and copy it to dest when asked (atomically, like downloads)."""
    assert f.path is not None
    if not f.path.is_file():
        raise FetchError(f"{f.path}: not found (is the ConfigMap key or the file on the claim missing?)")
    if f.sha256 is not None:
        digest = sha256_file(f.path)
        if digest != f.sha256:
            raise FetchError(f"{f.path}: sha256 mismatch: expected {f.sha256}, got {digest}")
    _check_signature(f, f.path)
    if f.dest is None:
        log.info("%s: verified in place%s", f.path, ", sha256 ok" if f.sha256 else "")
        return
    tmp = f.dest.with_name(f.dest.name + ".part")
    shutil.copyfile(f.path, tmp)
    os.replace(tmp, f.dest)
    log.info("%s: copied from %s (%s)%s", f.label, f.path, mib(f.dest.stat().st_size), ", sha256 ok" if f.sha256 else "")


def _check_signature(f: FetchFile, path: Path) -> None:
    """The file's signature against each policy (raises FetchError), before it is moved into place."""
    from wasminfer_runtime.supply import signatures

    for policy in f.policies:
        if f.signature is None:
            if policy.required:
                raise FetchError(f"{f.label}: {policy.origin}: unsigned: the file has no signature")
            log.warning("%s: not signed; fetched anyway (the %s does not require a signature)", f.label, policy.origin)
            continue
        try:
            signer = signatures.verify_signed(path.read_bytes(), _signature_text(f.signature), policy.trust(), f.label, f.label)
        except signatures.SignatureError as err:
            raise FetchError(f"{policy.origin}: {err}") from None
        log.info("%s: signed by %s, verified (%s)", f.label, signer, policy.origin)


def _signature_text(signature: str) -> bytes:
    """A file's signature as written in a plan: a sign-blob signature (base64), or a Sigstore bundle,
    itself base64-encoded (a plan names it in one line)."""
    try:
        decoded = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return signature.encode()
    return decoded if decoded.lstrip().startswith(b"{") else signature.encode()


def _already_there(f: FetchFile) -> bool:
    if f.dest is None or f.sha256 is None or not f.dest.is_file():
        return False
    return sha256_file(f.dest) == f.sha256


async def fetch_all(plan: FetchPlan) -> list[str]:
    """Fetch every file of the plan; returns the error messages (empty when all succeeded)."""
    for f in plan.files:
        if f.dest is not None:
            f.dest.parent.mkdir(parents=True, exist_ok=True)
    ssl_ctx = ssl.create_default_context(cafile=str(plan.ca_file) if plan.ca_file else None)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=plan.timeout_seconds, sock_read=plan.timeout_seconds)
    gate = asyncio.Semaphore(plan.concurrency)
    errors: list[str] = []

    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(ssl=ssl_ctx)) as session:

        async def guarded(label: str, step: Awaitable[None]) -> None:
            """One file's or artifact's step, its failure recorded (the others go on)."""
            async with gate:
                try:
                    await step
                except FetchError as err:
                    log.error("%s", err)
                    errors.append(str(err))
                except OSError as err:
                    msg = f"{label}: {err.strerror or err}" + (f": {err.filename}" if err.filename else "")
                    log.error("%s", msg)
                    errors.append(msg)

        async def one(f: FetchFile) -> None:
            if await asyncio.to_thread(_already_there, f):
                log.info("%s: already present, sha256 ok", f.label)
            elif f.url is not None:
                await _download(session, f, plan)
            else:
                await asyncio.to_thread(_local, f)

        await asyncio.gather(*(guarded(f.label, one(f)) for f in plan.files),
                             *(guarded(a.oci, asyncio.to_thread(_pull_artifact, a, plan)) for a in plan.artifacts))
    return errors


def _pull_artifact(artifact: FetchArtifact, plan: FetchPlan) -> None:
    """Resolves, verifies (when a policy applies) and pulls one artifact; raises FetchError."""
    from wasminfer_runtime.supply import attached, signatures
    from wasminfer_runtime.supply.oci import OciClient, OciError, RegistryAccess

    access = RegistryAccess(ca_file=artifact.ca_file or plan.ca_file, auth_file=artifact.registry_config, retries=plan.retries,
                            backoff_seconds=plan.backoff_seconds, timeout_seconds=plan.timeout_seconds)
    client = OciClient(access)
    try:
        manifest = client.resolve(Reference.parse(artifact.oci))
        for policy in artifact.policies:
            try:
                signer = attached.verify_attached(client, manifest.reference, policy.trust())
            except signatures.SignatureError as err:
                if policy.required or not err.unsigned:
                    raise signatures.SignatureError(f"{policy.origin}: {err}") from None
                log.warning("%s: not signed; fetched anyway (the %s does not require a signature)", manifest.reference, policy.origin)
                continue
            log.info("%s: signed by %s, verified (%s)", manifest.reference, signer, policy.origin)
        if artifact.kind == "module":
            client.pull_module(manifest, artifact.dest, artifact.layer)
        else:
            client.pull_folder(manifest, artifact.dest)
    except (OciError, signatures.SignatureError) as err:
        raise FetchError(str(err)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Fetch a worker's module and models with sha256 checks, retries and progress lines."
    parser.add_argument("source", nargs="?",
                        help="one URL, local file or oci://registry/repository:tag to fetch (instead of --plan)")
    parser.add_argument("--plan", type=Path, help="YAML plan listing the files (what the operator renders)")
    parser.add_argument("--sha256", help="expected sha256 of SOURCE")
    parser.add_argument("-o", "--output", type=Path, help="where to put SOURCE")
    parser.add_argument("--retries", type=int, help="attempts per download (default: the plan's, else 6)")
    parser.add_argument("--timeout", type=float, help="seconds without progress before an attempt fails")
    parser.add_argument("--ca-file", type=Path, help="extra CA bundle for https and registries")
    parser.add_argument("--registry-config", type=Path, help="a Docker config.json with registry logins")
    parser.add_argument("--folder", action="store_true", help="an oci:// SOURCE is a folder of files (a model), not a module")
    parser.add_argument("--key", type=Path, action="append", default=[],
                        help="PEM public key; an oci:// SOURCE must carry a signature by it (repeatable)")
    parser.add_argument("--termination-log", type=Path, help="write the failure summary here (e.g. /dev/termination-log)")
    add_pool_arguments(parser, "fetches the files of")


def _plan_from_args(args: argparse.Namespace) -> FetchPlan:
    if (args.plan is None) == (args.source is None):
        raise FetchError("give either --plan FILE or one SOURCE (URL or path)")
    if args.plan is not None:
        plan = load_fetch_plan(args.plan)
    else:
        entry: dict[str, Any] = {"sha256": args.sha256, "dest": str(args.output.resolve()) if args.output else None}
        if args.source.startswith("oci://"):
            policies = [{"keys": [str(k.resolve()) for k in args.key], "origin": "--key"}] if args.key else []
            entry = {"oci": args.source.removeprefix("oci://"), "dest": entry["dest"], "kind": "folder" if args.folder else "module",
                     "policies": policies, "registry_config": args.registry_config}
            document: dict[str, Any] = {"artifacts": [entry]}
        else:
            entry["url" if "://" in args.source else "path"] = args.source
            document = {"files": [entry]}
        try:
            plan = FetchPlan.model_validate(document)
        except ValidationError as err:
            raise FetchError(format_validation_error("command line", err)) from None
    updates: dict[str, Any] = {}
    if args.retries is not None:
        updates["retries"] = max(1, args.retries)
    if args.timeout is not None:
        updates["timeout_seconds"] = args.timeout
    if args.ca_file is not None:
        updates["ca_file"] = args.ca_file
    try:
        models = {f.model for f in plan.files if f.model is not None} | {a.model for a in plan.artifacts if a.model is not None}
        elsewhere = pool_share(args, sorted(models))
    except PoolArgsError as err:
        raise FetchError(str(err)) from None
    if elsewhere:
        updates["files"] = [f for f in plan.files if f.model not in elsewhere]
        updates["artifacts"] = [a for a in plan.artifacts if a.model not in elsewhere]
        log.info("pool replica %s: the files of %d model(s) placed elsewhere are left out", args.pool_replica, len(elsewhere))
    return plan.model_copy(update=updates)


def main(args: argparse.Namespace) -> int:
    try:
        plan = _plan_from_args(args)
    except FetchError as err:
        log.error("%s", err)
        return 2
    count = len(plan.files) + len(plan.artifacts)
    what = "file(s) and artifact(s)" if plan.artifacts else "file(s)"
    log.info("fetching %d file(s) and %d OCI artifact(s)", len(plan.files), len(plan.artifacts))
    started = time.monotonic()
    errors = asyncio.run(fetch_all(plan))
    if errors:
        summary = f"{len(errors)} of {count} {what} failed:\n" + "\n".join(errors)
        log.error("%s", summary)
        if args.termination_log is not None:
            try:
                args.termination_log.write_text(summary[:4000])
            except OSError:
                pass
        return 1
    log.info("all %d %s ready in %.1fs", count, what, time.monotonic() - started)
    return 0
