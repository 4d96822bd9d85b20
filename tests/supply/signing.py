"""The signing parties of the supply-chain tests: our PEM key pairs and the reference cosign CLI."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

COSIGN_PASSWORD = "wasminfer-test"


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path


def pem_pair(directory: Path, name: str) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = directory / f"{name}.key", directory / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return KeyPair(private, public)


@dataclass(frozen=True)
class Cosign:
    binary: Path
    ca_file: Path
    docker_config_dir: Path
    key: Path  # cosign.key (encrypted with COSIGN_PASSWORD)
    public: Path

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "COSIGN_PASSWORD": COSIGN_PASSWORD, "SSL_CERT_FILE": str(self.ca_file),
               "DOCKER_CONFIG": str(self.docker_config_dir), "COSIGN_EXPERIMENTAL": "0"}
        done = subprocess.run([str(self.binary), *args], capture_output=True, text=True, env=env, timeout=120)
        if check and done.returncode != 0:
            pytest.fail(f"cosign {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done
