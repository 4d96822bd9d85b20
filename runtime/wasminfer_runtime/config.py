"""The `runtime.yaml` contract: what a runtime process serves.

`wasminfer serve --config runtime.yaml` reads this file; `wasminfer serve DIR` builds the same
object from a wws folder (see `wws.py`); the operator renders it into a ConfigMap. One schema,
validated by pydantic, so a bad file is refused at start with the file and the key that is wrong.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic import ValidationInfo

from wasminfer_runtime import formats
# The format/backend/device enums live with their table; imported from here by most modules.
from wasminfer_runtime.formats import BackendName as BackendName
from wasminfer_runtime.formats import Device as Device
from wasminfer_runtime.formats import ModelFormat as ModelFormat
from wasminfer_runtime.formats import default_backend as default_backend
from wasminfer_runtime.routing import check_route
from wasminfer_runtime.supply.reference import BadReference, Reference

log = logging.getLogger(__name__)

DEFAULT_MEMORY_MIB = 256
DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_DYNAMIC_DIM = 64
DEFAULT_MAX_OUTPUT_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_KV_BYTES = 1024 * 1024


class ConfigError(Exception):
    """A configuration file that cannot be served; the message names the file and the key."""


class PerformanceHint(str, enum.Enum):
    LATENCY = "LATENCY"
    THROUGHPUT = "THROUGHPUT"
    CUMULATIVE_THROUGHPUT = "CUMULATIVE_THROUGHPUT"


class Precision(str, enum.Enum):
    f32 = "f32"
    f16 = "f16"
    bf16 = "bf16"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


Digest = Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]


class OciSource(_Strict):
    """An OCI artifact in a registry: a module (wkg or Spin layout) or a model folder (ORAS layout)."""

    reference: str = Field(description="registry[:port]/repository[:tag][@sha256:…]; a tag is resolved to a digest once.")
    layer: Digest | None = Field(
        None, description="Modules only: the digest of the Wasm layer to run, for an artifact with several (a Spin application)."
    )

    @field_validator("reference")
    @classmethod
    def _reference(cls, v: str) -> str:
        try:
            return str(Reference.parse(v))
        except BadReference as err:
            raise ValueError(str(err)) from None

    @property
    def parsed(self) -> Reference:
        return Reference.parse(self.reference)


class SigstoreIdentity(_Strict):
    identity: Annotated[str, Field(min_length=1)] = Field(description="The signing certificate's e-mail or URI.")
    issuer: Annotated[str, Field(min_length=1)] = Field(description="The OIDC issuer that vouched for it.")


class SigstorePolicy(_Strict):
    """Keyless signatures: Sigstore bundles verified offline against this trusted root."""

    trusted_root: Path = Field(description="A Sigstore trusted_root.json: the Fulcio CAs, the Rekor and CT log keys.")
    identities: list[SigstoreIdentity] = Field(min_length=1, description="Who may have signed; any of them.")


class SignaturePolicy(_Strict):
    """Which signatures a module or model must carry before it is compiled or loaded: cosign key pairs,
    Sigstore identities (keyless), or either."""

    keys: list[Path] = Field(default_factory=list, description="PEM public keys (cosign.pub); a signature by any of them verifies.")
    sigstore: SigstorePolicy | None = Field(
        None, description="Keyless: a Sigstore bundle (FILE.sigstore.json) by one of these identities verifies."
    )
    required: bool = Field(
        True,
        description="Refuse what carries no signature. false: a signature that is there must verify, and what has "
        "none loads with a warning.",
    )

    @model_validator(mode="after")
    def _something_trusted(self) -> SignaturePolicy:
        if not self.keys and self.sigstore is None:
            raise ValueError("set keys, sigstore or both: whose signatures verify")
        return self


class RegistryAccessConfig(_Strict):
    """How OCI registries are reached."""

    ca_file: Path | None = Field(None, description="Extra CA bundle for registries with their own CA.")
    auth_file: Path | None = Field(
        None,
        description="A Docker config.json with registry logins (the .dockerconfigjson key of an image pull Secret); "
        "~/.docker/config.json is read as well.",
    )


class ModelOptions(_Strict):
    precision: Precision = Field(
        Precision.f32,
        description="Inference precision. f32 by default so results match across CPUs (OpenVINO picks bf16 on AMX CPUs otherwise).",
    )
    performance_hint: PerformanceHint = PerformanceHint.LATENCY
    streams: Annotated[int | None, Field(ge=1, le=64)] = Field(
        None, description="Parallel inference streams; the backend decides when unset."
    )
    pool_size: Annotated[int, Field(ge=1, le=256)] = Field(
        4, description="Infer requests kept ready for concurrent calls to this model."
    )
    # A guest picks the dynamic dimensions of its inputs, and the host allocates outputs and
    # intermediate buffers to match: these two bound what one inference makes the host allocate.
    max_dynamic_dim: Annotated[int, Field(ge=1, le=65536)] = Field(
        DEFAULT_MAX_DYNAMIC_DIM,
        description="Largest value a guest may give a dynamic dimension of an input (a batch of N); larger is refused.",
    )
    max_output_bytes: Annotated[int, Field(ge=1, le=4 * 1024**3)] = Field(
        DEFAULT_MAX_OUTPUT_BYTES, description="Largest output one inference may produce; a larger one fails the compute."
    )


def _model_server_url(url: str) -> str:
    m = re.fullmatch(r"(http|grpc)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?/?", url)
    if m is None:
        raise ValueError(f"{url!r} is not a model server address like http://HOST:PORT or grpc://HOST:PORT")
    if m.group(1) == "grpc" and m.group(3) is None:
        raise ValueError(f"{url!r}: a gRPC address needs its port")
    return url.rstrip("/")


class RemoteModel(_Strict):
    """A named model served by a model server (`wasminfer model-server`, or any server of the Open
    Inference Protocol v2, over REST or gRPC): the guest's calls become inference requests to it."""

    url: Annotated[str | None, AfterValidator(lambda v: None if v is None else _model_server_url(v))] = Field(
        None, description="The model server's address: http://HOST:PORT (REST) or grpc://HOST:PORT (gRPC)."
    )
    urls: list[Annotated[str, AfterValidator(_model_server_url)]] = Field(
        default_factory=list,
        max_length=64,
        description="Several model servers that all hold the model (the replicas of a pool holding it): calls "
        "spread over them, and go to the next when one cannot be reached. Instead of `url`.",
    )
    model: Annotated[str | None, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")] = Field(
        None, description="The model's name on the server; defaults to this model's name."
    )
    timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(
        30.0, description="Longest one inference may take, answer included; the worker's own timeout caps it too."
    )

    @model_validator(mode="after")
    def _one_way(self) -> RemoteModel:
        if (self.url is None) == (not self.urls):
            raise ValueError("set exactly one of url and urls")
        schemes = {u.split("://", 1)[0] for u in self.addresses}
        if len(schemes) > 1:
            raise ValueError("urls: all of one protocol (http:// or grpc://)")
        return self

    @property
    def addresses(self) -> list[str]:
        return [self.url] if self.url is not None else list(self.urls)


