"""OCI sources and signatures through the operator, against the real control plane and the cluster's
real registry (TLS from its own CA, basic auth): a tag is resolved once and shown in status, pods get
that digest and keep it while the tag moves until the next check; what is unsigned, signed by a
stranger, or pulled with a wrong login is refused with the reason, and nothing is rolled out for it;
the other workers are untouched. Keyless signatures attached as Sigstore bundles verify for the
identities allowed only. The operator runs with the chart's RBAC (Secrets read included)."""

from __future__ import annotations

import base64
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart import condition
from cluster.registry import RegistryFiles, files_in
from operator_objects import chart_operator
from operator_process import REPO, OperatorProcess

from kube import Cluster

sys.path.insert(0, str(REPO / "tests" / "supply"))
from local_sigstore import LocalSigstore  # noqa: E402
from wasminfer_runtime.supply import attached
from wasminfer_runtime.supply.oci import OciClient, RegistryAccess
from wasminfer_runtime.supply.reference import Reference

pytestmark = pytest.mark.cluster

PREFIX = "sup-"
HELLO = REPO / "examples" / "hello.wasm"
RECHECK_SECONDS = 5


@pytest.fixture(scope="module")
def registry(cluster: Cluster) -> RegistryFiles:
    assert cluster.state.registry_dir, "the cluster was brought up without its registry (e2e/cluster/up starts one)"
    return files_in(Path(cluster.state.registry_dir))


@pytest.fixture(scope="module")
def client(registry: RegistryFiles) -> OciClient:
    return OciClient(RegistryAccess(ca_file=registry.ca_file, auth_file=registry.docker_config))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return key, pem


@pytest.fixture(scope="module")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    config = f"sourceRecheckSeconds: {RECHECK_SECONDS}\n"
    with chart_operator(cluster, tmp_path_factory.mktemp("supply-operator"), PREFIX, config, release_prefix="sup") as op:
        yield op


@pytest.fixture
def ns(cluster: Cluster, operator: OperatorProcess, registry: RegistryFiles, keys: tuple[Any, str],
       request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace with the registry's login (a docker-registry Secret), its CA and the trusted key."""
    name = cluster.new_namespace(PREFIX + request.node.name[5:30])
    login = base64.b64encode(registry.docker_config.read_bytes()).decode()
    cluster.apply(yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "regcred"}, "type": "kubernetes.io/dockerconfigjson",
         "data": {".dockerconfigjson": login}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "registry-ca"}, "data": {"ca.crt": registry.ca_file.read_text()}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "release-keys"}, "data": {"cosign.pub": keys[1]}},
    ]), namespace=name)  # fmt: skip
    yield name
    cluster.delete_namespace(name)


KEY_POLICY = {"keys": [{"name": "release-keys", "key": "cosign.pub"}]}


def oci_worker(name: str, reference: str, pull_secret: str = "regcred", signatures: dict[str, Any] | None = KEY_POLICY) -> str:
    spec: dict[str, Any] = {
        "module": {"oci": {"reference": reference, "pullSecret": pull_secret, "ca": {"name": "registry-ca", "key": "ca.crt"}}},
        "route": f"/{name}",
    }
    if signatures is not None:
        spec["signatures"] = signatures
    return yaml.safe_dump({"apiVersion": "wasminfer.dev/v1alpha1", "kind": "WasmWorker", "metadata": {"name": name}, "spec": spec})


