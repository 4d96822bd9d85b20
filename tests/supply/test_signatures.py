"""cosign key-pair signatures, cross-checked with the reference cosign CLI in both directions: on files
(sign-blob: its three output formats) and attached to artifacts in the registry (sign / verify).
Signed by another key, unsigned, one byte changed after signing, and a signature replayed onto
another artifact are all refused with the reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cluster.registry import RegistryFiles
from signing import Cosign, KeyPair

from wasminfer_runtime import cli
from wasminfer_runtime.supply import signatures
from wasminfer_runtime.supply.oci import OciClient
from wasminfer_runtime.supply.reference import Reference
from wasminfer_runtime.supply.attached import attach_signature, signature_tag, verify_attached
from wasminfer_runtime.supply.signatures import SignatureError, Trust, load_public_keys, verify_file

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "examples" / "hello.wasm"


@pytest.fixture
def module(tmp_path: Path) -> Path:
    return Path(shutil.copy(HELLO, tmp_path / "hello.wasm"))


@pytest.mark.parametrize("form", ["--output-signature", "--bundle", "--new-bundle-format"])
def test_a_cosign_sign_blob_signature_verifies_here(cosign: Cosign, module: Path, form: str) -> None:
    out = module.with_name(module.name + ".sig")
    args = ["--bundle", str(out), "--new-bundle-format"] if form == "--new-bundle-format" else [form, str(out)]
    cosign.run("sign-blob", "--key", str(cosign.key), "--tlog-upload=false", "--yes", *args, str(module))
    assert verify_file(module, out, load_public_keys([cosign.public])) == "cosign.pub"


def test_our_signature_verifies_with_cosign(cosign: Cosign, keys: KeyPair, module: Path) -> None:
    assert cli.main(["sign", str(module), "--key", str(keys.private)]) == 0
    sig = module.with_name("hello.wasm.sig")
    done = cosign.run("verify-blob", "--key", str(keys.public), "--signature", str(sig), "--insecure-ignore-tlog=true",
                      str(module))
    assert "Verified OK" in done.stderr
    assert cli.main(["sign", str(module), "--key", str(keys.public), "--verify"]) == 0


def test_refusals_say_why(keys: KeyPair, other_keys: KeyPair, module: Path) -> None:
    trusted = load_public_keys([keys.public])
    sig = module.with_name("hello.wasm.sig")
    with pytest.raises(SignatureError, match="unsigned: no signature at"):
        verify_file(module, sig, trusted)
    assert cli.main(["sign", str(module), "--key", str(other_keys.private)]) == 0
    with pytest.raises(SignatureError, match=r"does not verify with the trusted key\(s\) release.pub"):
        verify_file(module, sig, trusted)
    assert cli.main(["sign", str(module), "--key", str(keys.private)]) == 0
    assert verify_file(module, sig, trusted) == "release.pub"
    data = bytearray(module.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one byte, after signing
    module.write_bytes(bytes(data))
    with pytest.raises(SignatureError, match="does not verify"):
        verify_file(module, sig, trusted)
    sig.write_text("this is not base64!")
    with pytest.raises(SignatureError, match="not a base64 signature"):
        verify_file(module, sig, trusted)
    assert cli.main(["sign", str(module), "--key", str(keys.public), "--verify"]) == 1


def test_cosign_signs_an_artifact_and_we_verify_it(cosign: Cosign, reg: RegistryFiles, client: OciClient) -> None:
    pinned = client.push_module(HELLO, Reference.parse(f"{reg.address}/signed/by-cosign:v1"))
    trusted = Trust(tuple(load_public_keys([cosign.public])))
    with pytest.raises(SignatureError, match="unsigned: no signature is attached"):
        verify_attached(client, pinned, trusted)
    cosign.run("sign", "--key", str(cosign.key), "--tlog-upload=false", "--yes", str(pinned))
    assert verify_attached(client, pinned, trusted) == "cosign.pub"


def test_we_sign_an_artifact_and_cosign_verifies_it(cosign: Cosign, keys: KeyPair, reg: RegistryFiles, tmp_path: Path) -> None:
    done = cli.main(["push", str(HELLO), f"{reg.address}/signed/by-us:v1", "--sign-key", str(keys.private),
                     "--registry-config", str(reg.docker_config), "--ca-file", str(reg.ca_file)])
    assert done == 0
    result = cosign.run("verify", "--key", str(keys.public), "--insecure-ignore-tlog=true",
                        f"{reg.address}/signed/by-us:v1")
    assert "signatures were verified against the specified public key" in result.stderr


def test_attached_signatures_by_strangers_and_replays_are_refused(keys: KeyPair, other_keys: KeyPair, reg: RegistryFiles,
                                                                client: OciClient) -> None:
    trusted = Trust(tuple(load_public_keys([keys.public])))
    a = client.push_module(HELLO, Reference.parse(f"{reg.address}/signed/replay:a"))
    b = client.push_module(HELLO.with_name("hello.c"), Reference.parse(f"{reg.address}/signed/replay:b"))
    attach_signature(client, a, signatures.load_private_key(other_keys.private))
    with pytest.raises(SignatureError, match="a signature by none of the trusted keys"):
        verify_attached(client, a, trusted)
    attach_signature(client, a, signatures.load_private_key(keys.private))
    assert verify_attached(client, a, trusted) == "release.pub"
    # a's valid signature copied under b's signature tag: it names a's digest, so b stays unverified
    sig_of_a = client.resolve(a.with_tag(signature_tag(a.digest or "")))
    client.push_manifest(b.with_tag(signature_tag(b.digest or "")), sig_of_a.content)
    with pytest.raises(SignatureError, match=f"a valid signature, but for {a.digest}, not this artifact"):
        verify_attached(client, b, trusted)


async def test_the_fetch_step_checks_each_files_signature_before_it_is_in_place(keys: KeyPair, other_keys: KeyPair,
                                                                                module: Path, tmp_path: Path) -> None:
    from wasminfer_runtime.fetch import FetchPlan, fetch_all

    good = signatures.sign_blob(signatures.load_private_key(keys.private), module.read_bytes())
    stranger = signatures.sign_blob(signatures.load_private_key(other_keys.private), module.read_bytes())
    policy = {"keys": [str(keys.public)], "origin": "spec.signatures"}

    def plan(name: str, signature: str | None, required: bool = True) -> FetchPlan:
        entry = {"path": str(module), "dest": str(tmp_path / name), "signature": signature, "policies": [{**policy, "required": required}]}
        return FetchPlan.model_validate({"files": [entry]})

    assert await fetch_all(plan("signed.wasm", good)) == [] and (tmp_path / "signed.wasm").is_file()
    assert await fetch_all(plan("optional.wasm", None, required=False)) == [] and (tmp_path / "optional.wasm").is_file()
    errors = await fetch_all(plan("unsigned.wasm", None))
    assert errors == ["unsigned.wasm: spec.signatures: unsigned: the file has no signature"]
    errors = await fetch_all(plan("stranger.wasm", stranger))
    assert len(errors) == 1 and "spec.signatures: stranger.wasm: the signature does not verify with the trusted key(s) release.pub" in errors[0]
    assert not (tmp_path / "unsigned.wasm").exists() and not (tmp_path / "stranger.wasm").exists(), "nothing refused is in place"
