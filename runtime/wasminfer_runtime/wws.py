"""A Wasm Workers Server (wws) folder -> RuntimeConfig.

`wasminfer serve DIR` serves the folder a user ran `wws DIR` on:

- every `*.wasm` is a worker, and so is every `*.js` and every file with an extension a runtime of
  `.wws.toml` claims (a script run by a language runtime, runtimes.py); its route comes from its path (`api/hello.wasm` -> `/api/hello`,
  `index.wasm` -> `/`, `api/index.wasm` -> `/api`, `[id].wasm` -> dynamic segment `id`, `[...all].wasm` -> the rest of the path in `all`);
- paths with a component starting with `_` or `.` are not routes, nor is anything under a folder
  named `public` when the root has one; `public/` holds static files;
- `NAME.toml` next to `NAME.wasm` configures the worker: name, version, [vars] ("$X" takes the
  host's env var X, empty when unset), [[folders]] from/to (from is relative to the worker;
  read-write, as wws mounts them, unless `readonly = true`, an extension of ours; the older
  `writable = false` means the same), [features.wasi_nn] allowed_backends and
  [[features.wasi_nn.preload_models]] (each a named model called after its folder; 4-D inputs of
  OpenVINO IR models read as NHWC, as wws did, unless `input_layout = "model"`, ours), [data.kv]
  namespace (the key/value store, kv.py), [features.http_requests] allowed_hosts, allowed_methods,
  allow_http (outbound HTTP, http_requests.py), and, beyond wws, [limits] with the keys of runtime.yaml
  (memory_mib, timeout_seconds, max_body_bytes, max_kv_bytes, ...) and `binary_body = "base64"`
  (a request body that is not UTF-8 reaches the worker base64-encoded rather than as "").

The server answers as wws does (server.wws_compat): its error and not-found bodies, its reading of
worker responses.

Anything wrong is a ConfigError naming the file and the key.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from wasminfer_runtime.config import (
    BackendName,
    ConfigError,
    expand_env_vars,
    FolderConfig,
    HttpRequestsConfig,
    InputLayout,
    KvConfig,
    Limits,
    ModelConfig,
    ModelFormat,
    RuntimeConfig,
    ServerConfig,
    WasiNnConfig,
    WorkerConfig,
    format_validation_error,
    parse_runtime_config,
    read_toml_file,
)
from wasminfer_runtime.formats import readers
from wasminfer_runtime.routing import Route, RouteError, RouteTable
from wasminfer_runtime.runtimes import Runtimes

log = logging.getLogger(__name__)

PUBLIC_DIR = "public"

# wws backend names -> ours. wasmtime's CLI calls ONNX Runtime "onnx", so both spellings work.
_BACKENDS = {"openvino": BackendName.openvino, "onnx": BackendName.onnxruntime, "onnxruntime": BackendName.onnxruntime}


def _backend(value: str) -> BackendName:
    try:
        return _BACKENDS[value]
    except KeyError:
        raise ValueError(f"unknown backend {value!r} (known: {', '.join(sorted(_BACKENDS))})") from None


class _Toml(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Provider(_Toml):
    type: Literal["local"]
    dir: str


class _Preload(_Toml):
    backend: str
    provider: _Provider

    @field_validator("backend")
    @classmethod
    def _known(cls, v: str) -> str:
        _backend(v)
        return v


class _WasiNn(_Toml):
    allowed_backends: list[str] = Field(default_factory=list)
    preload_models: list[_Preload] = Field(default_factory=list)
    # Ours: wws read 4-D inputs of OpenVINO models as NHWC (wasinn/layout.py); "model" opts out.
    input_layout: InputLayout = InputLayout.nhwc

    @field_validator("allowed_backends")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for b in v:
            _backend(b)
        return v


class _Features(_Toml):
    wasi_nn: _WasiNn | None = None
    http_requests: HttpRequestsConfig | None = None  # wws's keys, and our limits beside them


class _Kv(_Toml):
    namespace: str = Field(min_length=1)


class _Data(_Toml):
    kv: _Kv | None = None  # `[data]` alone grants no store, as in wws


class _Folder(_Toml):
    from_: str = Field(alias="from")
    to: str
    readonly: bool | None = None  # ours: wws mounts every folder read-write
    writable: bool | None = None  # ours, older: the opposite of readonly

    @model_validator(mode="after")
    def _one_meaning(self) -> _Folder:
        if self.readonly is not None and self.writable is not None and self.readonly == self.writable:
            raise ValueError(f"readonly = {str(self.readonly).lower()} and writable = "
                             f"{str(self.writable).lower()} disagree; set readonly only")
        return self

    @property
    def read_write(self) -> bool:
        if self.readonly is not None:
            return not self.readonly
        return self.writable is not False


class _WorkerToml(_Toml):
    name: str | None = Field(default=None, min_length=1)
    version: str | None = None
    vars: dict[str, str] = Field(default_factory=dict)
    folders: list[_Folder] = Field(default_factory=list)
    features: _Features = Field(default_factory=_Features)
    limits: Limits | None = None
    data: _Data | None = None
    binary_body: Literal["empty", "base64"] = "empty"  # ours: "base64" hands non-UTF-8 bodies over


def route_for(rel: Path) -> str:
    """Route of a module at `rel` (relative to the served folder), the wws way."""
    parts = [p for p in rel.with_suffix("").parts if p != "index"]
    return "/" + "/".join(parts)


def _is_route(rel: Path, has_public: bool) -> bool:
    return not any(p.startswith(("_", ".")) or (has_public and p == PUBLIC_DIR) for p in rel.parts)


def _model_files(model_dir: Path, backend: BackendName) -> tuple[ModelFormat, list[Path]] | None:
    xml, bin_, onnx = model_dir / "model.xml", model_dir / "model.bin", model_dir / "model.onnx"
    if backend in readers(ModelFormat.openvino) and xml.is_file() and bin_.is_file():
        return ModelFormat.openvino, [xml, bin_]
    if backend in readers(ModelFormat.onnx) and onnx.is_file():
        return ModelFormat.onnx, [onnx]
    return None


class _Models:
    """Named models collected over all workers; the same folder preloaded twice is one model."""

    def __init__(self) -> None:
        self.by_name: dict[str, tuple[ModelConfig, Path]] = {}

    def add(self, pre: _Preload, worker_dir: Path, source: Path, key: str) -> str:
        backend = _backend(pre.backend)
        model_dir = (worker_dir / pre.provider.dir).resolve()
        where = f"{source}: {key}.provider.dir"
        if not model_dir.is_dir():
            raise ConfigError(f"{where}: model folder {model_dir} does not exist")
        found = _model_files(model_dir, backend)
        if found is None:
            wanted = "model.xml + model.bin (or model.onnx)" if backend in readers(ModelFormat.openvino) else "model.onnx"
            raise ConfigError(f"{where}: {model_dir} holds no {wanted} for backend {pre.backend!r}")
        fmt, files = found
        name = model_dir.name
        try:
            cfg = ModelConfig(name=name, format=fmt, backend=backend, files=files)
        except ValidationError as err:
            raise ConfigError(format_validation_error(f"{where} (model {name!r})", err)) from None
        known = self.by_name.get(name)
        if known is not None:
            if known[0] != cfg:
                raise ConfigError(
                    f"{where}: a model named {name!r} is already preloaded from {known[0].files[0].parent} "
                    f"(by {known[1]}); the name of a model is its folder's name, so rename one folder"
                )
            return name
        self.by_name[name] = (cfg, source)
        return name


def _route(root: Path, module: Path) -> str:
    route = route_for(module.relative_to(root))
    try:
        Route(route, "")
    except RouteError as err:
        raise ConfigError(f"{module}: {err}") from None
    return route


def _worker(root: Path, module: Path, env: Mapping[str, str], models: _Models) -> WorkerConfig:
    rel = module.relative_to(root)
    route = _route(root, module)
    toml_path = module.with_suffix(".toml")
    toml = read_toml_file(toml_path, _WorkerToml) if toml_path.is_file() else _WorkerToml()
    worker_dir = module.parent

    folders: list[FolderConfig] = []
    for i, f in enumerate(toml.folders):
        host = (worker_dir / f.from_).resolve()
        if not host.is_dir():
            raise ConfigError(f"{toml_path}: folders[{i}].from: folder {host} does not exist")
        try:
            folders.append(FolderConfig.model_validate({"from": host, "to": f.to, "writable": f.read_write}))
        except ValidationError as err:
            raise ConfigError(format_validation_error(f"{toml_path}: folders[{i}]", err)) from None

    nn = WasiNnConfig()
    if toml.features.wasi_nn is not None:
        spec = toml.features.wasi_nn
        names = [
            models.add(p, worker_dir, toml_path, f"features.wasi_nn.preload_models[{i}]")
            for i, p in enumerate(spec.preload_models)
        ]
        nn = WasiNnConfig(
            enabled=True,
            allowed_backends=list(dict.fromkeys(_backend(b) for b in spec.allowed_backends)),
            models=list(dict.fromkeys(names)),
            input_layout=spec.input_layout,
        )

    name = toml.name or (rel.with_suffix("").as_posix())
    try:
        return WorkerConfig(
            name=name,
            module=module,
            route=route,
            version=toml.version,
            vars=expand_env_vars(toml.vars, env, str(toml_path)),
            folders=folders,
            limits=toml.limits or Limits(),
            wasi_nn=nn,
            kv=KvConfig(namespace=toml.data.kv.namespace) if toml.data and toml.data.kv else None,
            http_requests=toml.features.http_requests,
            binary_body=toml.binary_body,
        )
    except ValidationError as err:
        raise ConfigError(format_validation_error(str(toml_path), err)) from None


def load_wws_folder(root: Path, env: Mapping[str, str] | None = None,
                    cache_dir: Path | None = None) -> RuntimeConfig:
    """Read a wws folder into a RuntimeConfig (raises ConfigError); cache_dir: where the JavaScript
    engine is looked up (runtimes.py)."""
    env = os.environ if env is None else env
    root = root.resolve()
    if not root.is_dir():
        raise ConfigError(f"{root}: not a folder")
    public = root / PUBLIC_DIR
    has_public = public.is_dir()
    runtimes = Runtimes(root, cache_dir, env)
    modules = sorted(
        p for p in root.rglob("*") if p.suffix[1:] in runtimes.extensions and p.is_file()
        and _is_route(p.relative_to(root), has_public)
    )
    models = _Models()
    workers: list[WorkerConfig] = []
    seen_names: dict[str, Path] = {}
    broken: dict[str, str] = {}
    for module in modules:
        try:
            w = runtimes.bind(_worker(root, module, env, models), module)
        except ConfigError as err:
            # As in wws, one worker's bad configuration costs that worker only: it keeps its route
            # (named after its file) and answers 503 with the reason.
            name = module.relative_to(root).with_suffix("").as_posix()
            log.error("worker %s will not serve: %s", name, err)
            broken[name] = str(err)
            w = WorkerConfig(name=name, module=module, route=_route(root, module))
        if w.name in seen_names:
            raise ConfigError(
                f"{module.with_suffix('.toml')}: name: worker name {w.name!r} is already used by {seen_names[w.name]}"
            )
        seen_names[w.name] = module
        workers.append(w)
    try:
        RouteTable((w.route, w.module_label) for w in workers)
    except RouteError as err:
        raise ConfigError(f"{root}: {err}") from None
    if not workers:
        log.warning("%s: no workers found (no *.wasm, *.js or script of a .wws.toml runtime outside _*, .* and public/)", root)
    cfg = RuntimeConfig(
        server=ServerConfig.model_validate({"public_dir": public if has_public else None, "wws_compat": True}),
        models=[m for m, _ in models.by_name.values()],
        workers=workers,
    )
    # Run the same validation a runtime.yaml gets, with the folder as the source.
    checked = parse_runtime_config(cfg.model_dump(by_alias=True), str(root))
    return checked.model_copy(update={"worker_errors": broken})
