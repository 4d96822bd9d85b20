"""Signatures attached to an OCI artifact, found where cosign puts them, and checked against a Trust.

- cosign's signature manifest, tagged `sha256-<hex>.sig` (what `cosign sign --key` writes): layers holding a
  simple-signing payload that names the artifact's manifest digest, the signature in a layer annotation.
- Sigstore bundles attached as OCI 1.1 referrers (cosign v3's default, and cosign v2 `--new-bundle-format`):
  a manifest of artifactType `application/vnd.dev.sigstore.bundle.v0.3+json` whose subject is the artifact,
  found through the registry's referrers API or its fallback tag `sha256-<hex>`. The bundle's DSSE envelope
  holds an in-toto statement whose subject is the digest and whose predicate is cosign's signing
  predicate; it is signed by a trusted key, or keyless by an allowed Sigstore identity.

A keyless signature in cosign's older attached form (a certificate and a Rekor timestamp, without an
inclusion proof) cannot be verified offline, and is refused with that reason.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from cryptography.hazmat.primitives import serialization

from wasminfer_runtime.supply import keyless
from wasminfer_runtime.supply.oci import EMPTY_CONFIG_TYPE, MANIFEST_TYPE, TITLE, OciClient, OciError
from wasminfer_runtime.supply.reference import Reference
from wasminfer_runtime.supply.signatures import (
    MAX_SIGNATURE_FILE,
    PrivateKey,
    SignatureError,
    Trust,
    TrustedKey,
    sign,
    signature_from_file,
)

IMAGE_CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
SIMPLE_SIGNING_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
COSIGN_SIGNATURE_TYPE = "cosign container image signature"
BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
INTOTO_STATEMENT_TYPES = ("https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1")
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
LEGACY_KEYLESS = ("a keyless signature in cosign's older attached form, which carries no inclusion proof and cannot be "
                  "verified offline; sign with cosign v3 (or cosign v2 --new-bundle-format)")


def signature_tag(digest: str) -> str:
    return digest.replace(":", "-") + ".sig"


def verify_attached(client: OciClient, pinned: Reference, trust: Trust) -> str:
    """Who signed the artifact's manifest digest (a trusted key's name, or a Sigstore identity), by any
    signature attached to it; raises SignatureError (`unsigned` when nothing is attached) otherwise."""
    assert pinned.digest is not None
    reasons: list[str] = []
    attached = False
    try:
        sig_manifest = client.resolve(pinned.with_tag(signature_tag(pinned.digest)))
    except OciError as err:
        if err.kind != "not_found":
            raise SignatureError(f"{pinned}: its signature cannot be read: {err}") from None
    else:
        attached = True
        signer = _verify_signature_manifest(client, sig_manifest.reference, sig_manifest.layers, pinned.digest, trust, reasons)
        if signer is not None:
            return signer
    try:
        bundles = client.referrers(pinned, BUNDLE_TYPE)
    except OciError as err:
        raise SignatureError(f"{pinned}: its attached bundles cannot be listed: {err}") from None
    for descriptor in bundles:
        bundle = _attached_bundle(client, pinned, descriptor["digest"], reasons)
        if bundle is None:
            continue
        attached = True
        signer = _verify_bundle(bundle, pinned.digest, f"bundle {descriptor['digest'][:19]}", trust, reasons)
        if signer is not None:
            return signer
    if not attached:
        raise SignatureError(f"{pinned}: unsigned: no signature is attached (no {signature_tag(pinned.digest)} "
                             "and no Sigstore bundle among its referrers)", unsigned=True)
    why = "; ".join(dict.fromkeys(reasons)) or "no signature layers"
    raise SignatureError(f"{pinned}: no attached signature verifies with {trust.describe()}: {why}")


def _verify_signature_manifest(client: OciClient, sig_ref: Reference, layers: list[dict[str, Any]], digest: str, trust: Trust,
                               reasons: list[str]) -> str | None:
    for layer in layers:
        if layer.get("mediaType") != SIMPLE_SIGNING_TYPE:
            continue
        annotations = layer.get("annotations") or {}
        encoded = annotations.get(SIGNATURE_ANNOTATION)
        if not isinstance(encoded, str):
            reasons.append("a signature layer without its signature annotation")
            continue
        try:
            payload = client.blob_bytes(sig_ref, layer, limit=MAX_SIGNATURE_FILE)
            signature = signature_from_file(encoded.encode(), f"{sig_ref}")
        except (OciError, SignatureError) as err:
            reasons.append(str(err))
            continue
        signer = next((k.name for k in trust.keys if k.verifies(payload, signature)), None)
        if signer is None:
            reasons.append(LEGACY_KEYLESS if CERTIFICATE_ANNOTATION in annotations else "a signature by none of the trusted keys")
            continue
        signed_digest = _simple_signing_digest(payload)
        if signed_digest != digest:
            reasons.append(f"a valid signature, but for {signed_digest}, not this artifact")
            continue
        return signer
    return None


def _simple_signing_digest(payload: bytes) -> str | None:
    try:
        critical = json.loads(payload)["critical"]
        if critical.get("type") != COSIGN_SIGNATURE_TYPE:
            return None
        digest = critical["image"]["docker-manifest-digest"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return digest if isinstance(digest, str) else None


def _attached_bundle(client: OciClient, pinned: Reference, digest: str, reasons: list[str]) -> bytes | None:
    """The Sigstore bundle a referrer holds; None for referrers of other kinds (an SBOM, say)."""
    where = pinned.with_tag(None).pinned(digest)
    try:
        manifest = client.resolve(where)
        if manifest.content.get("artifactType") != BUNDLE_TYPE:
            return None
        layer = next((d for d in manifest.layers if d.get("mediaType") == BUNDLE_TYPE), None)
        if layer is None:
            reasons.append(f"referrer {digest[:19]} holds no bundle layer")
            return None
        return client.blob_bytes(where, layer, limit=MAX_SIGNATURE_FILE)
    except OciError as err:
        reasons.append(str(err))
        return None


def _verify_bundle(text: bytes, digest: str, what: str, trust: Trust, reasons: list[str]) -> str | None:
    try:
        if keyless.is_bundle(text):
            if trust.sigstore is None:
                raise SignatureError(f"{what}: a keyless Sigstore bundle, but the policy trusts keys only")
            signer, payload_type, payload = keyless.verify_dsse(text, trust.sigstore, what)
        else:
            signer, payload_type, payload = _verify_key_envelope(text, trust.keys, what)
        _check_statement(payload_type, payload, digest, what)
    except SignatureError as err:
        reasons.append(str(err))
        return None
    return signer


def dsse_pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what a DSSE signature signs."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def _verify_key_envelope(text: bytes, keys: tuple[TrustedKey, ...], what: str) -> tuple[str, str, bytes]:
    """The trusted key that signed a key-pair bundle's DSSE envelope, its payload type and payload."""
    if not keys:
        raise SignatureError(f"{what}: a key pair's signature, but the policy trusts Sigstore identities only")
    try:
        bundle = json.loads(text)
        envelope = bundle["dsseEnvelope"]
        payload_type = envelope["payloadType"]
        payload = base64.b64decode(envelope["payload"], validate=True)
        signatures = [base64.b64decode(s["sig"], validate=True) for s in envelope["signatures"]]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise SignatureError(f"{what}: not a bundle with a DSSE envelope") from None
    if not isinstance(payload_type, str):
        raise SignatureError(f"{what}: not a bundle with a DSSE envelope")
    signed = dsse_pae(payload_type, payload)
    for key in keys:
        if any(key.verifies(signed, s) for s in signatures):
            return key.name, payload_type, payload
    raise SignatureError(f"{what}: the DSSE envelope does not verify with the trusted key(s) {', '.join(k.name for k in keys)}")