class ModelConfig(_Strict):
    """A named model: compiled once at start, shared by every worker allowed to use it."""

    name: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    format: ModelFormat
    # Validated even when left out: the format's default backend must run on the device too.
    backend: BackendName | None = Field(None, validate_default=True, description="Defaults from the format.")
    device: Device = Field(Device.CPU, validate_default=True)
    files: list[Path] = Field(
        default_factory=list, description="openvino: [model.xml, model.bin] (or [model.xml]); onnx: [model.onnx]; ggml: [model.gguf]",
        max_length=2
    )
    remote: RemoteModel | None = Field(None, description="Served by a model server instead of loaded from files here.")
    oci: OciSource | None = Field(
        None, description="The model folder as an OCI artifact (one layer per file, as `oras push` and `wasminfer push` store it)."
    )
    folder: Path | None = Field(
        None, description="A folder holding the model's files, picked by their suffixes (openvino: .xml and .bin; onnx: .onnx)."
    )
    signatures: SignaturePolicy | None = Field(
        None, description="Overrides server.signatures for this model; each file's signature is FILE.sig, or attached to the artifact."
    )
    options: ModelOptions = Field(default_factory=ModelOptions)
    memory_mib: Annotated[int | None, Field(ge=16, le=1024 * 1024)] = Field(
        None,
        description="Memory cap of the model's host process, beyond what its libraries take (cgroup where the "
        "runtime may create one, RLIMIT_AS otherwise); unset: only the container's limit applies.",
    )

    # Field validators (not one for the model) so that an error names the key: models[0].device.
    @field_validator("backend")
    @classmethod
    def _backend_reads_format(cls, v: BackendName | None, info: ValidationInfo) -> BackendName | None:
        fmt = info.data.get("format")
        if fmt is None:  # the format itself is wrong, and reported
            return v
        backend = default_backend(fmt) if v is None else v
        error = formats.backend_error(fmt, backend)
        if error:
            raise ValueError(error)
        return backend

    @field_validator("device")
    @classmethod
    def _device_of_backend(cls, v: Device, info: ValidationInfo) -> Device:
        backend = info.data.get("backend")
        error = None if backend is None else formats.device_error(backend, v)
        if error:
            raise ValueError(error)
        return v

    @model_validator(mode="after")
    def _file_count(self) -> ModelConfig:
        if self.remote is not None:
            if self.files or self.oci is not None or self.folder is not None:
                raise ValueError("a remote model has no files: its model server loads them")
            return self
        if self.oci is not None or self.folder is not None:
            if self.files or (self.oci is not None and self.folder is not None):
                raise ValueError("set one of files, folder and oci")
            return self
        if not self.files:
            raise ValueError("files: a model needs its files (or a `folder` or `oci` artifact holding them, or `remote`, a model server serving it)")
        if self.format in (ModelFormat.onnx, ModelFormat.ggml) and len(self.files) != 1:
            raise ValueError(f"format '{self.format.value}' takes exactly one file")
        return self

    @property
    def remote_name(self) -> str:
        """The model's name on its model server."""
        assert self.remote is not None
        return self.remote.model or self.name

    @property
    def resolved_backend(self) -> BackendName:
        assert self.backend is not None
        return self.backend


