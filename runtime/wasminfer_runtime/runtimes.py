"""Language runtimes in wws folders: workers that are scripts, run by a Wasm interpreter.

wws 1.7 picks how to run a worker file by its extension:

- `.wasm` is the worker itself;
- `.js` runs on the QuickJS engine compiled into the wws binary. wasminfer does not ship it: the
  user extracts it from a wws binary (`wasminfer runtimes extract-js-engine PATH/TO/wws`, which stores
  it at `<cache>/runtimes/wasm-workers-quick-js-engine.wasm`) or points WASMINFER_JS_ENGINE at it.
  The engine gets no arguments and reads `/src/index.js`;
- any other extension runs on the first runtime in `.wws.toml` whose `extensions` list it (its
  `[[repositories]]` in order, then their `[[repositories.runtimes]]`). `wws runtimes install` put the
  runtime's files in `.wws/runtimes/<repository>/<name>/<version>/`; its `binary` is the module, its
  `args` are the whole argv (e.g. `["--", "/src/index.py"]`).

The script is copied as `index.<first extension>` (or `index.js`) into a folder of its own, wrapped
first when the runtime has a `wrapper` (its `{source}` replaced by the script's text), with the
runtime's `polyfill` beside it; the folder is mounted read-write at `/src`, as wws mounts it. A
worker whose runtime is missing keeps its route and answers 503 saying which file it needs.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import wasmtime
from pydantic import BaseModel, ConfigDict, Field, field_validator

from wasminfer_runtime.config import (
    ConfigError,
    FolderConfig,
    HttpRequestsConfig,
    SourceConfig,
    WorkerConfig,
    read_toml_file,
)
from wasminfer_runtime.engine import default_cache_dir

log = logging.getLogger(__name__)

PROJECT_FILE = ".wws.toml"
JS_ENGINE_FILE = "wasm-workers-quick-js-engine.wasm"
JS_ENGINE_ENV = "WASMINFER_JS_ENGINE"
SOURCE_MOUNT = "/src"


def js_engine_path(cache_dir: Path | None, env: Mapping[str, str]) -> Path:
    """Where the JavaScript engine is looked up: $WASMINFER_JS_ENGINE, else the cache."""
    if env.get(JS_ENGINE_ENV):
        return Path(env[JS_ENGINE_ENV]).expanduser().resolve()
    return (cache_dir or default_cache_dir()) / "runtimes" / JS_ENGINE_FILE


# -- .wws.toml -----------------------------------------------------------------------------------


class _Meta(BaseModel):
    # wws's own file: keys we do not use (tags, status, envs, template, ...) are accepted as wws does.
    model_config = ConfigDict(extra="ignore")


def _plain_name(v: str) -> str:
    if not v or v in (".", "..") or "/" in v or "\\" in v:
        raise ValueError(f"{v!r} is not a plain file or folder name")
    return v


class _Checksum(_Meta):
    type: Literal["sha256"]
    value: str


class _File(_Meta):
    url: str = ""
    filename: str
    checksum: _Checksum | None = None

    _name = field_validator("filename")(_plain_name)


class RuntimeMeta(_Meta):
    name: str
    version: str
    extensions: list[str] = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    binary: _File
    polyfill: _File | None = None
    wrapper: _File | None = None

    _names = field_validator("name", "version")(_plain_name)


class _Repository(_Meta):
    name: str
    runtimes: list[RuntimeMeta] = Field(default_factory=list)

    _name = field_validator("name")(_plain_name)


class _Project(_Meta):
    repositories: list[_Repository] = Field(default_factory=list)


@dataclass(frozen=True)
class _Installed:
    """A runtime of .wws.toml and where its files are (or should be)."""

    repository: str
    meta: RuntimeMeta
    folder: Path

    def describe(self) -> str:
        return f"runtime {self.meta.name} {self.meta.version} (repository {self.repository} in {PROJECT_FILE})"


class Runtimes:
    """The runtimes a wws folder declares, and the JavaScript engine: what runs each worker file."""

    def __init__(self, root: Path, cache_dir: Path | None = None, env: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.js_engine = js_engine_path(cache_dir, os.environ if env is None else env)
        self._by_ext: dict[str, _Installed] = {}
        self._checked: dict[Path, str | None] = {}  # file -> why it cannot be used (None: fine)
        project = root / PROJECT_FILE
        if project.is_file():
            for repo in read_toml_file(project, _Project).repositories:
                for meta in repo.runtimes:
                    folder = root / ".wws" / "runtimes" / repo.name / meta.name / meta.version
                    for ext in meta.extensions:
                        self._by_ext.setdefault(ext.lstrip("."), _Installed(repo.name, meta, folder))

    @property
    def extensions(self) -> set[str]:
        """File extensions (no dot) that are workers: wasm, js and those a declared runtime claims."""
        return {"wasm", "js", *self._by_ext}

    def bind(self, worker: WorkerConfig, file: Path) -> WorkerConfig:
        """The worker for `file` run by its runtime (raises ConfigError saying what is missing)."""
        ext = file.suffix[1:]
        if ext == "wasm":
            return worker
        if ext == "js":
            if not self.js_engine.is_file():
                raise ConfigError(
                    f"{file}: needs the JavaScript engine wws has built in, looked up at {self.js_engine}, which "
                    f"does not exist; store it there with `wasminfer runtimes extract-js-engine PATH/TO/wws` "
                    f"(from a wws 1.7 binary) or set {JS_ENGINE_ENV} to the engine module")
            # The engine imports wws's http call: wws links it for every worker, with no host allowed
            # unless [features.http_requests] grants some, and so do we.
            return worker.model_copy(update={"module": self.js_engine, "argv": [],
                                             "source": SourceConfig(file=file, name="index.js"),
                                             "http_requests": worker.http_requests or HttpRequestsConfig()})
        rt = self._by_ext[ext]
        meta = rt.meta
        binary = self._file(rt, meta.binary, file)
        wrapper = None if meta.wrapper is None else self._file(rt, meta.wrapper, file)
        files = [] if meta.polyfill is None else [self._file(rt, meta.polyfill, file)]
        source = SourceConfig(file=file, name=f"index.{meta.extensions[0].lstrip('.')}", wrapper=wrapper, files=files)
        return worker.model_copy(update={"module": binary, "argv": list(meta.args), "source": source})

    def _file(self, rt: _Installed, spec: _File, worker_file: Path) -> Path:
        path = rt.folder / spec.filename
        if path not in self._checked:
            self._checked[path] = _check(path, spec)
        why = self._checked[path]
        if why is not None:
            raise ConfigError(
                f"{worker_file}: needs {rt.describe()}: {path} {why}; install it with "
                f"`wws runtimes install {rt.meta.name} {rt.meta.version}` in {self.root}"
                + (f" (or download {spec.url} there)" if spec.url else ""))
        return path


def _check(path: Path, spec: _File) -> str | None:
    if not path.is_file():
        return "does not exist"
    if spec.checksum is not None:
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as err:
            return f"cannot be read ({err.strerror or err})"
        if digest != spec.checksum.value.lower():
            return f"does not match its sha256 in {PROJECT_FILE} ({digest})"
    return None


# -- the /src folders ----------------------------------------------------------------------------


class SourceStore:
    """The prepared /src folders of a server's workers, in one temporary folder removed at close."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.root: Path | None = None
        self._closed = False

    def prepare(self, worker: WorkerConfig) -> WorkerConfig:
        """worker with its script prepared and mounted at /src (raises ConfigError)."""
        source = worker.source
        if source is None:
            return worker
        with self._lock:
            if self._closed:
                raise ConfigError("the server is stopping")
            if self.root is None:
                self.root = Path(tempfile.mkdtemp(prefix="wasminfer-src-"))
            folder = Path(tempfile.mkdtemp(dir=self.root))
        try:
            if source.wrapper is None:
                shutil.copyfile(source.file, folder / source.name)
            else:
                # Text in, text out, as wws does (a script that is not UTF-8 cannot be wrapped).
                text = source.wrapper.read_text(encoding="utf-8")
                script = source.file.read_text(encoding="utf-8")
                (folder / source.name).write_text(text.replace("{source}", script), encoding="utf-8")
            for extra in source.files:
                shutil.copyfile(extra, folder / extra.name)
        except (OSError, UnicodeError) as err:
            why = f"{err.filename}: {err.strerror}" if isinstance(err, OSError) and err.strerror else str(err)
            raise ConfigError(f"{source.file}: cannot prepare the script for {SOURCE_MOUNT}: {why}") from None
        mount = FolderConfig.model_validate({"from": folder, "to": SOURCE_MOUNT, "writable": True})
        return worker.model_copy(update={"folders": [*worker.folders, mount]})

    def close(self) -> None:
        with self._lock:
            root, self.root, self._closed = self.root, None, True
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


