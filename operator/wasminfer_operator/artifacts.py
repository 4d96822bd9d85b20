"""The operator's look at an OCI source before any pod runs: the tag resolved to a digest (pods then
pull that digest, so a tag pushed again changes nothing until the next check resolves it anew), and
the signatures the trust policies ask for, checked against what cosign attached to that digest.

Each check reads the source's pull Secret, CA ConfigMap and key ConfigMaps through the API, talks to
the registry in a thread, and is kept for `source_recheck_seconds` (a failed one for less)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from wasminfer_operator import api
from wasminfer_operator.kube import Kube, KubeError
from wasminfer_operator.status import Verification
from wasminfer_operator.trust import TrustPolicy

log = logging.getLogger("wasminfer.operator")
_SpecT = TypeVar("_SpecT", api.InferenceModelSpec, api.WasmWorkerSpec)
_TrustFiles = tuple[list[Path], Path | None]  # a policy's key files and its Sigstore trusted root

FAILED_RECHECK_SECONDS = 10.0
TRANSIENT = {"PullFailed", "SourceCheckFailed"}  # a registry or API out of reach, not an answer
# What Verified says of a source the operator cannot check itself (https files, claims, ConfigMaps).
VERIFIED_WHEN_FETCHED: Verification = (
    "Unknown", "VerifiedWhenFetched", "each pod's fetch step verifies the signatures before the files are used; a failure shows in Degraded"
)
DOCKER_CONFIG_KEY = ".dockerconfigjson"


@dataclass(frozen=True)
class ArtifactCheck:
    """What the operator found: (ok, reason, message) for the Ready condition, the pinned reference the
    pods use, and (status, reason, message) of the Verified condition (None without a policy)."""

    ok: bool
    reason: str
    message: str
    pinned: str | None = None
    verified: Verification | None = None


class _Refused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Artifacts:
    def __init__(self, kube: Kube, recheck_seconds: float) -> None:
        self.kube = kube
        self.recheck_seconds = recheck_seconds
        self._cache: dict[tuple[Any, ...], tuple[float, ArtifactCheck]] = {}
        self._last_good: dict[tuple[Any, ...], ArtifactCheck] = {}

    async def check(self, namespace: str, key: tuple[Any, ...], source: api.OciSource, policies: list[TrustPolicy]) -> ArtifactCheck:
        """The check of `source` for the object `key` (its uid and generation), cached."""
        cache_key = (namespace, *key, source.model_dump_json(), tuple(policies))
        cached = self._cache.get(cache_key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        result = await self._check(namespace, source, policies)
        ttl = self.recheck_seconds if result.ok else FAILED_RECHECK_SECONDS
        if len(self._cache) > 4096:
            self._cache.clear()
            self._last_good.clear()
        if result.ok:
            self._last_good[cache_key] = result
        elif result.reason in TRANSIENT and cache_key in self._last_good:
            # The registry is out of reach: the digest found before still holds, and the pods keep it.
            good = self._last_good[cache_key]
            log.warning("%s: recheck failed (%s); keeping %s", source.reference, result.message, good.pinned)
            result = dataclasses.replace(good, message=f"{good.message} (the last recheck failed: {result.message})")
        self._cache[cache_key] = (time.monotonic() + ttl, result)
        return result

    def forget(self, uid: str) -> None:
        for k in [k for k in self._cache if uid in k]:
            del self._cache[k]
        for k in [k for k in self._last_good if uid in k]:
            del self._last_good[k]

    async def _check(self, namespace: str, source: api.OciSource, policies: list[TrustPolicy]) -> ArtifactCheck:
        try:
            with tempfile.TemporaryDirectory(prefix="wasminfer-oci-") as tmp:
                folder = Path(tmp)
                auth = await self._pull_secret(namespace, source, folder)
                ca = await self._ca(namespace, source, folder)
                trusts = [await self._trust_files(namespace, p, folder / f"policy-{i}") for i, p in enumerate(policies)]
                return await asyncio.to_thread(_resolve_and_verify, source, auth, ca, policies, trusts)
        except _Refused as err:
            return ArtifactCheck(False, err.reason, err.message, verified=_unknown(policies, err.message))
        except KubeError as err:
            msg = f"cannot read what the source names: {err.message}"
            return ArtifactCheck(False, "SourceCheckFailed", msg, verified=_unknown(policies, msg))

    async def _pull_secret(self, namespace: str, source: api.OciSource, folder: Path) -> Path | None:
        if source.pull_secret is None:
            return None
        secret = await self.kube.get_secret(namespace, source.pull_secret)
        if secret is None:
            raise _Refused("PullSecretNotFound", f"Secret {source.pull_secret} not found")
        data = (secret.get("data") or {}).get(DOCKER_CONFIG_KEY)
        if data is None:
            raise _Refused("PullSecretInvalid", f"Secret {source.pull_secret} has no {DOCKER_CONFIG_KEY} key (a kubernetes.io/dockerconfigjson Secret)")
        path = folder / "config.json"
        path.write_bytes(base64.b64decode(data))
        try:
            json.loads(path.read_bytes())
        except ValueError:
            raise _Refused("PullSecretInvalid", f"Secret {source.pull_secret}: {DOCKER_CONFIG_KEY} is not JSON") from None
        return path

    async def _config_map_value(self, namespace: str, name: str, key: str, what: str) -> str:
        cm = await self.kube.get_config_map(namespace, name)
        if cm is None:
            raise _Refused("KeyNotFound", f"{what}: ConfigMap {name} not found")
        value = (cm.get("data") or {}).get(key)
        if value is None:
            raise _Refused("KeyNotFound", f"{what}: ConfigMap {name} has no key {key}")
        return str(value)

    async def _ca(self, namespace: str, source: api.OciSource, folder: Path) -> Path | None:
        if source.ca is None:
            return None
        path = folder / "ca.crt"
        path.write_text(await self._config_map_value(namespace, source.ca.name, source.ca.key, "the registry's CA"))
        return path

    async def _trust_files(self, namespace: str, policy: TrustPolicy, folder: Path) -> _TrustFiles:
        """The policy's keys and Sigstore trusted root, written where the verification reads them."""
        folder.mkdir()
        texts = list(policy.pem)
        for name, key in policy.config_map_keys:
            texts.append(await self._config_map_value(namespace, name, key, f"a trusted key of {policy.origin}"))
        paths = [folder / f"key-{i}.pub" for i in range(len(texts))]
        for path, text in zip(paths, texts):
            path.write_text(text)
        root_text = policy.trusted_root_json
        if policy.trusted_root is not None:
            name, key = policy.trusted_root
            root_text = await self._config_map_value(namespace, name, key, f"the Sigstore trusted root of {policy.origin}")
        root = None
        if root_text is not None:
            root = folder / "trusted_root.json"
            root.write_text(root_text)
        return paths, root


