"""Signatures checked before a module or model is compiled or loaded: cosign key-pair signatures.

- A file (a module, a model file) carries a `cosign sign-blob` signature: base64 of the signature
  over the file's bytes, or a cosign bundle (the legacy `--bundle` JSON or a Sigstore bundle) holding it.
- An OCI artifact carries its signatures attached to it (attached.py).

A signature verifies when one of the trusted public keys (PEM, as `cosign generate-key-pair` writes
cosign.pub) verifies it: ECDSA with SHA-256, RSA PKCS#1 v1.5 with SHA-256, or Ed25519.
`sign_blob` and attached.py produce the same formats, so cosign verifies what this signs.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa


MAX_SIGNATURE_FILE = 1 << 20

if TYPE_CHECKING:
    from wasminfer_runtime.supply.keyless import SigstoreTrust

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


class SignatureError(Exception):
    """A signature that is missing (`unsigned`), malformed or made by no trusted key; the message says
    which and why."""

    def __init__(self, message: str, unsigned: bool = False) -> None:
        super().__init__(message)
        self.unsigned = unsigned


@dataclass(frozen=True)
class TrustedKey:
    name: str  # the key file's name, reported with each verdict
    key: PublicKey

    def verifies(self, data: bytes, signature: bytes) -> bool:
        try:
            if isinstance(self.key, ec.EllipticCurvePublicKey):
                self.key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
            elif isinstance(self.key, rsa.RSAPublicKey):
                self.key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
            else:
                self.key.verify(signature, data)
        except (InvalidSignature, ValueError):
            return False
        return True


def load_public_keys(paths: Sequence[Path]) -> list[TrustedKey]:
    """The trusted keys (PEM public keys); an unreadable or unsupported key file is named in the error."""
    keys = []
    for path in paths:
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except OSError as err:
            raise SignatureError(f"trusted key {path}: {err.strerror or err}") from None
        except ValueError as err:
            raise SignatureError(f"trusted key {path}: not a PEM public key ({err})") from None
        if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey)):
            raise SignatureError(f"trusted key {path}: {type(key).__name__} keys are not supported (ECDSA, RSA, Ed25519 are)")
        keys.append(TrustedKey(path.name, key))
    if not keys:
        raise SignatureError("no trusted keys are configured")
    return keys


@dataclass(frozen=True)
class Trust:
    """What a policy trusts: key pairs, Sigstore identities under a trusted root, or both."""

    keys: tuple[TrustedKey, ...] = ()
    sigstore: SigstoreTrust | None = None

    def describe(self) -> str:
        names = [k.name for k in self.keys]
        if self.sigstore is not None:
            names += [f"{i.identity} ({i.issuer})" for i in self.sigstore.identities]
        return ", ".join(names)


def load_trust(keys: Sequence[Path], sigstore: SigstoreTrust | None = None) -> Trust:
    """The keys loaded (none needed when Sigstore identities are trusted)."""
    if not keys and sigstore is None:
        raise SignatureError("no trusted keys or Sigstore identities are configured")
    return Trust(tuple(load_public_keys(keys)) if keys else (), sigstore)


def load_private_key(path: Path, password: bytes | None = None) -> PrivateKey:
    """A PEM private key (PKCS#8 or traditional, optionally password-protected) to sign with."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password)
    except OSError as err:
        raise SignatureError(f"signing key {path}: {err.strerror or err}") from None
    except (ValueError, TypeError) as err:
        raise SignatureError(
            f"signing key {path}: not a PEM private key, or a wrong password ({err}); "
            "a cosign.key can be converted with `cosign import-key-pair`'s counterpart, or sign with cosign"
        ) from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
        raise SignatureError(f"signing key {path}: {type(key).__name__} keys are not supported")
    return key


def sign(key: PrivateKey, data: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(data)


def sign_blob(key: PrivateKey, data: bytes) -> str:
    """What `cosign sign-blob --output-signature` writes: base64 of the signature."""
    return base64.b64encode(sign(key, data)).decode()


def signature_from_file(text: bytes, where: str) -> bytes:
    """The signature bytes of a sign-blob output: base64 text, a legacy cosign bundle, or a Sigstore bundle."""
    if len(text) > MAX_SIGNATURE_FILE:
        raise SignatureError(f"{where}: {len(text)} bytes is not a signature file")
    stripped = text.strip()
    encoded: Any = stripped
    if stripped.startswith(b"{"):
        try:
            bundle = json.loads(stripped)
        except ValueError:
            raise SignatureError(f"{where}: a JSON signature bundle that does not parse") from None
        encoded = bundle.get("base64Signature") if isinstance(bundle, dict) else None
        if encoded is None and isinstance(bundle, dict):
            encoded = (bundle.get("messageSignature") or {}).get("signature")
        if not isinstance(encoded, str):
            raise SignatureError(f"{where}: the bundle holds no signature (base64Signature or messageSignature.signature)")
    try:
        signature = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{where}: not a base64 signature") from None
    if not signature:
        raise SignatureError(f"{where}: the signature is empty")
    return signature


def verify_blob(data: bytes, signature: bytes, keys: Sequence[TrustedKey], what: str) -> str:
    """The name of the trusted key that verifies the signature over data; raises SignatureError otherwise."""
    for key in keys:
        if key.verifies(data, signature):
            return key.name
    raise SignatureError(f"{what}: the signature does not verify with the trusted key(s) {', '.join(k.name for k in keys)}")


def verify_file(path: Path, signature_file: Path, trust: Trust | Sequence[TrustedKey]) -> str:
    """A file checked against its signature file: a sign-blob signature or bundle, or a keyless Sigstore bundle."""
    try:
        text = signature_file.read_bytes()
    except FileNotFoundError:
        raise SignatureError(f"{path.name}: unsigned: no signature at {signature_file}", unsigned=True) from None
    except OSError as err:
        raise SignatureError(f"{signature_file}: {err.strerror or err}") from None
    return verify_signed(path.read_bytes(), text, trust, path.name, str(signature_file))


def verify_signed(data: bytes, signature_text: bytes, trust: Trust | Sequence[TrustedKey], what: str, where: str) -> str:
    """Who signed data: the signature text is a key pair's (base64, or a bundle holding it) or a keyless bundle."""
    from wasminfer_runtime.supply import keyless

    if not isinstance(trust, Trust):
        trust = Trust(tuple(trust))
    if len(signature_text) <= MAX_SIGNATURE_FILE and keyless.is_bundle(signature_text):
        if trust.sigstore is None:
            raise SignatureError(f"{what}: a keyless Sigstore bundle, but the policy trusts keys only ({trust.describe()})")
        return keyless.verify_bundle(data, signature_text, trust.sigstore, what)
    if not trust.keys:
        raise SignatureError(f"{what}: a key pair's signature, but the policy trusts Sigstore identities only")
    return verify_blob(data, signature_from_file(signature_text, where), trust.keys, what)
