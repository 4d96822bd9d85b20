"""`wasminfer sign FILE --key KEY`: a cosign sign-blob signature of a file (FILE.sig, base64), which
`cosign verify-blob --key cosign.pub --signature FILE.sig FILE` accepts; `--verify` checks one instead."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from wasminfer_runtime.supply.signatures import SignatureError, load_private_key, load_public_keys, sign_blob, verify_file

log = logging.getLogger("wasminfer.sign")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("file", type=Path, help="the file to sign (or to verify)")
    parser.add_argument("--key", type=Path, required=True,
                        help="PEM private key to sign with; with --verify, the PEM public key (cosign.pub)")
    parser.add_argument("--key-password-env", metavar="VAR", help="environment variable holding the key's password")
    parser.add_argument("--signature", type=Path, help="the signature file (default FILE.sig)")
    parser.add_argument("--verify", action="store_true", help="verify FILE against its signature instead")


def main(args: argparse.Namespace) -> int:
    signature = args.signature or args.file.with_name(args.file.name + ".sig")
    try:
        if args.verify:
            signer = verify_file(args.file, signature, load_public_keys([args.key]))
            log.info("%s: signature verified with %s", args.file, signer)
            return 0
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
