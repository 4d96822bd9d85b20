"""The wasminfer.dev/v1alpha1 API: InferenceModel and WasmWorker, defined once.

These pydantic models are the single source of truth: `crdgen` turns them into the CRDs in `crds/`
(descriptions for `kubectl explain`, defaults, CEL rules for what a schema alone cannot say), and the
operator parses every object it reads with them. Each CEL rule has a Python twin in a validator so that
an object the API server would refuse is refused here too, with the same message.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict, JsonValue

from wasminfer_operator.names import API_VERSION as API_VERSION  # the API's identity, with its models
from wasminfer_operator.names import GROUP as GROUP
from wasminfer_operator.names import VERSION as VERSION
from wasminfer_runtime import formats
from wasminfer_runtime.config import (
    HTTP_METHODS,
    BackendName,
    Device,
    HttpRequestsConfig,
    KvConfig,
    ModelFormat,
    PerformanceHint,
    Precision,
)
from wasminfer_runtime.config import VAR_NAME_RE, check_var_name
from wasminfer_runtime.config import Limits as RuntimeLimits
from wasminfer_runtime.config import ModelConfig as RuntimeModel
from wasminfer_runtime.config import ModelOptions as RuntimeModelOptions
from wasminfer_runtime.config import RemoteModel
from wasminfer_runtime.config import WorkerConfig as RuntimeWorker
from wasminfer_runtime.routing import RESERVED_PATHS, RESERVED_RE, ROUTE_RE, check_route

SHA256_RE = r"^[0-9a-f]{64}$"
DIGEST_RE = r"^sha256:[0-9a-f]{64}$"
# An OCI artifact's reference with its registry always named (a host with a dot or a port, or localhost),
# and a tag, a digest or both.
OCI_REFERENCE_RE = (
    r"^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+(?::[0-9]+)?|[A-Za-z0-9-]+:[0-9]+|localhost)/[a-z0-9]+([._/-][a-z0-9]+)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127}(@sha256:[0-9a-f]{64})?|@sha256:[0-9a-f]{64})$"
)
# A cosign sign-blob signature (base64 of the DER signature: RSA-4096's is 684 characters), or a
# keyless Sigstore bundle, base64-encoded (a few KiB).
SIGNATURE_RE = r"^[A-Za-z0-9+/]+={0,2}$"
FILE_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
DNS_SUBDOMAIN_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL_RE = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
PROFILE_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ENV_NAME_RE = r"^[A-Za-z_][A-Za-z0-9_]*$"
# What an allowed host of outbound HTTP can match (http_requests.py compares it, without case, with a
# URL's host): a DNS name (an IDN in its xn-- form) or IPv4 address, or an IPv6 address (two colons at
# least) with or without brackets. A scheme, port, path or wildcard would never match: refused, not kept dead.
HOST_RE = (
    r"^([A-Za-z0-9_]([-A-Za-z0-9_]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([-A-Za-z0-9_]{0,61}[A-Za-z0-9_])?)*"
    r"|\[[0-9A-Fa-f.]*:[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*\]|[0-9A-Fa-f.]*:[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*)$"
)
# An image reference as the container runtimes parse it (the grammar of distribution's `reference`
# package): [host[:port]/]path[:tag][@digest], the path in lowercase. The kubelet refuses anything else
# (InvalidImageName) after the API server stored it; here it is refused at admission.
_IMAGE_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_HOST_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
IMAGE_RE = (
    rf"^(?:(?:{_IMAGE_HOST_PART}(?:\.{_IMAGE_HOST_PART})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?/)?"
    rf"{_IMAGE_PATH}(?:/{_IMAGE_PATH})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
QUANTITY_RE = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"


_EMPTY_DEFAULT: JsonDict = {"default": {}}  # so the server applies the defaults nested inside


def rules(*items: tuple[str, str] | tuple[str, str, str]) -> JsonDict:
    """`x-kubernetes-validations` for a schema node: (CEL rule, message[, fieldPath])."""
    out: list[JsonValue] = []
    for item in items:
        rule: JsonDict = {"rule": item[0], "message": item[1]}
        if len(item) == 3:
            rule["fieldPath"] = item[2]
        out.append(rule)
    return {"x-kubernetes-validations": out}


def cel_string(text: str) -> str:
    """`text` as a CEL string literal (for a regex shared with Python: backslashes doubled)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def full_match(pattern: str, value: str) -> bool:
    """Whether `value` matches a pattern written for both Python and RE2 (`$` is the end of the text)."""
    return re.fullmatch(pattern, value) is not None


def _check_quantity(v: int | str) -> int | str:
    if isinstance(v, str) and not re.match(QUANTITY_RE, v):
        raise ValueError(f"{v!r} is not a Kubernetes quantity (e.g. 500m, 2, 1Gi)")
    return v


Quantity = Annotated[
    int | str,
    AfterValidator(_check_quantity),
    WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string"}], "pattern": QUANTITY_RE, "x-kubernetes-int-or-string": True}),
]

AnyObject = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]


class _Api(BaseModel):
    """Base of every API type: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def wire(self) -> dict[str, Any]:
        """The object as it appears in the API (camelCase, unset optionals left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _exactly_one(obj: BaseModel, names: tuple[str, ...], what: str) -> None:
    present = [n for n in names if getattr(obj, n) is not None]
    if len(present) != 1:
        camel = ", ".join(to_camel(n) for n in names)
        raise ValueError(f"{what}: set exactly one of {camel}")


def _runtime_default(model: type[BaseModel], name: str) -> Any:
    """The runtime's default for a runtime.yaml key, for the API field that renders into it."""
    return model.model_fields[name].get_default(call_default_factory=True)


def _runtime_bounds(model: type[BaseModel], name: str) -> dict[str, Any]:
    """The bounds the runtime puts on a runtime.yaml key (ge, le, min_length...), as Field arguments, so
    that the API field rendering into it admits what the runtime accepts and no more."""
    out: dict[str, Any] = {}
    for meta in model.model_fields[name].metadata:
        for key in ("gt", "ge", "lt", "le", "min_length", "max_length"):
            if getattr(meta, key, None) is not None:
                out[key] = getattr(meta, key)
    return out


def _from_runtime(model: type[BaseModel], name: str, description: str, **kwargs: Any) -> Any:
    """A Field with the default and bounds of the runtime.yaml key it renders into (declared once, there)."""
    return Field(_runtime_default(model, name), **_runtime_bounds(model, name), description=description, **kwargs)


# --- artifact sources ------------------------------------------------------------------------------


class KeySelector(_Api):
    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN_RE, description="Name of the ConfigMap or Secret.")
    key: str = Field(max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="Key to read.")
    optional: bool | None = Field(default=None, description="Start even if the object or key is missing.")


