"""Sigstore bundles attached to OCI artifacts as OCI 1.1 referrers, as cosign v3 signs (and cosign v2 with
`--new-bundle-format`): by a key pair or keyless, found through the registry's referrers fallback tag
(the test registry has no referrers API), and checked both ways against the reference cosign CLI. Replays,
attestations that are not signatures, untrusted identities and cosign's older keyless form are refused
with the reason, by the library, `wasminfer serve` on its own and the pods' fetch step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cluster.registry import RegistryFiles
from local_sigstore import LocalSigstore
from signing import Cosign, KeyPair

from wasminfer_runtime.fetch import FetchPlan, fetch_all
from wasminfer_runtime.supply import attached
from wasminfer_runtime.supply.keyless import SigstoreTrust
from wasminfer_runtime.supply.oci import OciClient
from wasminfer_runtime.supply.reference import Reference
from wasminfer_runtime.supply.signatures import SignatureError, Trust, load_private_key, load_public_keys

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "examples" / "hello.wasm"
ME, ISSUER = "release@example.com", "https://accounts.example.com"


def keyless(root: Path, identity: str = ME) -> Trust:
    return Trust(sigstore=SigstoreTrust.of(root, [(identity, ISSUER)]))


def push(client: OciClient, reg: RegistryFiles, name: str, module: Path = HELLO) -> Reference:
    return client.push_module(module, Reference.parse(f"{reg.address}/bundles/{name}:v1"))


def test_cosign_v3_style_signature_by_cosign_verifies_here(cosign: Cosign, reg: RegistryFiles, client: OciClient) -> None:
    pinned = push(client, reg, "by-cosign")
    cosign.run("sign", "--key", str(cosign.key), "--new-bundle-format", "--tlog-upload=false", "--yes", str(pinned))
    assert not any(t.endswith(".sig") for t in _tags(client, pinned)), "cosign attached a bundle, not a .sig manifest"
    assert attached.verify_attached(client, pinned, Trust(tuple(load_public_keys([cosign.public])))) == "cosign.pub"


def test_our_key_signed_bundle_verifies_with_cosign(cosign: Cosign, keys: KeyPair, root: Path, reg: RegistryFiles,
                                                    client: OciClient) -> None:
    pinned = push(client, reg, "by-us")
    assert pinned.digest is not None
    attached.attach_bundle(client, pinned, attached.key_signed_bundle(load_private_key(keys.private), pinned.digest))
    assert attached.verify_attached(client, pinned, Trust(tuple(load_public_keys([keys.public])))) == "release.pub"
    # cosign reads bundles only with a trusted root at hand, which the key pair's check does not use
    done = cosign.run("verify", "--key", str(keys.public), "--new-bundle-format", "--insecure-ignore-tlog=true",
                      "--trusted-root", str(root), str(pinned))
    assert "signatures were verified against the specified public key" in done.stderr, done.stderr


def test_a_keyless_bundle_verifies_here_and_with_cosign(sigstore: LocalSigstore, root: Path, cosign: Cosign, keys: KeyPair,
                                                       reg: RegistryFiles, client: OciClient) -> None:
    pinned = push(client, reg, "keyless")
    assert pinned.digest is not None
    attached.attach_bundle(client, pinned, sigstore.sign_dsse(attached.cosign_statement(pinned.digest), attached.INTOTO_PAYLOAD_TYPE,
                                                              ME, ISSUER))
    assert attached.verify_attached(client, pinned, keyless(root)) == f"{ME} ({ISSUER})"
    done = cosign.run("verify", "--new-bundle-format", "--trusted-root", str(root), "--certificate-identity", ME,
                      "--certificate-oidc-issuer", ISSUER, str(pinned))
    assert "The code-signing certificate was verified using trusted certificate authority certificates" in done.stderr, done.stderr
    with pytest.raises(SignatureError, match="does not verify"):
        attached.verify_attached(client, pinned, keyless(root, "mallory@example.com"))
    with pytest.raises(SignatureError, match="a keyless Sigstore bundle, but the policy trusts keys only"):
        attached.verify_attached(client, pinned, Trust(tuple(load_public_keys([keys.public]))))


def test_replays_attestations_and_strangers_are_refused(sigstore: LocalSigstore, root: Path, keys: KeyPair, other_keys: KeyPair,
                                                        reg: RegistryFiles, client: OciClient) -> None:
    a = push(client, reg, "replay-a")
    b = push(client, reg, "replay-b", HELLO.with_name("hello.c"))
    assert a.digest is not None and b.digest is not None
    key = load_private_key(keys.private)
    trusted = Trust(tuple(load_public_keys([keys.public])))
    # a's statement, validly signed, attached to b
    attached.attach_bundle(client, b, attached.key_signed_bundle(key, a.digest))
    with pytest.raises(SignatureError, match=f"a valid signature, but for {a.digest.split(':')[1]}, not this artifact"):
        attached.verify_attached(client, b, trusted)
    # a provenance attestation of b is not a signature of b
    provenance = json.dumps({"_type": "https://in-toto.io/Statement/v1", "subject": [{"digest": {"sha256": b.digest.split(":")[1]}}],
                             "predicateType": "https://slsa.dev/provenance/v1", "predicate": {}}).encode()
    attached.attach_bundle(client, b, sigstore.sign_dsse(provenance, attached.INTOTO_PAYLOAD_TYPE, ME, ISSUER))
    with pytest.raises(SignatureError, match="an attestation \\(https://slsa.dev/provenance/v1\\), not a signature"):
        attached.verify_attached(client, b, keyless(root))
    # signed by a key nobody trusts
    attached.attach_bundle(client, b, attached.key_signed_bundle(load_private_key(other_keys.private), b.digest))
    with pytest.raises(SignatureError, match="does not verify with the trusted key"):
        attached.verify_attached(client, b, trusted)
    # and then by the trusted key: every referrer is tried
    attached.attach_bundle(client, b, attached.key_signed_bundle(key, b.digest))
    assert attached.verify_attached(client, b, trusted) == "release.pub"


def test_cosigns_older_keyless_form_is_refused_with_the_reason(keys: KeyPair, reg: RegistryFiles, client: OciClient) -> None:
    pinned = push(client, reg, "legacy-keyless")
    assert pinned.digest is not None
    payload = attached.simple_signing_payload(pinned, pinned.digest)
    sig_ref = pinned.with_tag(attached.signature_tag(pinned.digest))
    layer = client.push_blob(sig_ref, None, payload, attached.SIMPLE_SIGNING_TYPE, {
        attached.SIGNATURE_ANNOTATION: "MEUCIQDXmXWj59naoPFlLnCADIPLKgLG3LyFtKrbjpnkYiGNGgIhAJ/eNx5zr/l1MJKSFpFMjPKKr4fjh5RHEtT2DhMamZuT",
        attached.CERTIFICATE_ANNOTATION: "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
    })  # fmt: skip
    config = client.push_blob(sig_ref, None, b"{}", attached.IMAGE_CONFIG_TYPE)
    client.push_manifest(sig_ref, {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": config,
                                   "layers": [layer]})
    with pytest.raises(SignatureError, match="older attached form.*cannot be verified offline"):
        attached.verify_attached(client, pinned, Trust(tuple(load_public_keys([keys.public]))))


async def test_the_fetch_step_verifies_a_keyless_artifact_before_it_is_in_place(sigstore: LocalSigstore, root: Path,
                                                                                reg: RegistryFiles, client: OciClient,
                                                                                tmp_path: Path) -> None:
    signed, unsigned = push(client, reg, "fetch-signed"), push(client, reg, "fetch-unsigned", HELLO.with_name("hello.c"))
    assert signed.digest is not None
    attached.attach_bundle(client, signed, sigstore.sign_dsse(attached.cosign_statement(signed.digest), attached.INTOTO_PAYLOAD_TYPE,
                                                              ME, ISSUER))

    def plan(ref: Reference, name: str, identity: str) -> FetchPlan:
        policy = {"trusted_root": str(root), "identities": [{"identity": identity, "issuer": ISSUER}], "origin": "spec.signatures"}
        return FetchPlan.model_validate({"ca_file": str(reg.ca_file), "artifacts": [{
            "oci": str(ref), "dest": str(tmp_path / name), "kind": "module", "registry_config": str(reg.docker_config),
            "policies": [policy]}]})  # fmt: skip

    assert await fetch_all(plan(signed, "ok.wasm", ME)) == []
    assert (tmp_path / "ok.wasm").read_bytes() == HELLO.read_bytes()
    errors = await fetch_all(plan(signed, "stranger.wasm", "mallory@example.com"))
    assert len(errors) == 1 and "spec.signatures:" in errors[0] and "does not verify" in errors[0], errors
    errors = await fetch_all(plan(unsigned, "unsigned.wasm", ME))
    assert len(errors) == 1 and "unsigned: no signature is attached" in errors[0], errors
    assert not (tmp_path / "stranger.wasm").exists() and not (tmp_path / "unsigned.wasm").exists()


def _tags(client: OciClient, ref: Reference) -> list[str]:
    response = client._request(ref, "GET", "tags/list")
    with response:
        return list(response.json().get("tags") or [])



def test_the_operator_reports_a_keyless_artifact_verified_and_a_stranger_refused(sigstore: LocalSigstore, root: Path,
                                                                                 reg: RegistryFiles, client: OciClient) -> None:
    from wasminfer_operator import api
    from wasminfer_operator.artifacts import _resolve_and_verify
    from wasminfer_operator.trust import SPEC_POLICY, TrustPolicy

    pinned = push(client, reg, "operator")
    assert pinned.digest is not None
    attached.attach_bundle(client, pinned, sigstore.sign_dsse(attached.cosign_statement(pinned.digest), attached.INTOTO_PAYLOAD_TYPE,
                                                              ME, ISSUER))
    source = api.OciSource(reference=f"{reg.address}/bundles/operator:v1")

    def check(identity: str) -> tuple[bool, str, str]:
        policy = TrustPolicy(SPEC_POLICY, True, trusted_root=("roots", "trusted_root.json"), identities=((identity, ISSUER),))
        found = _resolve_and_verify(source, reg.docker_config, reg.ca_file, [policy], [([], root)])
        assert found.pinned == str(pinned)
        assert found.verified is not None
        return found.ok, found.reason, found.verified[2]

    ok, reason, message = check(ME)
    assert ok and reason == "SourceResolved" and f"signed by {ME} ({ISSUER}) (spec.signatures)" in message
    ok, reason, message = check("mallory@example.com")
    assert not ok and reason == "SignatureInvalid" and "does not verify" in message, message
