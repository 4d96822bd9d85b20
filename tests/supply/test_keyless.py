"""Keyless (Sigstore) signatures verified offline against a configured trusted root, with identity and
issuer constraints: bundles from a Sigstore of the test's own (local_sigstore.py) verify here and with
the reference cosign CLI; a changed byte, another identity or issuer, a CA the root does not trust and
a log time outside the certificate's life are refused with the reason; and `wasminfer serve` loads only
the module signed by an allowed identity."""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from local_sigstore import LocalSigstore
from signing import Cosign

from wasminfer_runtime import cli
from wasminfer_runtime.supply.keyless import Identity, SigstoreTrust, verify_bundle
from wasminfer_runtime.supply.signatures import SignatureError, Trust, verify_file

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "examples" / "hello.wasm"
ME, ISSUER = "release@example.com", "https://accounts.example.com"
CI_IDENTITY = "https://github.com/example/workers/.github/workflows/release.yml@refs/tags/v1"


def trust(root: Path, *identities: tuple[str, str]) -> SigstoreTrust:
    return SigstoreTrust(root, tuple(Identity(i, o) for i, o in identities))


def test_a_bundle_by_an_allowed_identity_verifies(sigstore: LocalSigstore, root: Path) -> None:
    data = HELLO.read_bytes()
    assert verify_bundle(data, sigstore.sign(data, ME, ISSUER), trust(root, (ME, ISSUER)), "hello.wasm") == f"{ME} ({ISSUER})"
    ci = sigstore.sign(data, CI_IDENTITY, "https://token.actions.githubusercontent.com")
    allowed = trust(root, (ME, ISSUER), (CI_IDENTITY, "https://token.actions.githubusercontent.com"))
    assert verify_bundle(data, ci, allowed, "hello.wasm").startswith(CI_IDENTITY), "a URI identity, as CI workflows sign"


def test_the_reference_cosign_cli_verifies_the_same_bundles(sigstore: LocalSigstore, root: Path, cosign: Cosign, tmp_path: Path) -> None:
    module = Path(shutil.copy(HELLO, tmp_path / "hello.wasm"))
    bundle = tmp_path / "hello.wasm.sigstore.json"
    bundle.write_bytes(sigstore.sign(module.read_bytes(), ME, ISSUER))
    ok = cosign.run("verify-blob", "--bundle", str(bundle), "--certificate-identity", ME, "--certificate-oidc-issuer", ISSUER,
                    "--trusted-root", str(root), str(module))
    assert "Verified OK" in ok.stderr
    refused = cosign.run("verify-blob", "--bundle", str(bundle), "--certificate-identity", "mallory@example.com",
                         "--certificate-oidc-issuer", ISSUER, "--trusted-root", str(root), str(module), check=False)
    assert refused.returncode != 0, "cosign refuses another identity, as this host does"


def test_refusals_say_why(sigstore: LocalSigstore, root: Path) -> None:
    data = HELLO.read_bytes()
    bundle = sigstore.sign(data, ME, ISSUER)
    cases = [
        (data + b"\x00", bundle, trust(root, (ME, ISSUER)), "digest mismatch"),
        (data, bundle, trust(root, ("mallory@example.com", ISSUER)), "SANs do not match"),
        (data, bundle, trust(root, (ME, "https://other-issuer.example.com")), "issuer"),
        (data, LocalSigstore("elsewhere").sign(data, ME, ISSUER), trust(root, (ME, ISSUER)), "certificate chain"),
        (data, sigstore.sign(data, ME, ISSUER, logged_at=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)),
         trust(root, (ME, ISSUER)), "certificate chain"),  # logged when the certificate had expired
        (data, b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "verificationMaterial": {"certificate": {}}}',
         trust(root, (ME, ISSUER)), "not a Sigstore bundle"),
    ]  # fmt: skip
    for signed, text, allowed, reason in cases:
        with pytest.raises(SignatureError) as err:
            verify_bundle(signed, text, allowed, "hello.wasm")
        assert reason in str(err.value), (reason, str(err.value))