# -- the JavaScript engine inside a wws binary ---------------------------------------------------

_MAGIC = b"\0asm\x01\0\0\0"  # a core module, version 1
# Known section ids -> their required position (custom sections, id 0, may appear anywhere).
_ORDER = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 13: 6, 6: 7, 7: 8, 8: 9, 9: 10, 12: 11, 10: 12, 11: 13}


def _u32(data: bytes, pos: int) -> tuple[int, int] | None:
    """A LEB128 u32 at pos and the position after it, or None."""
    value = 0
    for i in range(5):
        if pos + i >= len(data):
            return None
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    return None


def _section_ends(data: bytes, start: int) -> list[int]:
    """Where a module starting at `start` could end: after each section that parses in order.

    Nothing stores the module's length, so its sections are walked until bytes that cannot be the
    next section: an unknown or out-of-order id, a size running past the file, or a custom section
    whose name is not printable ASCII (the names tools write: name, producers, .debug_info, ...).
    """
    pos, last = start + len(_MAGIC), 0
    ends = [pos]  # a module may have no sections at all
    while pos < len(data):
        sid = data[pos]
        size = _u32(data, pos + 1)
        if size is None or size[1] + size[0] > len(data):
            break
        body, end = size[1], size[1] + size[0]
        if sid == 0:
            name = _u32(data, body)
            if name is None or name[1] + name[0] > end or name[0] == 0:
                break
            if not all(0x20 < b < 0x7F for b in data[name[1]:name[1] + name[0]]):
                break
        elif _ORDER.get(sid, 0) > last:
            last = _ORDER[sid]
        else:
            break
        pos = end
        ends.append(pos)
    return ends


