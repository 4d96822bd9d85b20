"""Before a worker's module is compiled or a model loaded: pull what comes from a registry, and check
the signatures the policy asks for. A worker or model that fails here fails alone, with the reason.

OCI artifacts land in a cache keyed by their manifest digest (`<cache>/oci/sha256/<hex>/`), so a
module or model pulled once is not pulled again, and two serving processes pulling it at once each
write their own part file before an atomic rename.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from wasminfer_runtime import formats
from wasminfer_runtime.config import ModelConfig, OciSource, ServerConfig, SignaturePolicy, WorkerConfig
from wasminfer_runtime.supply.reference import Reference

if TYPE_CHECKING:
    from wasminfer_runtime.supply import signatures
    from wasminfer_runtime.supply.oci import OciClient

log = logging.getLogger("wasminfer.supply")


class SupplyError(Exception):
    """A module or model that cannot be pulled or whose signature does not check; says which and why."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "wasminfer"


class Supply:
    """Pulls and verifies for one runtime, with its server's registry access and signature policy."""

    def __init__(self, server: ServerConfig) -> None:
        self.server = server
        self.cache = (server.cache_dir or default_cache_dir()) / "oci"

    def _client(self) -> OciClient:
        # Imported here: requests and oras-py are for registries, which most runtimes never use.
        from wasminfer_runtime.supply.oci import OciClient, RegistryAccess

        access = self.server.registries
        return OciClient(RegistryAccess(ca_file=access.ca_file, auth_file=access.auth_file))

    def _policy(self, own: SignaturePolicy | None) -> SignaturePolicy | None:
        return own if own is not None else self.server.signatures

    # -- workers ----------------------------------------------------------------------------------
    def prepare_worker(self, worker: WorkerConfig) -> WorkerConfig:
        """The worker with its module on disk and its signature checked (raises SupplyError)."""
        policy = self._policy(worker.signatures)
        if worker.oci is not None:
            return worker.model_copy(update={"module": self._pull_module(worker.name, worker.oci, policy), "oci": None})
        if policy is not None:
            module = worker.module_file
            self._verify_file(f"worker {worker.name!r}", module, worker.signature or signature_of(module), policy)
        return worker

    def _pull_module(self, name: str, source: OciSource, policy: SignaturePolicy | None) -> Path:
        from wasminfer_runtime.supply.oci import OciError

        client = self._client()
        try:
            manifest = client.resolve(source.parsed)
            self._verify_attached(f"worker {name!r}", client, manifest.reference, policy)
            folder = self._folder(manifest.digest)
            # Named after the repository: the guest's argv[0], as a file name would be.
            name_in_cache = manifest.reference.repository.rsplit("/", 1)[-1] + ".wasm"
            pulled = client.pull_module(manifest, folder / name_in_cache, source.layer)
        except OciError as err:
            raise SupplyError(f"worker {name!r}: {err}") from None
        log.info("worker %r: module %s pulled", name, pulled.reference)
        return pulled.files[0]

    # -- models -----------------------------------------------------------------------------------
    def prepare_model(self, model: ModelConfig) -> ModelConfig:
        """The model with its files on disk and their signatures checked (raises SupplyError)."""
        policy = self._policy(model.signatures)
        if model.oci is not None:
            # Its signature is the one attached to the artifact, checked before the pull.
            return model.model_copy(update={"files": self._pull_model(model, model.oci, policy), "oci": None})
        if model.folder is not None:
            found = sorted(p for p in model.folder.rglob("*") if p.is_file()) if model.folder.is_dir() else []
            if not found:
                raise SupplyError(f"model {model.name!r}: folder {model.folder} holds no files")
            files = model_files(model.format, found, f"model {model.name!r} ({model.folder})")
            return self.prepare_model(model.model_copy(update={"files": files, "folder": None}))
        if policy is not None and model.remote is None:
            for f in model.files:
                self._verify_file(f"model {model.name!r}", f, signature_of(f), policy)
        return model

    def _pull_model(self, model: ModelConfig, source: OciSource, policy: SignaturePolicy | None) -> list[Path]:
        from wasminfer_runtime.supply.oci import OciError

        client = self._client()
        what = f"model {model.name!r}"
        try:
            manifest = client.resolve(source.parsed)
            self._verify_attached(what, client, manifest.reference, policy)
            pulled = client.pull_folder(manifest, self._folder(manifest.digest) / "files")
        except OciError as err:
            raise SupplyError(f"{what}: {err}") from None
        files = model_files(model.format, pulled.files, f"{what} ({pulled.reference})")
        log.info("%s: files %s from %s", what, ", ".join(f.name for f in files), pulled.reference)
        return files

    # -- signatures -------------------------------------------------------------------------------
    def _verify_file(self, what: str, path: Path, signature: Path, policy: SignaturePolicy) -> None:
        from wasminfer_runtime.supply import signatures

        if not signature.exists() and not policy.required:
            log.warning("%s: %s is not signed; loading it (the signature policy does not require one)", what, path.name)
            return
        try:
            signer = signatures.verify_file(path, signature, _trust(policy))
        except signatures.SignatureError as err:
            raise SupplyError(f"{what}: signature: {err}") from None
        log.info("%s: %s signed by %s, verified", what, path.name, signer)

    def _verify_attached(self, what: str, client: OciClient, pinned: Reference, policy: SignaturePolicy | None) -> None:
        if policy is None:
            return
        from wasminfer_runtime.supply import attached, signatures

        try:
            signer = attached.verify_attached(client, pinned, _trust(policy))
        except signatures.SignatureError as err:
            if not policy.required and err.unsigned:
                log.warning("%s: %s is not signed; loading it (the signature policy does not require one)", what, pinned)
                return
            raise SupplyError(f"{what}: signature: {err}") from None
        log.info("%s: %s signed by %s, verified", what, pinned, signer)

    def _folder(self, digest: str) -> Path:
        folder = self.cache / digest.replace(":", "/")
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def model_files(fmt: formats.ModelFormat, files: list[Path], what: str) -> list[Path]:
    """The files a model of this format loads, picked from a pulled folder by their suffixes."""
    suffixes = formats.MODEL_FILES[fmt]
    picked = []
    for suffix in suffixes:
        found = sorted(f for f in files if f.suffix == suffix)
        if len(found) > 1:
            raise SupplyError(f"{what}: {len(found)} {suffix} files ({', '.join(f.name for f in found)}); one is expected")
        if found:
            picked.append(found[0])
        elif suffix == suffixes[0]:
            names = ", ".join(f.name for f in files)
            raise SupplyError(f"{what}: no {suffix} file among {names} (a {fmt.value} model)")
    return picked


def signature_of(path: Path) -> Path:
    """Where a file's signature is looked for: FILE.sig (a key pair's), else FILE.sigstore.json (keyless)."""
    from wasminfer_runtime.supply.keyless import BUNDLE_SUFFIX

    sig = path.with_name(path.name + ".sig")
    bundle = path.with_name(path.name + BUNDLE_SUFFIX)
    return bundle if not sig.exists() and bundle.exists() else sig


def _trust(policy: SignaturePolicy) -> signatures.Trust:
    from wasminfer_runtime.supply import keyless, signatures

    keyless_policy = policy.sigstore
    sigstore = None
    if keyless_policy is not None:
        sigstore = keyless.SigstoreTrust.of(keyless_policy.trusted_root, [(i.identity, i.issuer) for i in keyless_policy.identities])
    return signatures.load_trust(policy.keys, sigstore)