def test_a_policy_of_keys_only_refuses_a_keyless_bundle_and_the_other_way_round(sigstore: LocalSigstore, root: Path,
                                                                              tmp_path: Path) -> None:
    module = Path(shutil.copy(HELLO, tmp_path / "hello.wasm"))
    bundle = tmp_path / "hello.wasm.sigstore.json"
    bundle.write_bytes(sigstore.sign(module.read_bytes(), ME, ISSUER))
    with pytest.raises(SignatureError, match="a keyless Sigstore bundle, but the policy trusts keys only"):
        verify_file(module, bundle, Trust(()))
    assert verify_file(module, bundle, Trust((), trust(root, (ME, ISSUER)))) == f"{ME} ({ISSUER})"
    assert cli.main(["sign", str(module), "--verify", "--signature", str(bundle), "--trusted-root", str(root),
                     "--identity", ME, "--issuer", ISSUER]) == 0
    assert cli.main(["sign", str(module), "--verify", "--signature", str(bundle), "--trusted-root", str(root),
                     "--identity", "mallory@example.com", "--issuer", ISSUER]) == 1


def test_serve_loads_only_what_an_allowed_identity_signed(sigstore: LocalSigstore, root: Path, tmp_path: Path) -> None:
    for name, identity in (("mine", ME), ("theirs", "mallory@example.com")):
        module = Path(shutil.copy(HELLO, tmp_path / f"{name}.wasm"))
        (tmp_path / f"{name}.wasm.sigstore.json").write_bytes(sigstore.sign(module.read_bytes(), identity, ISSUER))
    shutil.copy(HELLO, tmp_path / "unsigned.wasm")
    (tmp_path / "runtime.yaml").write_text(f"""
server:
  signatures: {{sigstore: {{trusted_root: {root}, identities: [{{identity: {ME}, issuer: "{ISSUER}"}}]}}}}
workers:
  - {{name: mine, route: /mine, module: mine.wasm}}
  - {{name: theirs, route: /theirs, module: theirs.wasm}}
  - {{name: unsigned, route: /unsigned, module: unsigned.wasm}}
""")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "wasminfer"), "serve", "--config", str(tmp_path / "runtime.yaml"),
                             "--port", "0", "--processes", "1"], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        url = ""
        for line in proc.stderr:
            if "serving" in line and "http://" in line:
                url = line.split("http://", 1)[1].split()[0]
                break
        assert url, "the server did not start"
        deadline = time.monotonic() + 60
        state: dict[str, object] = {"pending": [1]}
        while state.get("pending") and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://{url}/readyz", timeout=5) as r:
                    state = json.loads(r.read())
            except urllib.error.HTTPError as err:
                state = json.loads(err.read())
            time.sleep(0.1)
        failed = state.get("failed")
        assert isinstance(failed, dict) and set(failed) == {"worker theirs", "worker unsigned"}, state
        assert "SANs do not match" in failed["worker theirs"] and "unsigned" in failed["worker unsigned"]
        with urllib.request.urlopen(f"http://{url}/mine", timeout=10) as r:
            assert r.status == 200 and json.loads(r.read())["message"] == "Hello"
    finally:
        proc.terminate()
        proc.communicate(timeout=60)


async def test_the_fetch_step_checks_a_keyless_bundle_before_the_file_is_in_place(sigstore: LocalSigstore, root: Path,
                                                                                  tmp_path: Path) -> None:
    import base64

    from wasminfer_runtime.fetch import FetchPlan, fetch_all

    bundle = base64.b64encode(sigstore.sign(HELLO.read_bytes(), ME, ISSUER)).decode()

    def plan(name: str, identity: str) -> FetchPlan:
        policy = {"trusted_root": str(root), "identities": [{"identity": identity, "issuer": ISSUER}], "origin": "spec.signatures"}
        return FetchPlan.model_validate({"files": [{"path": str(HELLO), "dest": str(tmp_path / name), "signature": bundle,
                                                     "policies": [policy]}]})

    assert await fetch_all(plan("ok.wasm", ME)) == [] and (tmp_path / "ok.wasm").is_file()
    errors = await fetch_all(plan("refused.wasm", "mallory@example.com"))
    assert len(errors) == 1 and "spec.signatures: refused.wasm: the Sigstore bundle does not verify" in errors[0], errors
    assert not (tmp_path / "refused.wasm").exists()
