"""Language runtimes in wws folders: scripts run by a runtime of `.wws.toml`, `.js` on the JavaScript
engine, the engine found inside a wws binary, and workers whose runtime is missing.

The runtime is tests/guests/tiny_runtime.c, a small interpreter run the way wws runs Python or Ruby.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from wasminfer_runtime import cli
from wasminfer_runtime.config import RuntimeConfig
from wasminfer_runtime.runtimes import JS_ENGINE_FILE, find_wasm_modules
from wasminfer_runtime.server import SERVICE_KEY
from wasminfer_runtime.wws import load_wws_folder

from .support import ServerThread, put_worker, request, wait_loaded

Serve = Callable[[RuntimeConfig], ServerThread]

WRAPPER = "# wrapped\ncat /src/poly.tiny\n{source}\nsay end of wrapper\n"


def _project(site: Path, runtime: Path | None, *, checksum: str | None = None) -> None:
    """A `.wws.toml` declaring the tiny runtime for *.tiny, installed (files in .wws/runtimes) when
    `runtime` is given, as `wws runtimes install` leaves it."""
    site.mkdir(parents=True, exist_ok=True)
    digest = checksum or (hashlib.sha256(runtime.read_bytes()).hexdigest() if runtime else "0" * 64)
    (site / ".wws.toml").write_text(f"""version = 1

[[repositories]]
name = "local"
url = "https://example.invalid/index.toml"

[[repositories.runtimes]]
name = "tiny"
version = "1.0+test"
tags = ["latest"]
status = "active"
extensions = ["tiny"]
args = ["--", "/src/index.tiny"]

[repositories.runtimes.binary]
url = "https://example.invalid/tiny.wasm"
filename = "tiny.wasm"
checksum = {{ type = "sha256", value = "{digest}" }}

[repositories.runtimes.polyfill]
url = "https://example.invalid/poly.tiny"
filename = "poly.tiny"