def pin_source(spec: _SpecT, pinned: str) -> _SpecT:
    """The spec with its OCI source (a model's source, a worker's module) naming the digest it resolved to."""
    field = "source" if isinstance(spec, api.InferenceModelSpec) else "module"
    source: api.Source = getattr(spec, field)
    assert source.oci is not None
    oci = source.oci.model_copy(update={"reference": pinned})
    return spec.model_copy(update={field: source.model_copy(update={"oci": oci})})


def _unknown(policies: list[TrustPolicy], why: str) -> Verification | None:
    return ("Unknown", "NotChecked", f"not checked: {why}") if policies else None


def _resolve_and_verify(
    source: api.OciSource, auth: Path | None, ca: Path | None, policies: list[TrustPolicy], trusts: list[_TrustFiles]
) -> ArtifactCheck:
    """Blocking: the registry conversation (oras-py runs on requests)."""
    from wasminfer_runtime.supply import attached, keyless, signatures
    from wasminfer_runtime.supply.oci import OciClient, OciError, RegistryAccess
    from wasminfer_runtime.supply.reference import Reference

    client = OciClient(RegistryAccess(ca_file=ca, auth_file=auth, retries=2, backoff_seconds=0.5, timeout_seconds=20))
    try:
        manifest = client.resolve(Reference.parse(source.reference))
    except OciError as err:
        msg = str(err)
        reason = {"not_found": "SourceNotFound", "credentials": "CredentialsRefused"}.get(err.kind, "PullFailed")
        return ArtifactCheck(False, reason, msg, verified=_unknown(policies, msg))
    pinned = str(manifest.reference)
    signers = []
    for policy, (keys, root) in zip(policies, trusts):
        try:
            sigstore = keyless.SigstoreTrust.of(root, policy.identities) if root is not None and policy.identities else None
            signer = attached.verify_attached(client, manifest.reference, signatures.load_trust(keys, sigstore))
        except signatures.SignatureError as err:
            unsigned = err.unsigned
            if unsigned and not policy.required:
                signers.append(f"unsigned, allowed by the {policy.origin}")
                continue
            msg = f"{policy.origin}: {err}"
            reason = "SignatureMissing" if unsigned else "SignatureInvalid"
            return ArtifactCheck(False, reason, msg, pinned, ("False", reason, msg))
        signers.append(f"signed by {signer} ({policy.origin})")
    verified: Verification | None = ("True", "SignatureVerified", f"{pinned}: " + "; ".join(signers)) if policies else None
    return ArtifactCheck(True, "SourceResolved", f"OCI artifact {pinned}", pinned, verified)