class FolderConfig(_Strict):
    """A host directory preopened in the guest; read-only unless writable."""

    from_: Path = Field(alias="from")
    to: str
    writable: bool = False

    @field_validator("to")
    @classmethod
    def _absolute_guest_path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("guest path must be absolute (start with '/')")
        return v


class Limits(_Strict):
    memory_mib: Annotated[int, Field(ge=1, le=4096)] = DEFAULT_MEMORY_MIB
    timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = DEFAULT_TIMEOUT_SECONDS
    max_body_bytes: Annotated[int, Field(ge=0, le=1024**3)] = DEFAULT_MAX_BODY_BYTES
    max_concurrency: Annotated[int | None, Field(ge=1, le=1024)] = Field(
        None, description="Requests of this worker running at once; unset: every invocation thread but one."
    )
    max_queued: Annotated[int | None, Field(ge=0, le=65536)] = Field(
        None, description="Requests waiting for a slot beyond that; more get 503 with Retry-After. Unset: as many "
        "as are expected to start within 0.25 s at the worker's recent pace (at least 2 x max_concurrency)."
    )
    max_kv_bytes: Annotated[int, Field(ge=0, le=1024**3)] = Field(
        DEFAULT_MAX_KV_BYTES,
        description="Largest key/value store (UTF-8 bytes of its keys and values) this worker may write; "
        "a larger one is refused and the store keeps its previous state.",
    )


class InputLayout(str, enum.Enum):
    """How the host reads a guest's 4-D input tensors for OpenVINO IR models (wasinn/layout.py)."""

    model = "model"  # row-major in the order of the dims the guest declares: today's wasmtime
    nhwc = "nhwc"  # dims declared N,C,H,W, bytes interleaved N,H,W,C: wasmtime-wasi-nn 13, so wws 1.7


class WasiNnConfig(_Strict):
    """wasi-nn is denied unless enabled; then only these backends and these named models."""

    enabled: bool = False
    allowed_backends: list[BackendName] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list, description="Named models this worker may load_by_name.")
    input_layout: InputLayout = Field(
        InputLayout.model,
        description="How the bytes of a 4-D input of an OpenVINO IR model are read: `model` in the order of the "
        "declared dims (wasmtime today), `nhwc` interleaved N,H,W,C under dims declared N,C,H,W (wws 1.7).",
    )


class KvConfig(_Strict):
    """The wws key/value store: workers naming the same namespace share one in-memory store."""

    namespace: Annotated[str, Field(min_length=1)]


# The methods of wws's http-method enum (wit/core/http-types.wit), in its order.
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD")