class HttpsFile(_Api):
    """A file downloaded over HTTPS by the pod's fetch step and checked against its sha256."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            ("isURL(self.url) && url(self.url).getScheme() == 'https'", "url must be an https:// URL", ".url"),
            ("self.sha256.matches('^[0-9a-f]{64}$')", "sha256 must be 64 lowercase hex digits", ".sha256"),
            (
                "has(self.name) || self.url.matches('^https://[^?#]*/[A-Za-z0-9][A-Za-z0-9._-]*([?#].*)?$')",
                "the url path must end in a file name, or name must be set",
                ".url",
            ),
        )
    )

    url: str = Field(max_length=2048, description="https:// URL of the file.")
    sha256: str = Field(max_length=64, description="Expected sha256 of the file, 64 lowercase hex digits.")
    name: str | None = Field(
        default=None,
        max_length=253,
        pattern=FILE_NAME_RE,
        description="File name inside the pod. Defaults to the last segment of the URL path.",
    )
    signature: str | None = Field(
        default=None, max_length=32768, pattern=SIGNATURE_RE,
        description="The file's cosign sign-blob signature (base64), or its Sigstore bundle (base64 of the JSON), checked "
        "with the signature policy when the pod fetches it.",
    )

    @field_validator("url")
    @classmethod
    def _https(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme != "https" or not parts.netloc:
            raise ValueError("url must be an https:// URL")
        return v

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, v: str) -> str:
        if not re.match(SHA256_RE, v):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        return v

    @model_validator(mode="after")
    def _named(self) -> HttpsFile:
        if self.name is None and not re.search(r"/[A-Za-z0-9][A-Za-z0-9._-]*$", urlsplit(self.url).path):
            raise ValueError("the url path must end in a file name, or name must be set")
        return self

    @property
    def file_name(self) -> str:
        return self.name or urlsplit(self.url).path.rsplit("/", 1)[-1]


class HttpsSource(_Api):
    """Files downloaded over HTTPS."""

    files: list[HttpsFile] = Field(min_length=1, max_length=8, description="The files, each with its sha256.")


class ConfigMapFile(_Api):
    key: str = Field(max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="Key in the ConfigMap (data or binaryData); also the file name.")
    sha256: str | None = Field(default=None, max_length=64, pattern=SHA256_RE, description="Optional sha256 the value must have.")
    signature: str | None = Field(
        default=None, max_length=32768, pattern=SIGNATURE_RE,
        description="The file's cosign sign-blob signature (base64), or its Sigstore bundle (base64 of the JSON), checked "
        "with the signature policy when the pod fetches it.",
    )


class ConfigMapSource(_Api):
    """Files stored in a ConfigMap of the same namespace (small artifacts: a ConfigMap holds at most 1 MiB)."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN_RE, description="Name of the ConfigMap.")
    files: list[ConfigMapFile] = Field(min_length=1, max_length=8, description="Keys of the ConfigMap to use, in order.")


class PvcFile(_Api):
    model_config = ConfigDict(
        json_schema_extra=rules(
            (
                "!self.path.startsWith('/') && !self.path.split('/').exists(s, s == '..')",
                "path must be relative to the volume root and must not contain '..'",
                ".path",
            )
        )
    )

    path: str = Field(max_length=1024, description="Path of the file relative to the root of the volume.")
    sha256: str | None = Field(default=None, max_length=64, pattern=SHA256_RE, description="Optional sha256 the file must have.")
    signature: str | None = Field(
        default=None, max_length=32768, pattern=SIGNATURE_RE,
        description="The file's cosign sign-blob signature (base64), or its Sigstore bundle (base64 of the JSON), checked "
        "with the signature policy when the pod fetches it.",
    )

    @field_validator("path")
    @classmethod
    def _relative(cls, v: str) -> str:
        if v.startswith("/") or ".." in v.split("/"):
            raise ValueError("path must be relative to the volume root and must not contain '..'")
        return v

    @property
    def file_name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]


class PvcSource(_Api):
    """Files on a PersistentVolumeClaim of the same namespace, mounted read-only (large models)."""

    claim_name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN_RE, description="Name of the PersistentVolumeClaim.")
    files: list[PvcFile] = Field(min_length=1, max_length=8, description="Files on the volume, in order.")


class OciSource(_Api):
    """An OCI artifact: a module as wkg or Spin publish it, or a model folder as `oras push` and `wasminfer
    push` publish it (one layer per file). Its manifest and every blob are checked against their digests."""

    reference: str = Field(
        max_length=1024, pattern=OCI_REFERENCE_RE,
        description="registry[:port]/repository:tag, or @sha256:… . A tag is resolved to a digest once, reported in "
        "status, and the pods use that digest: a tag pushed again changes nothing until the operator's next check "
        "resolves it to the new digest and rolls the pods out.",
    )
    layer: str | None = Field(
        default=None, max_length=71, pattern=DIGEST_RE,
        description="Modules only: the digest of the Wasm layer to run, in an artifact with several (a Spin application).",
    )
    pull_secret: str | None = Field(
        default=None, max_length=253, pattern=DNS_SUBDOMAIN_RE,
        description="A kubernetes.io/dockerconfigjson Secret of the namespace with the registry login (as in imagePullSecrets).",
    )
    ca: KeySelector | None = Field(
        default=None, description="A ConfigMap key holding the CA certificate (PEM) of a registry with its own CA."
    )


