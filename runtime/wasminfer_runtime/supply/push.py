"""`wasminfer push PATH REFERENCE`: publish a module (a .wasm file, in the wkg layout) or a model
folder (one layer per file, as `oras push` stores them) to an OCI registry, optionally signed the
way `cosign sign` signs. Prints the pinned reference (with its digest) on stdout."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from wasminfer_runtime.supply.oci import OciClient, OciError, RegistryAccess
from wasminfer_runtime.supply.reference import BadReference, Reference
from wasminfer_runtime.supply.attached import attach_signature
from wasminfer_runtime.supply.signatures import SignatureError, load_private_key

log = logging.getLogger("wasminfer.push")


def add_registry_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry-config", type=Path,
                        help="a Docker config.json with the registry login (default: ~/.docker/config.json)")
    parser.add_argument("--ca-file", type=Path, help="extra CA bundle for the registry")


def registry_access(args: argparse.Namespace) -> RegistryAccess:
    return RegistryAccess(ca_file=args.ca_file, auth_file=args.registry_config)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("path", type=Path, help="a .wasm module, or a model folder")
    parser.add_argument("reference", help="registry[:port]/repository:tag")
    parser.add_argument("--sign-key", type=Path, help="a PEM private key: attach a cosign signature of the pushed digest")
    parser.add_argument("--key-password-env", metavar="VAR", help="environment variable holding the key's password")
    add_registry_arguments(parser)


def main(args: argparse.Namespace) -> int:
    try:
        ref = Reference.parse(args.reference)
        if ref.tag is None:
            raise BadReference(f"{args.reference}: push needs a tag")
        key = None
        if args.sign_key is not None:
            password = os.environ.get(args.key_password_env, "").encode() if args.key_password_env else None
            key = load_private_key(args.sign_key, password)
        client = OciClient(registry_access(args))
        if args.path.is_dir():
            pinned = client.push_folder(args.path, ref)
        elif args.path.is_file():
            pinned = client.push_module(args.path, ref)
        else:
            raise BadReference(f"{args.path}: no such file or folder")
        if key is not None:
            attach_signature(client, pinned, key)
            log.info("%s: signed with %s", pinned, args.sign_key.name)
    except (BadReference, SignatureError) as err:  # OciError is a BadReference
        log.error("%s", err)
        return 1 if isinstance(err, OciError) else 2
    print(pinned)
    return 0