class HttpRequestsConfig(_Strict):
    """Outbound HTTP (wws `[features.http_requests]`): denied unless set; then only these hosts and methods."""

    allowed_hosts: list[str] = Field(
        default_factory=list, description="Hosts a request may go to (any port); compared without case."
    )
    allowed_methods: list[str] = Field(
        default_factory=lambda: ["GET", "POST", "PUT", "PATCH", "DELETE"],
        description="Methods a request may use (wws's default: all but OPTIONS and HEAD).",
    )
    allow_http: bool = Field(False, description="Allow http:// URLs; only https:// otherwise.")
    # Ours: wws has no bound on any of these.
    timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(
        10.0, description="A request, redirects and body included, gets the timeout error after this long "
        "(the worker's own timeout bounds it too)."
    )
    max_request_body_bytes: Annotated[int, Field(ge=0, le=1024**3)] = Field(
        8 * 1024 * 1024, description="A larger request body gets invalid-request-body."
    )
    max_response_body_bytes: Annotated[int, Field(ge=0, le=1024**3)] = Field(
        16 * 1024 * 1024, description="A larger response body gets invalid-response-body."
    )

    @field_validator("allowed_methods")
    @classmethod
    def _known_methods(cls, v: list[str]) -> list[str]:
        unknown = [m for m in v if m not in HTTP_METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {', '.join(map(repr, unknown))} (known, in capitals: "
                             f"{', '.join(HTTP_METHODS)})")
        return v


class SourceConfig(_Strict):
    """A script run by a language runtime (the worker's module), prepared as wws prepares it: copied,
    or wrapped, into a folder of its own with the runtime's extra files, mounted read-write at /src."""

    file: Path = Field(description="The worker's script.")
    name: Annotated[str, Field(pattern=r"^[^/\\]+$")] = Field(description="Its file name under /src (index.py).")
    wrapper: Path | None = Field(None, description="A template whose `{source}` becomes the script's text.")
    files: list[Path] = Field(default_factory=list, description="Copied beside it (a runtime's polyfill).")


# A var is a WASI environment entry, NAME=VALUE as a NUL-terminated UTF-8 string: its name must not
# be empty and must hold no '=' or NUL, or the guest would read another name. Nothing narrower: wws
# takes any TOML key (`my-key` works there). In the common subset of Python's `re` and RE2, so that
# the operator's CRD checks it too (match it whole).
VAR_NAME_RE = r"^[^=\x00]+$"


def check_var_name(name: str) -> str:
    if not re.fullmatch(VAR_NAME_RE, name):
        raise ValueError(f"var name {name!r} must not be empty and must not contain '=' or NUL")
    try:
        name.encode()
    except UnicodeEncodeError:
        raise ValueError(f"var name {name!r} is not UTF-8 text") from None
    return name


VarName = Annotated[str, AfterValidator(check_var_name)]


class WorkerConfig(_Strict):
    name: Annotated[str, Field(min_length=1)]
    module: Path | None = Field(None, description="The module's file (or `oci`).")
    oci: OciSource | None = Field(None, description="The module as an OCI artifact, instead of `module`.")
    signature: Path | None = Field(
        None, description="The module file's cosign sign-blob signature; MODULE.sig when unset. An OCI module's is attached to it."
    )
    signatures: SignaturePolicy | None = Field(None, description="Overrides server.signatures for this worker's module.")
    route: Annotated[str, Field(min_length=1, max_length=1024)]
    argv: list[str] | None = Field(None, description="The guest's whole argv; unset: the module's file name.")
    source: SourceConfig | None = Field(None, description="A script the module (a language runtime) runs.")
    version: str | None = None
    vars: dict[VarName, str] = Field(default_factory=dict)
    folders: list[FolderConfig] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)
    wasi_nn: WasiNnConfig = Field(default_factory=WasiNnConfig)
    kv: KvConfig | None = Field(None, description="A key/value store (wws [data.kv]); none unless set.")
    http_requests: HttpRequestsConfig | None = Field(
        None, description="Outbound HTTP (wws [features.http_requests]); none unless set."
    )
    binary_body: Literal["empty", "base64"] = Field(
        "base64",
        description="A request body that is not UTF-8 reaches the worker base64-encoded, with \"base64\": true "
        "in the request (`base64`), or as \"\" as wws sends it (`empty`, the default in a wws folder).",
    )

    @field_validator("route")
    @classmethod
    def _route(cls, v: str) -> str:
        return check_route(v)

    @model_validator(mode="after")
    def _one_module(self) -> WorkerConfig:
        if (self.module is None) == (self.oci is None):
            raise ValueError("set exactly one of module (a file) and oci (an artifact in a registry)")
        if self.oci is not None and self.signature is not None:
            raise ValueError("signature: an OCI module's signature is attached to its artifact, not a file")
        return self

    @property
    def module_file(self) -> Path:
        """The module's file; an OCI module has one once pulled (supply/sources.py)."""
        if self.module is None:
            raise ConfigError(f"worker {self.name!r}: its module {self.oci.reference if self.oci else ''} was not pulled")
        return self.module

    @property
    def module_label(self) -> str:
        return str(self.module) if self.module is not None else f"oci {self.oci.reference if self.oci else ''}"