def find_wasm_modules(data: bytes) -> list[tuple[int, bytes]]:
    """Every valid core Wasm module embedded in `data`, as (offset, bytes); the longest valid
    reading at each offset (trailing bytes that happen to parse as sections are dropped until the
    module validates)."""
    engine = wasmtime.Engine()
    found: list[tuple[int, bytes]] = []
    at = data.find(_MAGIC)
    while at >= 0:
        for end in reversed(_section_ends(data, at)):
            try:
                wasmtime.Module.validate(engine, data[at:end])
            except wasmtime.WasmtimeError:
                continue
            found.append((at, data[at:end]))
            break
        at = data.find(_MAGIC, at + 1)
    return found


def _exports_start(wasm: bytes) -> bool:
    """Whether a valid module exports a function `_start` (read from its export section: compiling
    a module the size of the engine to ask would take seconds)."""
    pos = len(_MAGIC)
    while pos < len(wasm):
        size = _u32(wasm, pos + 1)
        assert size is not None  # the module is valid
        if wasm[pos] == 7:
            count = _u32(wasm, size[1])
            assert count is not None
            at = count[1]
            for _ in range(count[0]):
                name = _u32(wasm, at)
                assert name is not None
                kind, at = wasm[name[1] + name[0]], name[1] + name[0] + 1
                if wasm[name[1]:name[1] + name[0]] == b"_start" and kind == 0:
                    return True
                index = _u32(wasm, at)
                assert index is not None
                at = index[1]
            return False
        pos = size[1] + size[0]
    return False


def extract_js_engine(binary: Path) -> bytes:
    """The JavaScript engine embedded in a wws binary: its largest Wasm command module (raises ValueError)."""
    commands = []
    for offset, wasm in find_wasm_modules(binary.read_bytes()):
        if _exports_start(wasm):
            commands.append((len(wasm), offset, wasm))
    if not commands:
        raise ValueError(f"{binary}: holds no WebAssembly command module (is it a wws binary?)")
    size, offset, wasm = max(commands)
    log.info("found a %d-byte Wasm command module at offset %d of %s", size, offset, binary)
    return wasm


def store_js_engine(binary: Path, dest: Path) -> Path:
    wasm = extract_js_engine(binary)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}")
    tmp.write_bytes(wasm)
    tmp.replace(dest)
    return dest


# -- `wasminfer runtimes` ------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="runtimes_command", required=True)
    extract = sub.add_parser("extract-js-engine",
                             help="store the JavaScript engine of a wws binary where `serve` looks for it")
    extract.add_argument("binary", type=Path, help="a wws 1.7 executable")
    extract.add_argument("--cache-dir", type=Path, help="the cache `serve --cache-dir` uses (default ~/.cache/wasminfer)")


def main(args: argparse.Namespace) -> int:
    dest = js_engine_path(args.cache_dir, os.environ)
    try:
        store_js_engine(args.binary, dest)
    except (OSError, ValueError) as err:
        log.error("%s", err if isinstance(err, ValueError) else f"{args.binary}: {err.strerror or err}")
        return 1
    digest = hashlib.sha256(dest.read_bytes()).hexdigest()
    print(f"{dest} ({dest.stat().st_size} bytes, sha256 {digest})")
    return 0