class SigstoreIdentity(_Api):
    identity: str = Field(min_length=1, max_length=1024, description="The signing certificate's e-mail or URI (a CI workflow's).")
    issuer: str = Field(min_length=1, max_length=1024, description="The OIDC issuer that vouched for it.")


class SigstorePolicy(_Api):
    """Keyless signatures: Sigstore bundles, verified offline against a trusted root."""

    trusted_root: KeySelector = Field(description="A ConfigMap key of the namespace holding a Sigstore trusted_root.json.")
    identities: list[SigstoreIdentity] = Field(min_length=1, max_length=16, description="Who may have signed; any of them.")


class SignaturePolicy(_Api):
    """Signatures the module or the model files must carry, checked before anything is loaded: by the
    operator for an OCI artifact (the signature cosign attached to its digest), and by each pod's fetch
    step where the bytes land, for every source."""

    model_config = ConfigDict(
        json_schema_extra=rules(("size(self.keys) > 0 || has(self.sigstore)", "set keys, sigstore or both: whose signatures verify"))
    )

    keys: list[KeySelector] = Field(
        default_factory=list, max_length=8,
        description="ConfigMap keys of the namespace holding trusted PEM public keys (cosign.pub); a signature by any of them verifies.",
    )
    sigstore: SigstorePolicy | None = Field(
        default=None,
        description="Keyless: a file's `signature` may be a Sigstore bundle by one of these identities (OCI artifacts need keys so far).",
    )
    required: bool = Field(
        default=True,
        description="Refuse what carries no signature. false: a signature present must verify; what has none loads.",
    )

    @model_validator(mode="after")
    def _trusts_someone(self) -> SignaturePolicy:
        if not self.keys and self.sigstore is None:
            raise ValueError("set keys, sigstore or both: whose signatures verify")
        return self


class Source(_Api):
    """Where an artifact comes from: exactly one of https, configMap, pvc or oci."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            (
                "[has(self.https), has(self.configMap), has(self.pvc), has(self.oci)].filter(x, x).size() == 1",
                "set exactly one of https, configMap, pvc or oci",
            )
        )
    )

    https: HttpsSource | None = Field(default=None, description="Download the files over HTTPS, checking each sha256.")
    config_map: ConfigMapSource | None = Field(default=None, description="Take the files from a ConfigMap.")
    pvc: PvcSource | None = Field(default=None, description="Read the files from a PersistentVolumeClaim.")
    oci: OciSource | None = Field(default=None, description="Pull an artifact from an OCI registry.")

    @model_validator(mode="after")
    def _one_kind(self) -> Source:
        _exactly_one(self, ("https", "config_map", "pvc", "oci"), "source")
        return self

    def file_count(self) -> int | None:
        """How many files the source names (None for an artifact: its files are known once pulled)."""
        if self.oci is not None:
            return None
        kind = self.https or self.config_map or self.pvc
        assert kind is not None
        return len(kind.files)

    def named_paths(self) -> list[str]:
        """What names each file, as the CEL rules see it: an https file's name or URL path, a key, a path."""
        if self.oci is not None:
            return []
        if self.https is not None:
            return [f.name or urlsplit(f.url).path for f in self.https.files]
        if self.config_map is not None:
            return [f.key for f in self.config_map.files]
        assert self.pvc is not None
        return [f.path for f in self.pvc.files]

    def file_names(self) -> list[str]:
        if self.oci is not None:
            return []
        if self.https is not None:
            return [f.file_name for f in self.https.files]
        if self.config_map is not None:
            return [f.key for f in self.config_map.files]
        assert self.pvc is not None
        return [f.file_name for f in self.pvc.files]


_FILE_COUNT_CEL = (
    "(has(self.source.https) ? self.source.https.files.size() : "
    "has(self.source.configMap) ? self.source.configMap.files.size() : "
    "has(self.source.pvc) ? self.source.pvc.files.size() : 0)"
)


def _ir_files_cel() -> str:
    """CEL: an openvino model's source names two files, the .xml then the .bin (Source.named_paths)."""

    def https(i: int, suffix: str) -> str:
        f = f"self.source.https.files[{i}]"
        url = cel_string("^https://[^?#]*" + re.escape(suffix) + "([?#].*)?$")
        return f"(has({f}.name) ? {f}.name.endsWith('{suffix}') : {f}.url.matches({url}))"

    def named(kind: str, field: str) -> str:
        files = f"self.source.{kind}.files"
        return f"{files}.size() == 2 && {files}[0].{field}.endsWith('.xml') && {files}[1].{field}.endsWith('.bin')"

    return (
        "self.format != 'openvino' || (has(self.source.https) ? self.source.https.files.size() == 2 && "
        f"{https(0, '.xml')} && {https(1, '.bin')} : has(self.source.configMap) ? ({named('configMap', 'key')}) : "
        f"has(self.source.pvc) ? ({named('pvc', 'path')}) : true)"
    )


_MODULE_LAYER = "oci.layer chooses a module's Wasm layer; a model's artifact gives all its files"
_ONE_SERVING = "set at most one of serving (model servers of its own) and pool (a ModelPool's)"
_IR_FILES = "format openvino takes two files: the model's .xml, then its .bin (pods fetch only the files named)"


# --- InferenceModel --------------------------------------------------------------------------------


