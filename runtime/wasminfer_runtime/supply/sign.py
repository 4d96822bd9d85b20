"""`wasminfer sign FILE --key KEY`: a cosign sign-blob signature of a file (FILE.sig, base64), which
`cosign verify-blob --key cosign.pub --signature FILE.sig FILE` accepts; `--verify` checks one instead,
a key pair's (`--key cosign.pub`) or a keyless Sigstore bundle (`--trusted-root` with the identities
allowed)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from wasminfer_runtime.supply.keyless import BUNDLE_SUFFIX, SigstoreTrust
from wasminfer_runtime.supply.signatures import SignatureError, load_private_key, load_trust, sign_blob, verify_file

log = logging.getLogger("wasminfer.sign")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("file", type=Path, help="the file to sign (or to verify)")
    parser.add_argument("--key", type=Path, help="PEM private key to sign with; with --verify, the PEM public key (cosign.pub)")
    parser.add_argument("--key-password-env", metavar="VAR", help="environment variable holding the key's password")
    parser.add_argument("--signature", type=Path, help=f"the signature file (default FILE.sig, else FILE{BUNDLE_SUFFIX})")
    parser.add_argument("--verify", action="store_true", help="verify FILE against its signature instead")
    parser.add_argument("--trusted-root", type=Path, help="with --verify: a Sigstore trusted_root.json, for keyless bundles")
    parser.add_argument("--identity", action="append", default=[], help="with --trusted-root: a signer allowed (repeatable)")
    parser.add_argument("--issuer", action="append", default=[], help="the OIDC issuer of each --identity, in order")


def main(args: argparse.Namespace) -> int:
    signature = args.signature or args.file.with_name(args.file.name + ".sig")
    if args.verify and args.signature is None and not signature.exists():
        signature = args.file.with_name(args.file.name + BUNDLE_SUFFIX)
    try:
        if args.verify:
            sigstore = None
            if args.trusted_root is not None:
                if not args.identity or len(args.identity) != len(args.issuer):
                    log.error("--trusted-root needs --identity and --issuer, one issuer for each identity")
                    return 2
                sigstore = SigstoreTrust.of(args.trusted_root, list(zip(args.identity, args.issuer)))
            signer = verify_file(args.file, signature, load_trust([args.key] if args.key else [], sigstore))
            log.info("%s: signature verified: signed by %s", args.file, signer)
            return 0
        if args.key is None:
            log.error("--key: the PEM private key to sign with")
            return 2
        password = os.environ.get(args.key_password_env, "").encode() if args.key_password_env else None
        key = load_private_key(args.key, password)
        signature.write_text(sign_blob(key, args.file.read_bytes()))
    except SignatureError as err:
        log.error("%s", err)
        return 1
    except OSError as err:
        log.error("%s: %s", err.filename or args.file, err.strerror or err)
        return 2
    log.info("%s: signed, signature in %s", args.file, signature)
    return 0