def worker(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    return cluster.get_json(f"wasmworker/{name}", namespace=ns)


def wait_reason(cluster: Cluster, ns: str, name: str, kind: str, status: str, reason: str, timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = worker(cluster, ns, name)
        c = condition(obj, kind)
        return obj if c is not None and (c["status"], c["reason"]) == (status, reason) else None

    try:
        return cluster.wait_until(check, timeout, f"WasmWorker {name}: {kind}={status} {reason}")
    except AssertionError as err:
        raise AssertionError(f"{err}\nstatus: {json.dumps(worker(cluster, ns, name).get('status'), indent=1)}") from None


def fetch_plan(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    cm = cluster.get_json(f"configmap/{name}-runtime", namespace=ns)
    plan: dict[str, Any] = yaml.safe_load(cm["data"]["fetch.yaml"])
    return plan


def test_a_signed_module_is_pinned_to_its_digest_and_a_moved_tag_rolls_out_only_after_the_next_check(
    cluster: Cluster, ns: str, registry: RegistryFiles, client: OciClient, keys: tuple[Any, str], tmp_path: Path,
) -> None:
    tag = Reference.parse(f"{registry.address}/e2e/{ns}/hello:v1")
    first = client.push_module(HELLO, tag)
    attached.attach_signature(client, first, keys[0])
    cluster.apply(oci_worker("hello", str(tag)), namespace=ns)
    obj = wait_reason(cluster, ns, "hello", "Verified", "True", "SignatureVerified")
    assert obj["status"]["artifact"] == str(first)
    assert "signed by key-0.pub (spec.signatures)" in condition(obj, "Verified")["message"]  # type: ignore[index]
    (artifact,) = fetch_plan(cluster, ns, "hello")["artifacts"]
    assert artifact["oci"] == str(first) and artifact["policies"][0]["origin"] == "spec.signatures"
    rolled = cluster.get_json("deployment/hello", namespace=ns)["spec"]["template"]["metadata"]["annotations"]

    # The tag moves to other (signed) bytes: nothing changes until the operator's next check.
    other = tmp_path / "hello.wasm"
    shutil.copy(HELLO, other)
    other.write_bytes(other.read_bytes() + b"\x00\x06\x05x-e2e")  # an empty custom section: another module
    second = client.push_module(other, tag)
    attached.attach_signature(client, second, keys[0])
    assert fetch_plan(cluster, ns, "hello")["artifacts"][0]["oci"] == str(first), "pods keep the digest in status"
    cluster.wait_until(lambda: worker(cluster, ns, "hello")["status"].get("artifact") == str(second),
                       RECHECK_SECONDS * 6, "the new digest in status")
    cluster.wait_until(lambda: fetch_plan(cluster, ns, "hello")["artifacts"][0]["oci"] == str(second),
                       30, "the fetch plan naming the new digest")
    annotations = cluster.get_json("deployment/hello", namespace=ns)["spec"]["template"]["metadata"]["annotations"]
    assert annotations != rolled, "a new digest rolls the pods out"


def test_unsigned_strangers_and_wrong_logins_are_refused_with_the_reason_and_roll_out_nothing(
    cluster: Cluster, ns: str, registry: RegistryFiles, client: OciClient, keys: tuple[Any, str],
) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    unsigned = client.push_module(HELLO, Reference.parse(f"{registry.address}/e2e/{ns}/unsigned:v1"))
    stranger = client.push_module(HELLO, Reference.parse(f"{registry.address}/e2e/{ns}/stranger:v1"))
    attached.attach_signature(client, stranger, ec.generate_private_key(ec.SECP256R1()))
    good = client.push_module(HELLO, Reference.parse(f"{registry.address}/e2e/{ns}/good:v1"))
    attached.attach_signature(client, good, keys[0])
    wrong = json.dumps({"auths": {registry.address: {"auth": base64.b64encode(b"wasminfer:wrong").decode()}}})
    cluster.apply(yaml.safe_dump({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wrong"},
                                  "type": "kubernetes.io/dockerconfigjson",
                                  "data": {".dockerconfigjson": base64.b64encode(wrong.encode()).decode()}}), namespace=ns)
    absent = f"{registry.address}/e2e/{ns}/good@sha256:" + "0" * 64
    for doc in (oci_worker("unsigned", str(unsigned.with_tag("v1"))), oci_worker("stranger", f"{registry.address}/e2e/{ns}/stranger:v1"),
                oci_worker("wronglogin", f"{registry.address}/e2e/{ns}/good:v1", pull_secret="wrong"),
                oci_worker("wrongdigest", absent), oci_worker("good", f"{registry.address}/e2e/{ns}/good:v1")):
        cluster.apply(doc, namespace=ns)
    obj = wait_reason(cluster, ns, "unsigned", "Ready", "False", "SignatureMissing")
    assert condition(obj, "Verified")["status"] == "False"  # type: ignore[index]
    assert "unsigned: no signature is attached" in condition(obj, "Ready")["message"]  # type: ignore[index]
    obj = wait_reason(cluster, ns, "stranger", "Ready", "False", "SignatureInvalid")
    assert "a signature by none of the trusted keys" in condition(obj, "Verified")["message"]  # type: ignore[index]
    obj = wait_reason(cluster, ns, "wronglogin", "Ready", "False", "CredentialsRefused")
    assert condition(obj, "Verified")["reason"] == "NotChecked"  # type: ignore[index]
    obj = wait_reason(cluster, ns, "wrongdigest", "Ready", "False", "SourceNotFound")
    assert "not found in the registry" in condition(obj, "Ready")["message"]  # type: ignore[index]
    wait_reason(cluster, ns, "good", "Verified", "True", "SignatureVerified")
    deployments = {d["metadata"]["name"] for d in cluster.get_json("deployments", namespace=ns)["items"]}
    assert deployments == {"good"}, "nothing is rolled out for a refused module; the good worker is untouched"
    events = cluster.get_json("events", namespace=ns)["items"]
    assert any(e["involvedObject"]["name"] == "unsigned" and "SignatureMissing" in e.get("message", "") + e.get("reason", "")
               for e in events), [(e["involvedObject"]["name"], e.get("reason"), e.get("message")) for e in events]


def test_a_keyless_signature_attached_to_the_module_verifies_for_an_allowed_identity_only(
    cluster: Cluster, ns: str, registry: RegistryFiles, client: OciClient, tmp_path: Path,
) -> None:
    me, issuer = "release@example.com", "https://accounts.example.com"
    sigstore = LocalSigstore()
    root = sigstore.trusted_root(tmp_path / "trusted_root.json").read_text()
    cluster.apply(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "sigstore"},
                                  "data": {"trusted_root.json": root}}), namespace=ns)
    policy = {"sigstore": {"trustedRoot": {"name": "sigstore", "key": "trusted_root.json"},
                           "identities": [{"identity": me, "issuer": issuer}]}}
    for name, identity in (("mine", me), ("theirs", "mallory@example.com")):
        pinned = client.push_module(HELLO, Reference.parse(f"{registry.address}/e2e/{ns}/{name}:v1"))
        assert pinned.digest is not None
        statement = attached.cosign_statement(pinned.digest)
        attached.attach_bundle(client, pinned, sigstore.sign_dsse(statement, attached.INTOTO_PAYLOAD_TYPE, identity, issuer))
        cluster.apply(oci_worker(name, str(pinned.with_tag("v1")), signatures=policy), namespace=ns)
    obj = wait_reason(cluster, ns, "mine", "Verified", "True", "SignatureVerified")
    assert f"signed by {me} ({issuer}) (spec.signatures)" in condition(obj, "Verified")["message"]  # type: ignore[index]
    (artifact,) = fetch_plan(cluster, ns, "mine")["artifacts"]
    (fetch_policy,) = artifact["policies"]
    assert fetch_policy["identities"] == [{"identity": me, "issuer": issuer}] and fetch_policy["trusted_root"], fetch_policy
    obj = wait_reason(cluster, ns, "theirs", "Ready", "False", "SignatureInvalid")
    assert "does not verify" in condition(obj, "Verified")["message"]  # type: ignore[index]