def _check_statement(payload_type: str, payload: bytes, digest: str, what: str) -> None:
    """The envelope must sign cosign's statement that the artifact, by this digest, was signed."""
    if payload_type != INTOTO_PAYLOAD_TYPE:
        raise SignatureError(f"{what}: a DSSE payload of type {payload_type!r}, not an in-toto statement")
    try:
        statement = json.loads(payload)
        kind, predicate, subjects = statement["_type"], statement.get("predicateType"), statement["subject"]
        algorithm, hex_digest = digest.split(":", 1)
        named = [s.get("digest", {}).get(algorithm) for s in subjects if isinstance(s, dict)]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise SignatureError(f"{what}: the signed payload is not an in-toto statement") from None
    if kind not in INTOTO_STATEMENT_TYPES:
        raise SignatureError(f"{what}: the signed payload is not an in-toto statement")
    if predicate != COSIGN_SIGN_PREDICATE:
        raise SignatureError(f"{what}: an attestation ({predicate}), not a signature ({COSIGN_SIGN_PREDICATE})")
    if hex_digest not in named:
        raise SignatureError(f"{what}: a valid signature, but for {', '.join(map(str, named))}, not this artifact")


# -- attaching (what cosign writes; the tests and `wasminfer push --sign-key` use these) ----------


