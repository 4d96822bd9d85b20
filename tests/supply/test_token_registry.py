"""A registry that logs clients in the way public registries do (Docker Hub, GHCR, Harbor): it answers with
a Bearer challenge, the client trades its login at the token service for a short-lived signed token, and
presents that. Push, pull and attached signatures work through it; a wrong login and no login are
refused with the reason."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster.registry import RegistryFiles, TokenService, start_registry
from signing import KeyPair

from wasminfer_runtime.supply import attached
from wasminfer_runtime.supply.oci import OciClient, OciError, RegistryAccess
from wasminfer_runtime.supply.reference import Reference
from wasminfer_runtime.supply.signatures import Trust, load_private_key, load_public_keys

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello.wasm"


@pytest.fixture(scope="module")
def token_registry(bin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RegistryFiles, TokenService]]:
    tokens = TokenService()
    running = start_registry(tmp_path_factory.mktemp("token-registry"), bin_dir, tokens)
    yield running.files, tokens
    running.stop()
    tokens.stop()


def test_push_pull_and_signatures_through_a_token_login(token_registry: tuple[RegistryFiles, TokenService], keys: KeyPair,
                                                        tmp_path: Path) -> None:
    reg, tokens = token_registry
    access = RegistryAccess(ca_file=reg.ca_file, auth_file=reg.docker_config, backoff_seconds=0.05)
    pusher = OciClient(access)
    pinned = pusher.push_module(HELLO, Reference.parse(f"{reg.address}/tokens/hello:v1"))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"\x08\x07" * 512)
    model = pusher.push_folder(folder, Reference.parse(f"{reg.address}/tokens/model:v1"))
    assert pinned.digest is not None
    attached.attach_bundle(pusher, pinned, attached.key_signed_bundle(load_private_key(keys.private), pinned.digest))
    assert tokens.issued > 0, "the registry asked for tokens"

    puller = OciClient(access)
    assert puller.resolve(Reference.parse(f"{reg.address}/tokens/hello:v1")).digest == pinned.digest
    puller.pull_module(pinned, tmp_path / "hello.wasm")
    assert (tmp_path / "hello.wasm").read_bytes() == HELLO.read_bytes()
    puller.pull_folder(model, tmp_path / "pulled")
    assert (tmp_path / "pulled" / "model.onnx").read_bytes() == (folder / "model.onnx").read_bytes()
    assert attached.verify_attached(puller, pinned, Trust(tuple(load_public_keys([keys.public])))) == "release.pub"


def test_a_wrong_login_and_no_login_are_refused_with_the_reason(token_registry: tuple[RegistryFiles, TokenService],
                                                                tmp_path: Path) -> None:
    reg, _ = token_registry
    OciClient(RegistryAccess(ca_file=reg.ca_file, auth_file=reg.docker_config)).push_module(
        HELLO, Reference.parse(f"{reg.address}/tokens/private:v1"))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"auths": {reg.address: {"auth": "d2FzbWluZmVyOm5vcGU="}}}))  # wasminfer:nope
    with pytest.raises(OciError, match="credentials") as refused:
        OciClient(RegistryAccess(ca_file=reg.ca_file, auth_file=wrong, backoff_seconds=0.05)).resolve(
            Reference.parse(f"{reg.address}/tokens/private:v1"))
    assert refused.value.kind == "credentials"
    with pytest.raises(OciError, match="credentials") as anonymous:
        OciClient(RegistryAccess(ca_file=reg.ca_file, backoff_seconds=0.05)).pull_module(
            Reference.parse(f"{reg.address}/tokens/private:v1"), tmp_path / "x.wasm")
    assert anonymous.value.kind == "credentials" and not (tmp_path / "x.wasm").exists()