class ModelOptions(_Api):
    """Backend options for compiling the model (the runtime's ModelOptions: same defaults and bounds)."""

    precision: Precision = _from_runtime(RuntimeModelOptions, "precision", "Inference precision (f32, f16, bf16).")
    performance_hint: PerformanceHint = _from_runtime(RuntimeModelOptions, "performance_hint", "OpenVINO performance hint.")
    streams: int | None = _from_runtime(
        RuntimeModelOptions, "streams", "Parallel inference streams; the backend decides when unset."
    )
    pool_size: int = _from_runtime(RuntimeModelOptions, "pool_size", "Infer requests kept ready for concurrent calls.")
    max_dynamic_dim: int = _from_runtime(
        RuntimeModelOptions, "max_dynamic_dim",
        "Largest value a worker may give a dynamic dimension of an input (a batch of N); larger is refused.",
    )
    max_output_bytes: int = _from_runtime(
        RuntimeModelOptions, "max_output_bytes", "Largest output one inference may produce; a larger one fails the compute."
    )


def _cel_list(values: tuple[Any, ...]) -> str:
    return "[" + ", ".join(cel_string(v.value) for v in values) + "]"


def table_rules() -> list[tuple[str, str, str]]:
    """CEL rules from the format/backend/device table (wasminfer_runtime.formats): the backend must read
    the format, and the backend (the format's default when unset) must run on the device. A rule is made
    only where the table restricts something."""
    out: list[tuple[str, str, str]] = []
    for fmt in ModelFormat:
        if set(formats.readers(fmt)) != set(BackendName):
            out.append((
                f"self.format != {cel_string(fmt.value)} || !has(self.backend) || self.backend in {_cel_list(formats.readers(fmt))}",
                formats.format_message(fmt),
                ".backend",
            ))
    defaults = ", ".join(f"{cel_string(f.value)}: {cel_string(formats.default_backend(f).value)}" for f in ModelFormat)
    backend = f"(has(self.backend) ? self.backend : {{{defaults}}}[self.format])"
    for b in BackendName:
        if set(formats.devices(b)) != set(Device):
            out.append((
                f"{backend} != {cel_string(b.value)} || self.device in {_cel_list(formats.devices(b))}",
                formats.device_message(b),
                ".device",
            ))
    return out


class InferenceModelSpec(_Api):
    """A named model, compiled once in every runtime pod of the workers that use it, or served by model
    servers of its own (`serving`) that those workers call."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            *table_rules(),
            (f"self.format != 'onnx' || has(self.source.oci) || {_FILE_COUNT_CEL} == 1", "format onnx takes exactly one file", ".source"),
            (_ir_files_cel(), _IR_FILES, ".source"),
            ("!has(self.serving) || !has(self.pool)", _ONE_SERVING, ".pool"),
            ("!has(self.source.oci) || !has(self.source.oci.layer)", _MODULE_LAYER, ".source"),
        )
    )

    format: ModelFormat = Field(description="Model format: openvino (IR, model.xml + model.bin) or onnx.")
    source: Source = Field(description="Where the model files come from. For openvino the .xml first, then its .bin.")
    signatures: SignaturePolicy | None = Field(
        default=None, description="Signatures the model's files must carry; a namespace's policy in the operator configuration applies as well."
    )
    backend: BackendName | None = Field(
        default=None, description="Inference backend: openvino or onnxruntime. Defaults from the format (openvino for both)."
    )
    device: Device = Field(
        default=Device.CPU,
        description="Device the model runs on: CPU, GPU, NPU or AUTO. GPU with backend openvino means an Intel GPU, "
        "GPU with backend onnxruntime an NVIDIA GPU (CUDA). Decides the device profile of workers using the model.",
    )
    options: ModelOptions = Field(default_factory=ModelOptions, json_schema_extra=_EMPTY_DEFAULT, description="Backend options.")
    memory_mib: int | None = _from_runtime(
        RuntimeModel, "memory_mib", alias="memoryMiB",
        description="Memory cap of the model's host process in each runtime pod, beyond what the backend's libraries "
        "take; past it the model's loads and inferences fail and the pod serves on. Unset: only the pod's limit applies.",
    )
    pool: str | None = Field(
        default=None,
        max_length=63,
        pattern=DNS_LABEL_RE,
        description="Name of a ModelPool of the same namespace whose replicas serve the model, instead of model servers "
        "of its own (serving). WasmWorkers using it call the replicas that hold it.",
    )
    serving: ModelServing | None = Field(
        default=None,
        description="Serve the model from model servers of its own (`wasminfer model-server`, Open Inference Protocol "
        "v2) on the nodes of its device profile. WasmWorkers using it then call them over the network instead of "
        "loading a copy, so they run on CPU nodes. Unset: every runtime pod of those workers loads the model.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> InferenceModelSpec:
        # The twin of table_rules(): the same table, the same messages.
        error = formats.backend_error(self.format, self.resolved_backend)
        if error:
            raise ValueError(f"backend: {error}")
        error = formats.device_error(self.resolved_backend, self.device)
        if error:
            raise ValueError(f"device: {error}")
        n = self.source.file_count()
        if self.format is ModelFormat.onnx and n is not None and n != 1:
            raise ValueError("source: format onnx takes exactly one file")
        names = self.source.named_paths()
        if self.format is ModelFormat.openvino and n is not None and not (n == 2 and names[0].endswith(".xml") and names[1].endswith(".bin")):
            raise ValueError(f"source: {_IR_FILES}")
        if self.serving is not None and self.pool is not None:
            raise ValueError(f"pool: {_ONE_SERVING}")
        if self.source.oci is not None and self.source.oci.layer is not None:
            raise ValueError(f"source: {_MODULE_LAYER}")
        return self

    @property
    def served(self) -> bool:
        """Loaded by model servers (its own, or a pool's) rather than by the workers using it."""
        return self.serving is not None or self.pool is not None

    @property
    def resolved_backend(self) -> BackendName:
        return self.backend or formats.default_backend(self.format)


# --- WasmWorker ------------------------------------------------------------------------------------


class EnvVarSource(_Api):
    model_config = ConfigDict(
        json_schema_extra=rules(("has(self.configMapKeyRef) != has(self.secretKeyRef)", "set exactly one of configMapKeyRef or secretKeyRef"))
    )

    config_map_key_ref: KeySelector | None = Field(default=None, description="A key of a ConfigMap.")
    secret_key_ref: KeySelector | None = Field(default=None, description="A key of a Secret.")

    @model_validator(mode="after")
    def _one(self) -> EnvVarSource:
        _exactly_one(self, ("config_map_key_ref", "secret_key_ref"), "valueFrom")
        return self


class EnvVar(_Api):
    """An environment variable of the runtime container, also given to the guest as a var of the same name."""

    model_config = ConfigDict(json_schema_extra=rules(("!(has(self.value) && has(self.valueFrom))", "value and valueFrom are mutually exclusive")))

    name: str = Field(max_length=128, pattern=ENV_NAME_RE, description="Variable name.")
    value: str | None = Field(default=None, max_length=32768, description="Literal value.")
    value_from: EnvVarSource | None = Field(default=None, description="Read the value from a ConfigMap or Secret key.")

    @model_validator(mode="after")
    def _exclusive(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError(f"env {self.name}: value and valueFrom are mutually exclusive")
        return self


class ConfigMapVolume(_Api):
    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN_RE, description="Name of the ConfigMap.")


class SecretVolume(_Api):
    secret_name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN_RE, description="Name of the Secret.")