def simple_signing_payload(ref: Reference, digest: str) -> bytes:
    payload = {
        "critical": {
            "identity": {"docker-reference": ref.name},
            "image": {"docker-manifest-digest": digest},
            "type": COSIGN_SIGNATURE_TYPE,
        },
        "optional": None,
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def attach_signature(client: OciClient, pinned: Reference, key: PrivateKey) -> Reference:
    """Signs the artifact's manifest digest and attaches it as `cosign sign --key` does (tag sha256-<hex>.sig)."""
    assert pinned.digest is not None
    payload = simple_signing_payload(pinned, pinned.digest)
    signature = base64.b64encode(sign(key, payload)).decode()
    sig_ref = pinned.with_tag(signature_tag(pinned.digest))
    layer = client.push_blob(sig_ref, None, payload, SIMPLE_SIGNING_TYPE, {SIGNATURE_ANNOTATION: signature})
    # An image config as cosign writes one (its tools read the signature manifest as an image).
    image_config = {"architecture": "", "os": "", "config": {}, "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}}
    config = client.push_blob(sig_ref, None, json.dumps(image_config).encode(), IMAGE_CONFIG_TYPE)
    return client.push_manifest(sig_ref, {"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "config": config, "layers": [layer]})


def cosign_statement(digest: str) -> bytes:
    """The in-toto statement cosign signs for an artifact in the bundle format."""
    algorithm, hex_digest = digest.split(":", 1)
    statement = {"_type": INTOTO_STATEMENT_TYPES[0], "subject": [{"digest": {algorithm: hex_digest}}],
                 "predicateType": COSIGN_SIGN_PREDICATE}
    return json.dumps(statement, separators=(",", ":")).encode()


def key_signed_bundle(key: PrivateKey, digest: str) -> bytes:
    """A v0.3 bundle whose DSSE envelope, signed by a key pair, states that `digest` was signed."""
    payload = cosign_statement(digest)
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    bundle = {
        "mediaType": BUNDLE_TYPE,
        "verificationMaterial": {"publicKey": {"hint": base64.b64encode(hashlib.sha256(spki).digest()).decode()}},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(), "payloadType": INTOTO_PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(sign(key, dsse_pae(INTOTO_PAYLOAD_TYPE, payload))).decode()}],
        },
    }  # fmt: skip
    return json.dumps(bundle).encode()


def attach_bundle(client: OciClient, pinned: Reference, bundle: bytes) -> Reference:
    """Attaches a Sigstore bundle to the artifact as an OCI 1.1 referrer, as cosign v3 does."""
    assert pinned.digest is not None
    bare = pinned.with_tag(None)
    title = hashlib.sha256(bundle).hexdigest()
    layer = client.push_blob(bare, None, bundle, BUNDLE_TYPE, {TITLE: f"sha256-{title}.sigstore.json"})
    config = client.push_blob(bare, None, b"{}", EMPTY_CONFIG_TYPE)
    manifest = {
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": BUNDLE_TYPE, "config": config, "layers": [layer],
        "annotations": {"dev.sigstore.bundle.content": "dsse-envelope", "dev.sigstore.bundle.predicateType": COSIGN_SIGN_PREDICATE},
    }  # fmt: skip
    return client.push_referrer(pinned, manifest)
