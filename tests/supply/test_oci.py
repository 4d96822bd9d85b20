"""Modules and models through a real OCI registry (TLS, basic auth): round trips with `wasminfer push`
and the reference oras CLI, tags that move, wrong credentials, and a registry that serves other bytes."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from cluster.registry import RegistryFiles

from wasminfer_runtime import cli
from wasminfer_runtime.supply.oci import (
    TITLE,
    WASM_CONFIG_TYPE,
    OciClient,
    OciError,
    RegistryAccess,
    sha256_digest,
)
from wasminfer_runtime.supply.reference import Reference

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "examples" / "hello.wasm"
SPIN_CONFIG_TYPE = "application/vnd.fermyon.spin.application.v1+config"
SPIN_WASM_TYPE = "application/vnd.wasm.content.layer.v1+wasm"


def ref(reg: RegistryFiles, name: str) -> Reference:
    return Reference.parse(f"{reg.address}/{name}")


def model_folder(path: Path, seed: bytes = b"w") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.xml").write_text("<net name='m'/>")
    (path / "model.bin").write_bytes(seed * 4096)
    return path


def push_cli(reg: RegistryFiles, *args: str) -> tuple[int, str]:
    """`wasminfer push` as a user runs it; returns its exit code and what it printed."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "wasminfer"), "push", *args, "--registry-config", str(reg.docker_config), "--ca-file", str(reg.ca_file)],
        capture_output=True, text=True, timeout=120,
    )
    return done.returncode, done.stdout.strip() + "\n" + done.stderr


def test_push_then_pull_a_module_and_a_model_folder(reg: RegistryFiles, client: OciClient, tmp_path: Path) -> None:
    code, out = push_cli(reg, str(HELLO), f"{reg.address}/demo/hello:v1")
    assert code == 0, out
    pinned = Reference.parse(out.splitlines()[0])
    assert pinned.tag == "v1" and pinned.digest is not None
    manifest = client.resolve(ref(reg, "demo/hello:v1"))
    assert manifest.digest == pinned.digest and manifest.config["mediaType"] == WASM_CONFIG_TYPE
    assert [layer["mediaType"] for layer in manifest.layers] == ["application/wasm"], "the wkg layout"
    pulled = client.pull_module(ref(reg, "demo/hello:v1"), tmp_path / "out" / "hello.wasm")
    assert pulled.files[0].read_bytes() == HELLO.read_bytes() and pulled.digest == pinned.digest

    folder = model_folder(tmp_path / "model")
    code, out = push_cli(reg, str(folder), f"{reg.address}/models/m:v1")
    assert code == 0, out
    got = client.pull_folder(ref(reg, "models/m:v1"), tmp_path / "pulled")
    assert sorted(f.name for f in got.files) == ["model.bin", "model.xml"]
    assert all((folder / f.name).read_bytes() == f.read_bytes() for f in got.files)


def oras(bin_dir: Path, reg: RegistryFiles, *args: str, cwd: Path) -> str:
    done = subprocess.run([str(bin_dir / "oras"), *args, "--registry-config", str(reg.docker_config), "--ca-file",
                           str(reg.ca_file)], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"oras {' '.join(args)}: {done.stderr}"
    return done.stdout


def test_the_reference_oras_cli_reads_ours_and_we_read_its(reg: RegistryFiles, client: OciClient, bin_dir: Path,
                                                           tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "by-oras", b"o")
    oras(bin_dir, reg, "push", f"{reg.address}/models/from-oras:v1", "model.xml", "model.bin", cwd=folder)
    got = client.pull_folder(ref(reg, "models/from-oras:v1"), tmp_path / "ours")
    assert sorted(f.name for f in got.files) == ["model.bin", "model.xml"]
    assert (tmp_path / "ours" / "model.bin").read_bytes() == (folder / "model.bin").read_bytes()

    ours = model_folder(tmp_path / "by-us", b"u")
    client.push_folder(ours, ref(reg, "models/from-us:v1"))
    (tmp_path / "theirs").mkdir()
    oras(bin_dir, reg, "pull", f"{reg.address}/models/from-us:v1", cwd=tmp_path / "theirs")
    assert (tmp_path / "theirs" / "model.bin").read_bytes() == (ours / "model.bin").read_bytes()
    client.push_module(HELLO, ref(reg, "demo/for-oras:v1"))
    oras(bin_dir, reg, "pull", f"{reg.address}/demo/for-oras:v1", cwd=tmp_path / "theirs")
    assert (tmp_path / "theirs" / "hello.wasm").read_bytes() == HELLO.read_bytes()


def test_a_moved_tag_does_not_change_what_a_digest_names(reg: RegistryFiles, client: OciClient, tmp_path: Path) -> None:
    first = client.push_folder(model_folder(tmp_path / "a", b"1"), ref(reg, "models/moving:stable"))
    second = client.push_folder(model_folder(tmp_path / "b", b"2"), ref(reg, "models/moving:stable"))
    assert first.digest != second.digest
    assert client.resolve(ref(reg, "models/moving:stable")).digest == second.digest, "the tag moved"
    old = client.pull_folder(first, tmp_path / "old")  # pinned: the content it was resolved to
    assert (tmp_path / "old" / "model.bin").read_bytes() == b"1" * 4096 and old.digest == first.digest


def test_wrong_or_missing_credentials_are_refused_with_the_reason(reg: RegistryFiles, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"auths": {reg.address: {"auth": "d2FzbWluZmVyOm5vcGU="}}}))  # wasminfer:nope
    with pytest.raises(OciError, match="refused the credentials"):
        OciClient(RegistryAccess(ca_file=reg.ca_file, auth_file=wrong)).pull_module(
            ref(reg, "demo/hello:v1"), tmp_path / "x.wasm")
    with pytest.raises(OciError, match="needs credentials .* none were given"):
        OciClient(RegistryAccess(ca_file=reg.ca_file)).resolve(ref(reg, "demo/hello:v1"))
    with pytest.raises(OciError, match="TLS verification failed"):
        OciClient(RegistryAccess(auth_file=reg.docker_config)).resolve(ref(reg, "demo/hello:v1"))
    assert not (tmp_path / "x.wasm").exists()