class PvcVolume(_Api):
    claim_name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN_RE, description="Name of the PersistentVolumeClaim.")


class EmptyDirVolume(_Api):
    size_limit: Quantity | None = Field(default=None, description="Size limit of the scratch folder.")


class Folder(_Api):
    """A volume preopened in the guest as a directory; read-only unless writable."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            (
                "[has(self.configMap), has(self.secret), has(self.persistentVolumeClaim), has(self.emptyDir)].filter(x, x).size() == 1",
                "set exactly one of configMap, secret, persistentVolumeClaim or emptyDir",
            ),
            ("self.path.startsWith('/')", "path must be absolute (start with '/')", ".path"),
            (
                "!has(self.writable) || !self.writable || has(self.persistentVolumeClaim) || has(self.emptyDir)",
                "only persistentVolumeClaim and emptyDir folders can be writable",
                ".writable",
            ),
        )
    )

    path: str = Field(max_length=1024, description="Directory in the guest, absolute (e.g. /data).")
    writable: bool = Field(default=False, description="Let the guest write to the folder.")
    config_map: ConfigMapVolume | None = Field(default=None, description="Files of a ConfigMap.")
    secret: SecretVolume | None = Field(default=None, description="Files of a Secret.")
    persistent_volume_claim: PvcVolume | None = Field(default=None, description="A PersistentVolumeClaim.")
    empty_dir: EmptyDirVolume | None = Field(default=None, description="A scratch folder private to the pod.")

    @model_validator(mode="after")
    def _check(self) -> Folder:
        _exactly_one(self, ("config_map", "secret", "persistent_volume_claim", "empty_dir"), f"folder {self.path}")
        if not self.path.startswith("/"):
            raise ValueError(f"folder {self.path}: path must be absolute (start with '/')")
        if self.writable and self.persistent_volume_claim is None and self.empty_dir is None:
            raise ValueError(f"folder {self.path}: only persistentVolumeClaim and emptyDir folders can be writable")
        return self


class WorkerLimits(_Api):
    """Per-request limits the runtime enforces on the guest (the runtime's Limits: same defaults and bounds)."""

    memory_mib: int = _from_runtime(RuntimeLimits, "memory_mib", "Linear memory cap per request, in MiB.", alias="memoryMiB")
    timeout_seconds: float = _from_runtime(RuntimeLimits, "timeout_seconds", "Execution timeout per request, in seconds.")
    max_body_bytes: int = _from_runtime(RuntimeLimits, "max_body_bytes", "Largest request body accepted, in bytes.")
    max_kv_bytes: int = _from_runtime(
        RuntimeLimits, "max_kv_bytes",
        description="Largest key/value store (UTF-8 bytes of its keys and values) the worker may write; a larger one "
        "gets 500 kv_too_large and the store keeps its previous state.",
    )


class KvStore(_Api):
    """The worker's key/value store (wws `[data.kv]`)."""

    namespace: str = Field(
        **_runtime_bounds(KvConfig, "namespace"),
        max_length=253,
        description="Name of the store. It is shared only inside one runtime pod, and a pod serves one WasmWorker, so "
        "the name does not connect WasmWorkers.",
    )


def _check_method(v: str) -> str:
    if v not in HTTP_METHODS:
        raise ValueError(f"{v!r} is not a method the runtime knows (in capitals: {', '.join(HTTP_METHODS)})")
    return v


HttpMethod = Annotated[str, AfterValidator(_check_method), WithJsonSchema({"type": "string", "enum": list(HTTP_METHODS)})]
AllowedHost = Annotated[str, Field(max_length=253, pattern=HOST_RE)]


class HttpRequests(_Api):
    """Outbound HTTP from the guest (wws `[features.http_requests]`): only to these hosts, with these methods."""

    allowed_hosts: list[AllowedHost] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Hosts a request may go to, on any port, compared without case: DNS names (an IDN in its xn-- "
        "form) or IP addresses (IPv6 in its short form, 2001:db8::1, with or without brackets), without scheme, "
        "port or path. Each redirect hop must be allowed too. Empty: every request is refused.",
    )
    allowed_methods: list[HttpMethod] = Field(
        default_factory=lambda: list(_runtime_default(HttpRequestsConfig, "allowed_methods")),
        max_length=len(HTTP_METHODS),
        json_schema_extra={"x-kubernetes-list-type": "set", "default": _runtime_default(HttpRequestsConfig, "allowed_methods")},
        description=f"Methods a request may use, in capitals: any of {', '.join(HTTP_METHODS)}.",
    )
    allow_http: bool = Field(
        _runtime_default(HttpRequestsConfig, "allow_http"), description="Allow http:// URLs; only https:// otherwise."
    )
    timeout_seconds: float = Field(
        _runtime_default(HttpRequestsConfig, "timeout_seconds"),
        **_runtime_bounds(HttpRequestsConfig, "timeout_seconds"),
        description="A request, redirects and body included, fails with timeout after this long; the worker's own "
        "limits.timeoutSeconds bounds it too.",
    )
    max_request_body_bytes: int = Field(
        _runtime_default(HttpRequestsConfig, "max_request_body_bytes"),
        **_runtime_bounds(HttpRequestsConfig, "max_request_body_bytes"),
        description="A larger request body fails with invalid-request-body.",
    )
    max_response_body_bytes: int = Field(
        _runtime_default(HttpRequestsConfig, "max_response_body_bytes"),
        **_runtime_bounds(HttpRequestsConfig, "max_response_body_bytes"),
        description="A larger response body fails with invalid-response-body.",
    )

    @field_validator("allowed_hosts", "allowed_methods")
    @classmethod
    def _sets(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("must not repeat a value")
        return v


class ResourceRequirements(_Api):
    """Compute resources of the runtime container; the device profile adds its device resources."""

    requests: dict[str, Quantity] = Field(default_factory=dict, description="Minimum resources, e.g. cpu: 500m.")
    limits: dict[str, Quantity] = Field(default_factory=dict, description="Maximum resources, e.g. memory: 2Gi.")


class Toleration(_Api):
    """A core/v1 Toleration: lets the pods run on nodes with a matching taint."""

    key: str | None = Field(default=None, max_length=316, description="Taint key; empty with operator Exists matches all taints.")
    operator: Literal["Exists", "Equal"] | None = Field(default=None, description="Exists or Equal (default).")
    value: str | None = Field(default=None, max_length=63, description="Taint value for operator Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(default=None, description="Taint effect; empty matches all.")
    toleration_seconds: int | None = Field(default=None, description="For NoExecute: how long the pod stays bound after the taint appears.")


class Placement(_Api):
    """Where runtime pods run: a device profile (with fallbacks) plus the usual scheduling constraints."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            ("!has(self.profile) || !has(self.fallbacks) || !(self.profile in self.fallbacks)", "fallbacks must not repeat profile", ".fallbacks")
        )
    )

    profile: str | None = Field(
        default=None,
        max_length=63,
        pattern=PROFILE_RE,
        description="Device profile (cpu, intel-gpu, intel-npu, nvidia-gpu or one from the operator configuration). "
        "Follows the devices of the worker's models when unset.",
    )
    fallbacks: list[str] = Field(
        default_factory=list,
        max_length=8,
        json_schema_extra={"x-kubernetes-list-type": "set", "items": {"type": "string", "maxLength": 63, "pattern": PROFILE_RE}},
        description="Profiles to move to, in order, when the pods stay Unschedulable for fallbackAfterSeconds.",
    )
    fallback_after_seconds: int | None = Field(
        default=None, ge=1, le=86400, description="How long pods may stay Unschedulable before the next profile is tried; operator default when unset."
    )
    node_selector: dict[str, str] = Field(default_factory=dict, description="Extra node labels the pods require.")
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32, description="Extra tolerations of the pods.")
    affinity: AnyObject | None = Field(default=None, description="Pod affinity rules (core/v1 Affinity).")

    @field_validator("fallbacks")
    @classmethod
    def _profiles(cls, v: list[str]) -> list[str]:
        for p in v:
            if not re.match(PROFILE_RE, p):
                raise ValueError(f"{p!r} is not a profile name")
        if len(set(v)) != len(v):
            raise ValueError("fallbacks must not repeat a profile")
        return v

    @model_validator(mode="after")
    def _no_repeat(self) -> Placement:
        if self.profile is not None and self.profile in self.fallbacks:
            raise ValueError("fallbacks: fallbacks must not repeat profile")
        return self


SERVING_NAME_MAX = 50  # "-model-server" makes the Service's name, a DNS-1035 label of at most 63
SERVING_NAME_MESSAGE = f"a model with spec.serving has a name of at most {SERVING_NAME_MAX} characters (its Service is NAME-model-server)"


class ServerOptions(_Api):
    """What model-server pods run with: shared by a model's own serving and a model pool."""

    placement: Placement = Field(
        default_factory=Placement,
        description="Device profile of the model-server pods (the one the models' devices need when unset), "
        "fallbacks and scheduling constraints.",
    )
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements, description="Compute resources of the model-server container; the profile adds its devices."
    )
    image: str | None = Field(
        default=None, max_length=512, json_schema_extra={"pattern": IMAGE_RE},
        description="Model-server container image (the runtime's image); the profile's or the operator's default when unset.",
    )  # fmt: skip
    threads: int | None = Field(
        default=None, ge=1, le=256, description="Inferences at once in each model-server pod; 2 per CPU the pod sees (at least 4) when unset."
    )
    protocol: Literal["rest", "grpc"] = Field(
        default="rest", description="How workers call the model servers: rest (HTTP/1.1 with binary tensors) or grpc."
    )
    timeout_seconds: float = Field(
        default=_runtime_default(RemoteModel, "timeout_seconds"),
        **_runtime_bounds(RemoteModel, "timeout_seconds"),
        description="Longest one inference called by a worker may take, answer included; the worker's own "
        "limits.timeoutSeconds caps it too.",
    )

    @field_validator("image")
    @classmethod
    def _image(cls, v: str | None) -> str | None:
        if v is not None and not full_match(IMAGE_RE, v):
            raise ValueError(f"{v!r} is not an image reference ([host[:port]/]path[:tag][@digest], the path in lowercase)")
        return v


class ModelServing(ServerOptions):
    """Model servers of the model's own: a Deployment and a Service rendered by the operator."""

    replicas: int = Field(
        default=1, ge=0, le=1000,
        description="Model-server pods. `kubectl scale inferencemodel` and HorizontalPodAutoscalers set it (the "
        "/scale subresource); 0 stops serving, and the workers using the model wait.",
    )  # fmt: skip


POOL_NAME_MAX = 47  # its StatefulSet is NAME-pool, and a StatefulSet's name takes at most 52 characters
POOL_NAME_MESSAGE = f"a ModelPool has a name of at most {POOL_NAME_MAX} characters (its StatefulSet is NAME-pool)"


class ModelPoolSpec(ServerOptions):
    """Model-server replicas shared by many InferenceModels (those naming the pool in spec.pool): each model
    is loaded by `copies` of them, chosen by consistent hashing with bounded load."""

    replicas: int = Field(
        default=2, ge=0, le=256,
        description="Model-server replicas (pods NAME-pool-0, NAME-pool-1, ...). Adding or removing one moves only "
        "about its share of the models; `kubectl scale modelpool` sets it.",
    )  # fmt: skip
    copies: int = Field(
        default=2, ge=1, le=16,
        description="Replicas that load each model: one can restart while another serves. A model is Ready once "
        "that many replicas hold it (all the replicas, when there are fewer).",
    )  # fmt: skip


InferenceModelSpec.model_rebuild()


class WasmWorkerSpec(_Api):
    """A Wasm worker served by runtime pods, with the named models it may use."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            (
                "has(self.module.oci) || (has(self.module.https) ? self.module.https.files.size() : has(self.module.configMap) ? "
                "self.module.configMap.files.size() : has(self.module.pvc) ? self.module.pvc.files.size() : 0) == 1",
                "module takes exactly one file",
                ".module",
            ),
        )
    )

    module: Source = Field(description="The worker's .wasm module (one file).")
    signatures: SignaturePolicy | None = Field(
        default=None, description="Signatures the module must carry; a namespace's policy in the operator configuration applies as well."
    )
    route: str = Field(
        default="/",
        **_runtime_bounds(RuntimeWorker, "route"),
        description="HTTP route the worker answers, starting with '/'. A whole segment [name] captures a path "
        "parameter and a last segment [...name] the rest of the path (a name is ASCII letters, digits and _, "
        "once per route); other segments are text without '[' or ']'. " + ", ".join(RESERVED_PATHS)
        + " are the server's own.",
        json_schema_extra={
            "pattern": ROUTE_RE,
            **rules(
                ("self.startsWith('/')", "route must start with '/'"),
                (f"!self.matches({cel_string(RESERVED_RE)})", "route is one the server answers itself: " + ", ".join(RESERVED_PATHS)),
            ),
        },
    )
    replicas: int = Field(default=1, ge=0, le=10000, description="Number of runtime pods.")
    models: list[str] = Field(
        default_factory=list,
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "set", "items": {"type": "string", "maxLength": 253, "pattern": DNS_SUBDOMAIN_RE}},
        description="Names of InferenceModels (same namespace) the worker may load by name; each is preloaded in its pods.",
    )
    allowed_backends: list[BackendName] | None = Field(
        default=None,
        max_length=2,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="wasi-nn backends the guest may use for its own `load` calls. Defaults to the backends of its models.",
    )
    vars: dict[Annotated[str, AfterValidator(check_var_name)], str] = Field(
        default_factory=dict,
        description="Variables given to the guest ($NAME expands from env). A name is any text without '=' or NUL.",
        json_schema_extra=rules((f"self.all(k, k.matches({cel_string(VAR_NAME_RE)}))", "a var name must not be empty and must not contain '=' or NUL")),
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="Environment of the runtime container, from literals, ConfigMaps or Secrets; each is also a guest var.",
    )
    folders: list[Folder] = Field(
        default_factory=list,
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["path"]},
        description="Volumes preopened in the guest as directories.",
    )
    limits: WorkerLimits = Field(default_factory=WorkerLimits, json_schema_extra=_EMPTY_DEFAULT, description="Per-request limits.")
    kv: KvStore | None = Field(
        default=None,
        description="A key/value store: the request's kv holds its state, the worker's response replaces it. It lives in "
        "the memory of each runtime pod: every replica has its own, so requests spread over replicas see different "
        "states, and nothing persists across pod restarts or rollouts. None unless set.",
    )
    http_requests: HttpRequests | None = Field(default=None, description="Outbound HTTP from the guest; none unless set.")
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements, description="Compute resources of the runtime container.")
    placement: Placement = Field(default_factory=Placement, description="Device profile, fallbacks and scheduling constraints.")
    image: str | None = Field(
        default=None,
        max_length=512,
        description="Runtime container image, a reference such as registry.example.com:5000/team/runtime:1.2@sha256:<hex> "
        "(the path in lowercase); the profile's or the operator's default when unset.",
        json_schema_extra={"pattern": IMAGE_RE},
    )

    @field_validator("route")
    @classmethod
    def _route(cls, v: str) -> str:
        check_route(v)  # the runtime's own check, with its message (repeated parameter names included)
        if full_match(RESERVED_RE, v):
            raise ValueError(f"route {v} is one the server answers itself: {', '.join(RESERVED_PATHS)}")
        return v

    @field_validator("image")
    @classmethod
    def _image(cls, v: str | None) -> str | None:
        if v is not None and not full_match(IMAGE_RE, v):
            raise ValueError(f"{v!r} is not an image reference ([host[:port]/]path[:tag][@digest], the path in lowercase)")
        return v

    @field_validator("models")
    @classmethod
    def _models(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("models must not repeat a name")
        return v

    @model_validator(mode="after")
    def _one_module(self) -> WasmWorkerSpec:
        if self.module.file_count() not in (None, 1):
            raise ValueError("module: module takes exactly one file")
        paths = [f.path for f in self.folders]
        if len(set(paths)) != len(paths):
            raise ValueError("folders: two folders have the same path")
        names = [e.name for e in self.env]
        if len(set(names)) != len(names):
            raise ValueError("env: two variables have the same name")
        return self


# --- status ----------------------------------------------------------------------------------------


class Condition(_Api):
    """The standard condition shape (kstatus, `kubectl wait --for=condition=...`)."""

    type: str = Field(max_length=316, description="Ready, ModelsReady, Scheduled, Progressing, Degraded or Verified.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(max_length=1024, description="One-word CamelCase reason of the last transition.")
    message: str = Field(default="", max_length=32768, description="Human-readable details.")
    last_transition_time: str = Field(description="When the status last changed (RFC 3339).", json_schema_extra={"format": "date-time"})
    observed_generation: int | None = Field(default=None, ge=0, description="metadata.generation the condition was computed for.")


_CONDITIONS_EXTRA: JsonDict = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}


class ServerState(_Api):
    """One model-server pod and where loading the model stands in it."""

    pod: str = Field(description="Name of the pod.")
    node: str | None = Field(default=None, description="Node it runs on, once scheduled.")
    state: Literal["Pending", "Loading", "Ready", "Failed", "Terminating"] = Field(
        description="Pending (not scheduled), Loading (fetching or loading the model), Ready (serving it), Failed "
        "(will not get ready by waiting; see message) or Terminating."
    )
    message: str = Field(default="", max_length=4096, description="Why it is Pending or Failed.")
    models: int | None = Field(default=None, description="In a ModelPool: how many models are placed on this replica.")


class InferenceModelStatus(_Api):
    """What the operator observed; written only by the operator."""

    observed_generation: int | None = Field(default=None, description="Latest metadata.generation acted on.")
    backend: str | None = Field(default=None, description="Resolved backend.")
    artifact: str | None = Field(
        default=None, description="With an OCI source: the reference the pods pull, pinned to the digest its tag resolved to."
    )
    profile: str | None = Field(
        default=None, description="Device profile the model runs on: that of the workers using it, or with spec.serving that of its model servers."
    )
    endpoint: str | None = Field(default=None, description="With spec.serving: the model servers' address in the cluster (Open Inference Protocol v2 over REST).")
    grpc_endpoint: str | None = Field(default=None, description="With spec.serving: the same over gRPC.")
    replicas: int | None = Field(default=None, description="With spec.serving: model-server pods that exist (the /scale subresource reads this); with spec.pool: replicas holding it that exist.")
    ready_replicas: int | None = Field(default=None, description="With spec.serving or spec.pool: model-server pods that have the model loaded and serve it.")
    ready_summary: str | None = Field(default=None, description="With spec.serving or spec.pool: ready/desired model-server pods (for a pool: the replicas that should hold it), for kubectl get.")
    selector: str | None = Field(default=None, description="With spec.serving: label selector of the model-server pods (for the /scale subresource).")
    servers: list[ServerState] | None = Field(
        default=None, description="With spec.serving: each model-server pod and whether it has the model loaded; with spec.pool: the replicas placed to hold it (at most 20 listed)."
    )
    workers: list[str] = Field(default_factory=list, description="WasmWorkers of the namespace that use this model (at most 100 listed).")
    worker_count: int = Field(default=0, description="How many WasmWorkers use this model.")
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=_CONDITIONS_EXTRA, description="Ready, with its reason; Deleting (InUse) while a deletion waits for the WasmWorkers using the model.")


class ModelPoolStatus(_Api):
    """What the operator observed; written only by the operator."""

    observed_generation: int | None = Field(default=None, description="Latest metadata.generation acted on.")
    profile: str | None = Field(default=None, description="Device profile the replicas are placed with.")
    replicas: int = Field(default=0, description="Replica pods that exist (the /scale subresource reads this).")
    ready_replicas: int = Field(default=0, description="Replica pods that have loaded every model placed on them.")
    ready_summary: str | None = Field(default=None, description="ready/desired replicas, for kubectl get.")
    selector: str | None = Field(default=None, description="Label selector of the replica pods (for the /scale subresource).")
    model_count: int = Field(default=0, description="InferenceModels placed on the replicas.")
    models: list[str] = Field(
        default_factory=list,
        description="InferenceModels placed on the replicas, in order: the placement follows from this list, the "
        "replica names and spec.copies. A model whose source is not ready yet joins once it is.",
    )
    servers: list[ServerState] = Field(
        default_factory=list, description="Each replica pod, where loading its share stands, and how many models are placed on it (at most 20 listed)."
    )
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=_CONDITIONS_EXTRA, description="Ready, with its reason.")


class WasmWorkerStatus(_Api):
    """What the operator observed; written only by the operator."""

    observed_generation: int | None = Field(default=None, description="Latest metadata.generation acted on.")
    replicas: int = Field(default=0, description="Runtime pods that exist (the /scale subresource reads this).")
    ready_replicas: int = Field(default=0, description="Runtime pods that are ready: module compiled and every model loaded.")
    updated_replicas: int = Field(default=0, description="Runtime pods running the latest configuration.")
    selector: str | None = Field(default=None, description="Label selector of the runtime pods (for the /scale subresource).")
    url: str | None = Field(default=None, description="In-cluster URL of the worker's route.")
    profile: str | None = Field(default=None, description="Device profile the pods are placed with.")
    ready_summary: str | None = Field(default=None, description="ready/desired replicas, for kubectl get.")
    models_summary: str | None = Field(default=None, description="ready/named models, for kubectl get.")
    artifact: str | None = Field(
        default=None, description="With an OCI module: the reference the pods pull, pinned to the digest its tag resolved to."
    )
    conditions: list[Condition] = Field(
        default_factory=list, json_schema_extra=_CONDITIONS_EXTRA, description="Ready, ModelsReady, Scheduled, Progressing, Degraded."
    )