[repositories.runtimes.wrapper]
url = "https://example.invalid/wrapper.txt"
filename = "wrapper.txt"
""")
    if runtime is not None:
        folder = site / ".wws" / "runtimes" / "local" / "tiny" / "1.0+test"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "tiny.wasm").write_bytes(runtime.read_bytes())
        (folder / "poly.tiny").write_text("polyfill here\n")
        (folder / "wrapper.txt").write_text(WRAPPER)


def test_scripts_run_on_their_runtime_with_wws_args_wrapper_polyfill_vars_and_folders(
    tmp_path: Path, guests: dict[str, Path], serve: Serve
) -> None:
    site = tmp_path / "site"
    _project(site, guests["tiny_runtime"])
    (site / "data").mkdir(parents=True)
    (site / "data" / "note.txt").write_text("from a folder\n")
    script = site / "api" / "[who].tiny"
    script.parent.mkdir(parents=True)
    script.write_text("argv\nrequest\nparam who\nenv GREETING\ncat /data/note.txt\ncat /src/index.tiny\n")
    script.with_suffix(".toml").write_text(
        'name = "who"\n[vars]\nGREETING = "hi"\n[[folders]]\nfrom = "../data"\nto = "/data"\n')
    (site / "broken.tiny").write_text("say before\nfail\n")
    put_worker(site, "hello.wasm", guests["hello"])

    server = serve(load_wws_folder(site))
    assert wait_loaded(server.url).status == 200
    reply = request(server.url + "/api/bob", "POST", b"x")
    assert reply.status == 200, reply.body
    # argv is the runtime's args whole; the script was wrapped and the polyfill placed beside it.
    wrapped = WRAPPER.replace("{source}", script.read_text())
    assert reply.body.decode() == (
        "polyfill here\n" + "argc=2\n--\n/src/index.tiny\n" + "POST /api/bob\n" + "bob\n" + "hi\n"
        + "from a folder\n" + wrapped + "end of wrapper\n"
    )
    # A script the runtime fails on gets a 500; the others keep serving.
    assert request(server.url + "/broken").status == 500
    assert request(server.url + "/hello").status == 200
    assert request(server.url + "/api/ann").body.decode().count("ann\n") == 2

    store = server.runner.app[SERVICE_KEY].sources.root if server.runner else None
    assert store is not None and store.is_dir()
    server.stop()
    assert not store.exists(), "the prepared /src folders outlive the server"


def test_a_missing_runtime_or_js_engine_is_listed_and_its_routes_answer_503(
    tmp_path: Path, guests: dict[str, Path], serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    _project(site, None)
    (site / "page.tiny").write_text("say never\n")
    (site / "index.js").write_text("say never\n")
    put_worker(site, "hello.wasm", guests["hello"])
    cache = tmp_path / "cache"

    with caplog.at_level(logging.ERROR):
        cfg = load_wws_folder(site, env={}, cache_dir=cache)
    server = serve(cfg)
    ready = wait_loaded(server.url)
    assert ready.status == 503
    failed = ready.json()["failed"]
    binary = site / ".wws" / "runtimes" / "local" / "tiny" / "1.0+test" / "tiny.wasm"
    assert str(binary) in failed["worker page"] and "wws runtimes install tiny 1.0+test" in failed["worker page"]
    engine = cache / "runtimes" / JS_ENGINE_FILE
    assert str(engine) in failed["worker index"]
    assert "wasminfer runtimes extract-js-engine" in failed["worker index"]
    for path, name in (("/page", "page"), ("/", "index")):
        reply = request(server.url + path)
        assert reply.status == 503 and reply.json()["worker"] == name
        assert reply.json()["message"].endswith(failed[f"worker {name}"])
    assert request(server.url + "/hello").status == 200
    logged = caplog.text
    assert "worker page will not serve" in logged and "worker index will not serve" in logged

    # Installed, but not the file .wws.toml's checksum names: refused the same way.
    _project(site, guests["tiny_runtime"], checksum="ab" * 32)
    bad = load_wws_folder(site, env={}, cache_dir=cache).worker_errors["page"]
    assert "does not match its sha256" in bad


def test_js_engine_extracted_from_a_binary_runs_js_workers(
    tmp_path: Path, guests: dict[str, Path], serve: Serve
) -> None:
    engine = guests["tiny_runtime"].read_bytes()
    # Junk around it: a header whose first section runs past the file, an empty (valid, but not a
    # command) module, and after the engine bytes that start like a custom section with a binary name.
    binary = tmp_path / "wws"
    binary.write_bytes(b"\x7fELF" + bytes(range(256)) * 4 + b"\0asm\x01\0\0\0\x01\xff\xff\xff\x7f"
                       + b"\0asm\x01\0\0\0" + b"\xff\x00" + engine + b"\x00\x05\x03\xfe\xff\x01\x00" + b"\x90" * 999)
    cache = tmp_path / "cache"
    assert cli.main(["runtimes", "extract-js-engine", str(binary), "--cache-dir", str(cache)]) == 0
    stored = cache / "runtimes" / JS_ENGINE_FILE
    assert stored.read_bytes() == engine
    assert [len(w) for _, w in find_wasm_modules(binary.read_bytes())] == [8, 8, len(engine)]

    site = tmp_path / "site"
    site.mkdir()
    (site / "index.js").write_text("argv\nenv GREETING\nrequest\ncat /src/index.js\n")
    (site / "index.toml").write_text('[vars]\nGREETING = "hello js"\n')
    server = serve(load_wws_folder(site, env={}, cache_dir=cache))
    assert wait_loaded(server.url).status == 200
    reply = request(server.url + "/")
    # wws gives its engine no arguments, the worker's vars, and the script at /src/index.js.
    assert reply.status == 200, reply.body
    assert reply.body.decode() == "argc=0\nhello js\nGET /\n" + (site / "index.js").read_text()


def test_extract_js_engine_fails_on_a_file_with_no_command_module(tmp_path: Path) -> None:
    junk = tmp_path / "not-wws"
    junk.write_bytes(b"\0asm\x01\0\0\0" + b"\x01" * 64)
    assert cli.main(["runtimes", "extract-js-engine", str(junk), "--cache-dir", str(tmp_path)]) == 1
    assert not (tmp_path / "runtimes" / JS_ENGINE_FILE).exists()
