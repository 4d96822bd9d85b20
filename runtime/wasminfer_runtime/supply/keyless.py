"""Keyless signatures: a Sigstore bundle (the signing certificate a Fulcio CA issued to an OIDC identity,
the Rekor entry that logged the signature, its inclusion proof) verified offline by sigstore-python
against a configured trusted root, and accepted only for the identities and issuers allowed.

This is what `cosign sign-blob --bundle FILE.sigstore.json` (and `sigstore sign`) write. No network:
the trusted root names the CAs, the transparency log's and the CT log's keys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from wasminfer_runtime.backends.base import first_line
from wasminfer_runtime.supply.signatures import SignatureError

BUNDLE_SUFFIX = ".sigstore.json"


@dataclass(frozen=True)
class Identity:
    """Who may have signed: the certificate's subject (an e-mail or URI SAN) and the OIDC issuer."""

    identity: str
    issuer: str


@dataclass(frozen=True)
class SigstoreTrust:
    trusted_root: Path  # a Sigstore trusted_root.json
    identities: tuple[Identity, ...]

    @classmethod
    def of(cls, trusted_root: Path, pairs: Sequence[tuple[str, str]]) -> SigstoreTrust:
        """From (identity, issuer) pairs, as configurations and plans list them."""
        return cls(trusted_root, tuple(Identity(i, o) for i, o in pairs))


def is_bundle(text: bytes) -> bool:
    """A Sigstore bundle with a certificate (keyless), as opposed to a key pair's signature."""
    import json

    try:
        doc = json.loads(text)
    except ValueError:
        return False
    material = doc.get("verificationMaterial") if isinstance(doc, dict) else None
    return isinstance(material, dict) and ("certificate" in material or "x509CertificateChain" in material)


def verify_bundle(data: bytes, bundle_text: bytes, trust: SigstoreTrust, what: str) -> str:
    """The identity that signed data, by the bundle's verification; raises SignatureError otherwise."""
    signer, _ = _verified(bundle_text, trust, what, lambda verifier, bundle, allowed: verifier.verify_artifact(data, bundle, allowed))
    return signer


def verify_dsse(bundle_text: bytes, trust: SigstoreTrust, what: str) -> tuple[str, str, bytes]:
    """The identity that signed a bundle's DSSE envelope, the envelope's payload type and its payload."""
    signer, (payload_type, payload) = _verified(bundle_text, trust, what,
                                                lambda verifier, bundle, allowed: verifier.verify_dsse(bundle, allowed))
    return signer, payload_type, payload


_T = TypeVar("_T")


def _verified(bundle_text: bytes, trust: SigstoreTrust, what: str, check: Callable[[Any, Any, Any], _T]) -> tuple[str, _T]:
    """The first allowed identity for which `check(verifier, bundle, identity policy)` passes, and its result."""
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import Bundle, TrustedRoot
    from sigstore.verify import Verifier, policy

    try:
        verifier = Verifier(trusted_root=TrustedRoot.from_file(str(trust.trusted_root)))
    except (OSError, ValueError, SigstoreError) as err:
        raise SignatureError(f"trusted root {trust.trusted_root}: {err}") from None
    try:
        bundle = Bundle.from_json(bundle_text)
    except (ValueError, SigstoreError) as err:
        raise SignatureError(f"{what}: not a Sigstore bundle: {first_line(err)}") from None
    reasons = []
    for allowed in trust.identities:
        try:
            result = check(verifier, bundle, policy.Identity(identity=allowed.identity, issuer=allowed.issuer))
        except (SigstoreError, ValueError) as err:
            reasons.append(first_line(err))
            continue
        return f"{allowed.identity} ({allowed.issuer})", result
    raise SignatureError(f"{what}: the Sigstore bundle does not verify: {'; '.join(dict.fromkeys(reasons))}")
