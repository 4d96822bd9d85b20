"""Which signatures a module or model must carry: the namespace's policy from the operator configuration
and the resource's own spec.signatures, each of which must verify (a resource cannot loosen its
namespace's policy). Pure: the operator's checks and the pods' fetch plans both start from here."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import PurePosixPath

from wasminfer_operator import api
from wasminfer_operator.profiles import OperatorConfig

NAMESPACE_POLICY = "namespace signature policy"
SPEC_POLICY = "spec.signatures"


@dataclass(frozen=True)
class TrustPolicy:
    """Keys one of which must have signed the artifact; the keys are PEM texts (the namespace's, from the
    operator configuration) or ConfigMap keys of the namespace (the resource's own)."""

    origin: str
    required: bool
    pem: tuple[str, ...] = ()
    config_map_keys: tuple[tuple[str, str], ...] = ()  # (ConfigMap, key)
    trusted_root: tuple[str, str] | None = None  # (ConfigMap, key) of a Sigstore trusted_root.json
    trusted_root_json: str | None = None  # or its text (the namespace's, from the operator configuration)
    identities: tuple[tuple[str, str], ...] = ()  # (identity, issuer) allowed to sign keyless


def policies_for(cfg: OperatorConfig, namespace: str, own: api.SignaturePolicy | None) -> list[TrustPolicy]:
    out = []
    ns = cfg.signatures_for(namespace)
    if ns is not None:
        keyless = ns.sigstore
        out.append(TrustPolicy(
            NAMESPACE_POLICY, ns.required, pem=tuple(ns.keys), trusted_root_json=keyless.trusted_root if keyless else None,
            identities=tuple((i.identity, i.issuer) for i in keyless.identities) if keyless else (),
        ))  # fmt: skip
    if own is not None:
        sigstore = own.sigstore
        out.append(TrustPolicy(
            SPEC_POLICY, own.required, config_map_keys=tuple((k.name, k.key) for k in own.keys),
            trusted_root=(sigstore.trusted_root.name, sigstore.trusted_root.key) if sigstore else None,
            identities=tuple((i.identity, i.issuer) for i in sigstore.identities) if sigstore else (),
        ))  # fmt: skip
    return out


def inline_key_name(pem: str) -> str:
    """The child ConfigMap key a namespace policy's key is written under (mounted in the fetch step)."""
    return f"trust-{hashlib.sha256(pem.encode()).hexdigest()[:16]}.pub"


def inline_root_name(text: str) -> str:
    """The child ConfigMap key a namespace policy's Sigstore trusted root is written under."""
    return f"trust-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"


def key_paths(policy: TrustPolicy, config_dir: PurePosixPath, mounted: list[PurePosixPath]) -> list[PurePosixPath]:
    """Where the fetch step finds the policy's keys: its inline keys in the config folder, then the
    ConfigMap keys mounted for it (in the order of `config_map_keys`)."""
    return [config_dir / inline_key_name(pem) for pem in policy.pem] + mounted
