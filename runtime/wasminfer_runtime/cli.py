"""`wasminfer`: serve workers, run one module, fetch artifacts (the operator's init container), or serve models.

Only the module of the command given is imported: `wasminfer run` of a hello module must not pay for
the HTTP server, the model server or the fetcher, whose imports take most of a short run's time.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable
from typing import Any

# command -> (module with add_arguments(parser) and main(args), help)
COMMANDS = {
    "serve": ("wasminfer_runtime.server", "serve a wws folder or a runtime.yaml over HTTP"),
    "run": ("wasminfer_runtime.run", "run a WASI module once, like `wasmtime run -S nn`"),
    "fetch": ("wasminfer_runtime.fetch", "download modules and models with sha256 checks"),
    "push": ("wasminfer_runtime.supply.push", "publish a module or a model folder to an OCI registry"),
    "sign": ("wasminfer_runtime.supply.sign", "sign a file as cosign sign-blob does (or verify its signature)"),
    "runtimes": ("wasminfer_runtime.runtimes", "language runtimes for wws folders (the JavaScript engine)"),
    "model-server": ("wasminfer_runtime.modelserver", "serve a runtime.yaml's models over the Open Inference Protocol"),
}
LOG_LEVELS = ["debug", "info", "warning", "error"]


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _command_of(argv: list[str]) -> str | None:
    """The command named on a command line (the first word that is not a global option)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--log-level":
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, the arguments of that command alone are declared (and its module imported)."""
    parser = argparse.ArgumentParser(prog="wasminfer", description=__doc__.split("\n")[0])
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text)
        if only is None or name == only:
            importlib.import_module(module).add_arguments(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = _command_of(argv)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    _configure_logging(args.log_level)
    run: Callable[[Any], int] = importlib.import_module(COMMANDS[args.command][0]).main
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