def test_a_digest_that_is_not_there_and_a_blob_changed_on_the_registry(
    reg: RegistryFiles, client: OciClient, registry_storage: Path, tmp_path: Path,
) -> None:
    missing = ref(reg, "demo/hello@sha256:" + "0" * 64)
    with pytest.raises(OciError, match="not found"):
        client.resolve(missing)
    pinned = client.push_folder(model_folder(tmp_path / "m", b"t"), ref(reg, "models/tampered:v1"))
    layer = next(d for d in client.resolve(pinned).layers if d["annotations"][TITLE] == "model.bin")
    data = registry_storage / "blobs" / "sha256" / layer["digest"][7:9] / layer["digest"][7:] / "data"
    data.write_bytes(b"T" + data.read_bytes()[1:])  # one byte changed where the registry keeps it
    with pytest.raises(OciError, match="arrived with other content"):
        client.pull_folder(pinned, tmp_path / "out")
    assert not (tmp_path / "out" / "model.bin").exists() and not list((tmp_path / "out").glob("*.part*"))


def push_manifest(client: OciClient, target: Reference, config_type: str, layers: list[tuple[bytes, str, dict[str, str]]]) -> Reference:
    descriptors = [client.push_blob(target, None, data, media, notes) for data, media, notes in layers]
    config = client.push_blob(target, None, b"{}", config_type)
    return client.push_manifest(target, {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                         "config": config, "layers": descriptors})


def test_a_spin_application_gives_its_wasm_layer(reg: RegistryFiles, client: OciClient, tmp_path: Path) -> None:
    other = HELLO.read_bytes() + b"\x00\x00"  # a custom section's worth of difference: another module
    one = push_manifest(client, ref(reg, "spin/one:v1"), SPIN_CONFIG_TYPE,
                        [(HELLO.read_bytes(), SPIN_WASM_TYPE, {}), (b"static", "application/vnd.wasm.content.layer.v1+data", {})])
    assert client.pull_module(one, tmp_path / "one.wasm").files[0].read_bytes() == HELLO.read_bytes()
    two = push_manifest(client, ref(reg, "spin/two:v1"), SPIN_CONFIG_TYPE,
                        [(HELLO.read_bytes(), SPIN_WASM_TYPE, {}), (other, SPIN_WASM_TYPE, {})])
    with pytest.raises(OciError, match="2 Wasm layers .* choose one"):
        client.pull_module(two, tmp_path / "two.wasm")
    chosen = client.pull_module(two, tmp_path / "two.wasm", layer=sha256_digest(other))
    assert chosen.files[0].read_bytes() == other
    folder = client.push_folder(model_folder(tmp_path / "m"), ref(reg, "models/not-a-module:v1"))
    with pytest.raises(OciError, match="no Wasm layer"):
        client.pull_module(folder, tmp_path / "nope.wasm")


def _tar_gz(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(out.getvalue())


def test_hostile_file_names_in_an_artifact_stay_inside_the_pull(reg: RegistryFiles, client: OciClient, tmp_path: Path) -> None:
    dest = tmp_path / "deep" / "pull"
    for name in ("../escape.bin", "/etc/escape.bin"):
        bad = push_manifest(client, ref(reg, "models/escape:v1"), "application/vnd.oci.empty.v1+json",
                            [(b"x", "application/octet-stream", {TITLE: name})])
        with pytest.raises(OciError, match="not a relative file name"):
            client.pull_folder(bad, dest)
    tar_layer = "application/vnd.oci.image.layer.v1.tar+gzip"
    ok = push_manifest(client, ref(reg, "models/dir:v1"), "application/vnd.oci.empty.v1+json",
                       [(_tar_gz({"m/model.xml": b"<x/>", "m/model.bin": b"b"}), tar_layer, {TITLE: "m"})])
    assert sorted(p.name for p in client.pull_folder(ok, dest).files) == ["model.bin", "model.xml"]
    evil = push_manifest(client, ref(reg, "models/dir:v2"), "application/vnd.oci.empty.v1+json",
                         [(_tar_gz({"m/../../../escape.bin": b"x"}), tar_layer, {TITLE: "m"})])
    with pytest.raises(OciError, match="does not unpack"):
        client.pull_folder(evil, dest)
    assert not list(tmp_path.rglob("escape.bin"))


def test_fetch_pulls_and_verifies_an_artifact(reg: RegistryFiles, client: OciClient, tmp_path: Path) -> None:
    pinned = client.push_module(HELLO, ref(reg, "demo/fetched:v1"))
    dest = tmp_path / "modules" / "hello.wasm"
    argv = ["fetch", f"oci://{pinned}", "-o", str(dest), "--ca-file", str(reg.ca_file),
            "--registry-config", str(reg.docker_config)]
    assert cli.main(argv) == 0 and dest.read_bytes() == HELLO.read_bytes()
    assert cli.main(["fetch", f"oci://{reg.address}/demo/absent:v1", "-o", str(tmp_path / "x.wasm"), "--ca-file",
                     str(reg.ca_file), "--registry-config", str(reg.docker_config)]) == 1
