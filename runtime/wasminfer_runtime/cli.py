"""`wasminfer`: serve workers, run one module, fetch artifacts (the operator's init container), or serve models."""

from __future__ import annotations

import argparse
import logging
import sys

from wasminfer_runtime import fetch, modelserver, run, runtimes, server


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wasminfer", description=__doc__)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True)
    server.add_arguments(sub.add_parser("serve", help="serve a wws folder or a runtime.yaml over HTTP"))
    run.add_arguments(sub.add_parser("run", help="run a WASI module once, like `wasmtime run -S nn`"))
    fetch.add_arguments(sub.add_parser("fetch", help="download modules and models with sha256 checks"))
    runtimes.add_arguments(sub.add_parser("runtimes", help="language runtimes for wws folders (the JavaScript engine)"))
    modelserver.add_arguments(sub.add_parser("model-server", help="serve a runtime.yaml's models over the Open Inference Protocol"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.log_level)
    handlers = {"serve": server.main, "run": run.main, "fetch": fetch.main, "runtimes": runtimes.main, "model-server": modelserver.main}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
