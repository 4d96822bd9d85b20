"""Self-contained kubeconfig files (certificates embedded), so any client can use one alone."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from .pki import CertKey

CONTEXT = "wasminfer-test"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def render(server: str, ca_pem: bytes, user: str, client: CertKey) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CONTEXT,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(client.cert_pem),
                    "client-key-data": _b64(client.key_pem),
                },
            }
        ],
        "contexts": [
            {"name": CONTEXT, "context": {"cluster": CONTEXT, "user": user, "namespace": "default"}}
        ],
        "current-context": CONTEXT,
    }


def write(path: Path, server: str, ca_pem: bytes, user: str, client: CertKey) -> Path:
    path.write_text(yaml.safe_dump(render(server, ca_pem, user, client), sort_keys=False))
    path.chmod(0o600)
    return path
