"""A Sigstore of the test's own, made with `cryptography`: a Fulcio-like CA, a CT log and a Rekor log,
each with its own key, written as a trusted_root.json; and keyless signing that issues a short-lived
certificate for an identity (with its embedded SCT), signs the artifact (or a DSSE envelope) with a
throwaway key, logs a hashedrekord (or dsse) entry (signed entry timestamp, a one-leaf inclusion proof and
its signed checkpoint) and writes a v0.3 bundle. Both sigstore-python and the cosign CLI verify these bundles offline against the
trusted root: nothing reaches the public Sigstore."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")  # the OIDC issuer, raw bytes
ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")  # the same, a DER UTF8String
SCT_LIST = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")


def _spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    length = bytes([n]) if n < 128 else bytes([0x81, n]) if n < 256 else bytes([0x82]) + n.to_bytes(2, "big")
    return bytes([tag]) + length + content


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


@dataclass
class LocalSigstore:
    name: str = "wasminfer-test"
    ca_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    ct_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    rekor_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    def __post_init__(self) -> None:
        self.ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.name),
                                  x509.NameAttribute(NameOID.COMMON_NAME, f"{self.name} fulcio")])
        now = _now()
        self.ca = (
            x509.CertificateBuilder().subject_name(self.ca_name).issuer_name(self.ca_name).public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key()), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )  # fmt: skip
        self.ct_log_id = hashlib.sha256(_spki(self.ct_key)).digest()
        self.rekor_log_id = hashlib.sha256(_spki(self.rekor_key)).digest()

    def trusted_root(self, path: Path) -> Path:
        start = (_now() - datetime.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

        def log(key: ec.EllipticCurvePrivateKey, log_id: bytes, url: str) -> dict[str, Any]:
            return {"baseUrl": url, "hashAlgorithm": "SHA2_256", "logId": {"keyId": _b64(log_id)},
                    "publicKey": {"rawBytes": _b64(_spki(key)), "keyDetails": "PKIX_ECDSA_P256_SHA_256", "validFor": {"start": start}}}

        root = {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log(self.rekor_key, self.rekor_log_id, f"https://rekor.{self.name}.invalid")],
            "ctlogs": [log(self.ct_key, self.ct_log_id, f"https://ctlog.{self.name}.invalid")],
            "certificateAuthorities": [{
                "subject": {"organization": self.name, "commonName": f"{self.name} fulcio"}, "uri": f"https://fulcio.{self.name}.invalid",
                "certChain": {"certificates": [{"rawBytes": _b64(self.ca.public_bytes(serialization.Encoding.DER))}]},
                "validFor": {"start": start},
            }],
            "timestampAuthorities": [],
        }  # fmt: skip
        path.write_text(json.dumps(root))
        return path

    def _certificate(self, key: ec.EllipticCurvePrivateKey, identity: str, issuer: str, signed_at: datetime.datetime) -> x509.Certificate:
        """A Fulcio-like certificate for `identity`, valid ten minutes from `signed_at`, its SCT embedded."""
        serial = x509.random_serial_number()
        san = x509.UniformResourceIdentifier(identity) if "://" in identity else x509.RFC822Name(identity)

        def builder() -> x509.CertificateBuilder:
            return (
                x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(self.ca_name).public_key(key.public_key())
                .serial_number(serial).not_valid_before(signed_at - datetime.timedelta(seconds=30))
                .not_valid_after(signed_at + datetime.timedelta(minutes=10))
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()), critical=False)
                .add_extension(x509.SubjectAlternativeName([san]), critical=True)
                .add_extension(x509.UnrecognizedExtension(ISSUER_V1, issuer.encode()), critical=False)
                .add_extension(x509.UnrecognizedExtension(ISSUER_V2, _der(0x0C, issuer.encode())), critical=False)
            )  # fmt: skip

        # The SCT signs the certificate as it is without the SCT (RFC 6962's precertificate entry).
        tbs = builder().sign(self.ca_key, hashes.SHA256()).tbs_certificate_bytes
        ms = int(signed_at.timestamp() * 1000)
        issuer_key_hash = hashlib.sha256(_spki(self.ca_key)).digest()
        signed = struct.pack("!BBQH", 0, 0, ms, 1) + issuer_key_hash + len(tbs).to_bytes(3, "big") + tbs + struct.pack("!H", 0)
        sig = self.ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        sct = bytes([0]) + self.ct_log_id + struct.pack("!QH", ms, 0) + struct.pack("!BBH", 4, 3, len(sig)) + sig
        listed = struct.pack("!H", len(sct) + 2) + struct.pack("!H", len(sct)) + sct
        cert = builder().add_extension(x509.UnrecognizedExtension(SCT_LIST, _der(0x04, listed)), critical=False).sign(self.ca_key, hashes.SHA256())
        assert cert.tbs_precertificate_bytes == tbs
        return cert

    def sign(self, data: bytes, identity: str, issuer: str, *, logged_at: datetime.datetime | None = None) -> bytes:
        """A keyless v0.3 bundle for data, by `identity` from `issuer`; logged_at moves the log's time."""
        signed_at = _now()
        key = ec.generate_private_key(ec.SECP256R1())  # used once, as keyless signing does
        cert = self._certificate(key, identity, issuer, signed_at)
        signature = key.sign(data, ec.ECDSA(hashes.SHA256()))
        digest = hashlib.sha256(data)
        body = rfc8785.dumps({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": digest.hexdigest()}},
            "signature": {"content": _b64(signature), "publicKey": {"content": _b64(cert.public_bytes(serialization.Encoding.PEM))}},
        }})  # fmt: skip
        content = {"messageSignature": {"messageDigest": {"algorithm": "SHA2_256", "digest": _b64(digest.digest())},
                                        "signature": _b64(signature)}}
        return self._bundle(cert, self._log_entry(body, "hashedrekord", logged_at or signed_at), content)

    def sign_dsse(self, payload: bytes, payload_type: str, identity: str, issuer: str) -> bytes:
        """A keyless v0.3 bundle whose DSSE envelope holds payload (as cosign v3 signs an OCI artifact)."""
        signed_at = _now()
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._certificate(key, identity, issuer, signed_at)
        kind = payload_type.encode()
        signature = key.sign(b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload), ec.ECDSA(hashes.SHA256()))
        envelope = {"payload": _b64(payload), "payloadType": payload_type, "signatures": [{"sig": _b64(signature)}]}
        body = rfc8785.dumps({"apiVersion": "0.0.1", "kind": "dsse", "spec": {
            "envelopeHash": {"algorithm": "sha256", "value": hashlib.sha256(json.dumps(envelope).encode()).hexdigest()},
            "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
            "signatures": [{"signature": _b64(signature), "verifier": _b64(cert.public_bytes(serialization.Encoding.PEM))}],
        }})  # fmt: skip
        return self._bundle(cert, self._log_entry(body, "dsse", signed_at), {"dsseEnvelope": envelope})

    def _log_entry(self, body: bytes, kind: str, logged_at: datetime.datetime) -> dict[str, Any]:
        """The Rekor entry of body: its signed entry timestamp, a one-leaf inclusion proof and its checkpoint."""
        integrated = int(logged_at.timestamp())
        promise = rfc8785.dumps({"body": _b64(body), "integratedTime": integrated, "logID": self.rekor_log_id.hex(), "logIndex": 0})
        root_hash = hashlib.sha256(b"\x00" + body).digest()  # a one-leaf tree: the leaf is the root
        note = f"{self.name}.rekor - 1\n1\n{_b64(root_hash)}\n"
        note_sig = self.rekor_key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        checkpoint = f"{note}\n\u2014 {self.name}.rekor {_b64(self.rekor_log_id[:4] + note_sig)}\n"
        return {
            "logIndex": "0", "logId": {"keyId": _b64(self.rekor_log_id)},
            "kindVersion": {"kind": kind, "version": "0.0.1"}, "integratedTime": str(integrated),
            "inclusionPromise": {"signedEntryTimestamp": _b64(self.rekor_key.sign(promise, ec.ECDSA(hashes.SHA256())))},
            "inclusionProof": {"logIndex": "0", "rootHash": _b64(root_hash), "treeSize": "1", "hashes": [],
                               "checkpoint": {"envelope": checkpoint}},
            "canonicalizedBody": _b64(body),
        }  # fmt: skip

    @staticmethod
    def _bundle(cert: x509.Certificate, entry: dict[str, Any], content: dict[str, Any]) -> bytes:
        bundle = {
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"certificate": {"rawBytes": _b64(cert.public_bytes(serialization.Encoding.DER))},
                                     "tlogEntries": [entry]},
            **content,
        }
        return json.dumps(bundle).encode()