# The exit code of `wasminfer serve` when exit_on_load_failure stops it; its termination log then
# says what failed and why (the operator reads it from the pod's status).
LOAD_FAILURE_EXIT = 3


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    public_dir: Path | None = Field(None, description="Static files served at '/' when no worker route matches.")
    cache_dir: Path | None = Field(None, description="Compiled-module cache; ~/.cache/wasminfer when unset.")
    exit_on_load_failure: bool = Field(
        False,
        description="Stop with exit code 3 when a worker or model fails to load, instead of serving the rest "
        "(in a pod, the restart and its message tell the operator).",
    )
    termination_log: Path | None = Field(
        None, description="Where to write why loading failed before exiting (a pod's /dev/termination-log)."
    )
    shutdown_grace_seconds: Annotated[float, Field(ge=0, le=3600)] = Field(
        25.0,
        description="On SIGTERM, how long requests in flight may take to finish; those still running near its "
        "end stop and get 504. Keep it below the pod's terminationGracePeriodSeconds (30 by default).",
    )
    model_isolation: Literal["process", "in-process"] = Field(
        "process",
        description="Where models load and inferences run: 'process' puts each named model, and each worker's "
        "guest-loaded models, in its own supervised model host process; 'in-process' keeps them in the runtime.",
    )
    model_host_poll_us: Annotated[int, Field(ge=0, le=10_000)] = Field(
        0,
        description="How long the runtime and a model host poll for each other's next message before sleeping, "
        "in microseconds, while answers come that fast: a shorter round trip per inference for CPU time; "
        "0 never polls.",
    )
    header_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(
        10.0,
        description="A connection whose next request's headers are not complete this long after it opened "
        "(or after the previous response) is closed, with 408 if the request had begun; idle keep-alive "
        "connections close after this long too.",
    )
    body_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(
        30.0,
        description="A worker request whose whole body has not arrived this long after its headers gets 408 "
        "and its connection is closed.",
    )
    processes: Annotated[int, Field(ge=1, le=1024)] | None = Field(
        None,
        description="Serving processes sharing the port (each serves its share of the connections; named models "
        "load once, in hosts all of them use). Unset: the CPU limit of the process's cgroup (a pod's), rounded "
        "up, or else the cores it may run on; one when a worker has a key/value store.",
    )
    registries: RegistryAccessConfig = Field(default_factory=RegistryAccessConfig)
    signatures: SignaturePolicy | None = Field(
        None,
        description="Signatures every module and model must carry (cosign key pairs), checked before anything is "
        "compiled or loaded; a worker or model may set its own. Unset: none are checked.",
    )
    wws_compat: bool = Field(
        False,
        description="Answer as wws 1.7.0 does (`serve DIR` sets it): its bodies for a failed worker and for a "
        "path nothing serves, worker responses read as strictly as wws reads them; the reason goes to the "
        "log and the X-Wasminfer-Error header. Otherwise errors are JSON {error, worker, message}.",
    )


