"""Fixtures for the serving side: guests built from source and real servers on loopback."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from wasminfer_runtime.config import RuntimeConfig

from .support import GUEST_SOURCES, ROOT, ServerThread


def _load_build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wasminfer_sdk_build", ROOT / "sdk" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def guests() -> dict[str, Path]:
    """Every guest these tests use, compiled by the project's own build step (sdk/build.py)."""
    missing = [str(src) for src in GUEST_SOURCES.values() if not src.is_file()]
    assert not missing, f"guest sources missing: {missing}"
    build = _load_build_module()
    try:
        return {name: build.build_c(src) for name, src in GUEST_SOURCES.items()}
    except Exception as err:  # a missing toolchain must fail loudly, with the fix
        pytest.fail(f"building guests failed ({err}); install the dev extras: pip install -e '.[dev]' (ziglang)")


@pytest.fixture
def serve() -> Iterator[Callable[[RuntimeConfig], ServerThread]]:
    """Start servers for one test; all are stopped after it."""
    started: list[ServerThread] = []

    def _start(cfg: RuntimeConfig) -> ServerThread:
        server = ServerThread(cfg).start()
        started.append(server)
        return server

    yield _start
    for server in started:
        server.stop()