class RuntimeConfig(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    models: list[ModelConfig] = Field(default_factory=list)
    workers: list[WorkerConfig] = Field(default_factory=list)
    # Workers of a wws folder whose own configuration is wrong (name -> why): they keep their route
    # and answer 503 with the reason, while the others serve. Never part of a runtime.yaml.
    worker_errors: dict[str, str] = Field(default_factory=dict, exclude=True)

    @model_validator(mode="after")
    def _unique_names(self) -> RuntimeConfig:
        for kind, names in (("models", [m.name for m in self.models]), ("workers", [w.name for w in self.workers])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"duplicate {kind} name(s): {', '.join(dupes)}")
        known = {m.name for m in self.models}
        for i, w in enumerate(self.workers):
            missing = [m for m in w.wasi_nn.models if m not in known]
            if missing:
                raise ValueError(f"workers[{i}] ({w.name}): wasi_nn.models names unknown model(s): {', '.join(missing)}")
        return self

    def resolve_paths(self, base: Path) -> RuntimeConfig:
        """Make relative paths relative to the config file's folder, as users expect."""

        def res(p: Path) -> Path:
            return p if p.is_absolute() else (base / p).resolve()

        def res_policy(policy: SignaturePolicy | None) -> None:
            if policy is not None:
                policy.keys = [res(k) for k in policy.keys]
                if policy.sigstore is not None:
                    policy.sigstore.trusted_root = res(policy.sigstore.trusted_root)

        data = self.model_copy(deep=True)
        for m in data.models:
            m.files = [res(f) for f in m.files]
            m.folder = None if m.folder is None else res(m.folder)
            res_policy(m.signatures)
        for w in data.workers:
            w.module = None if w.module is None else res(w.module)
            w.signature = None if w.signature is None else res(w.signature)
            res_policy(w.signatures)
            for f in w.folders:
                f.from_ = res(f.from_)
            if w.source is not None:
                w.source.file = res(w.source.file)
                w.source.wrapper = None if w.source.wrapper is None else res(w.source.wrapper)
                w.source.files = [res(f) for f in w.source.files]
        if data.server.public_dir is not None:
            data.server.public_dir = res(data.server.public_dir)
        if data.server.cache_dir is not None:
            data.server.cache_dir = res(data.server.cache_dir)
        res_policy(data.server.signatures)
        access = data.server.registries
        access.ca_file = None if access.ca_file is None else res(access.ca_file)
        access.auth_file = None if access.auth_file is None else res(access.auth_file)
        return data


def expand_env_vars(vars: Mapping[str, str], env: Mapping[str, str], source: str) -> dict[str, str]:
    """A var whose whole value is "$NAME" takes the host's environment variable NAME (as wws does).

    The operator relies on this to hand Secret values to guests without writing them into a ConfigMap.
    """
    out: dict[str, str] = {}
    for key, value in vars.items():
        if value.startswith("$") and " " not in value:
            name = value[1:]
            if name not in env:
                log.warning("%s: vars.%s takes $%s, which is not set; the worker gets an empty value", source, key, name)
            value = env.get(name, "")
        out[key] = value
    return out


def format_validation_error(source: str, err: ValidationError) -> str:
    lines = [f"{source}: invalid configuration"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {key}: {e['msg']}")
    return "\n".join(lines)


def parse_runtime_config(data: Any, source: str) -> RuntimeConfig:
    try:
        return RuntimeConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(source, err)) from None


def decode_utf8(path: Path, raw: bytes, error: type[Exception]) -> str:
    """A configuration file's text; `error` names the file and the first byte that is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise error(f"{path}: not UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start})") from None


def read_yaml_file(path: Path, error: type[Exception]) -> Any:
    """A YAML file's data ({} when empty); `error` says which file could not be read or parsed."""
    try:
        text = decode_utf8(path, path.read_bytes(), error)
    except OSError as err:
        raise error(f"{path}: cannot read: {err.strerror}") from None
    import yaml  # only for a runtime.yaml: `wasminfer run` never reads one

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise error(f"{path}: not valid YAML: {err}") from None
    return {} if data is None else data


_Model = TypeVar("_Model", bound=BaseModel)


def read_toml_file(path: Path, model: type[_Model]) -> _Model:
    """A TOML file validated as `model` (raises ConfigError naming the file, and the key when one is wrong)."""
    try:
        data = tomllib.loads(decode_utf8(path, path.read_bytes(), ConfigError))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(str(path), err)) from None


def load_runtime_config(path: Path) -> RuntimeConfig:
    """Read and validate runtime.yaml; relative paths are taken from the file's folder."""
    cfg = parse_runtime_config(read_yaml_file(path, ConfigError), str(path)).resolve_paths(path.parent.resolve())
    for i, worker in enumerate(cfg.workers):
        worker.vars = expand_env_vars(worker.vars, os.environ, f"{path}: workers[{i}]")
    return cfg


def dump_runtime_config(cfg: RuntimeConfig) -> str:
    """YAML text for a config, as the operator writes it into a ConfigMap."""
    import yaml

    return yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=False)
