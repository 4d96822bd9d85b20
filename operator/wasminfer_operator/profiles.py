"""Operator configuration: device profiles, default images and timings.

A device profile says how runtime pods reach a kind of device: the extended resource to request, the
tolerations and node labels that go with it, which backends and which device the models run on there,
and (optionally) a runtime image built for it. The built-in profiles can be replaced or extended by a
YAML file (`--config` / WASMINFER_OPERATOR_CONFIG), which a Helm chart renders from its values.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from wasminfer_operator.api import PROFILE_RE, Quantity, Toleration
from wasminfer_operator.names import ACCELERATOR_NODE_LABELS, INTEL_GPU_RESOURCE, INTEL_NPU_RESOURCE, NVIDIA_GPU_RESOURCE
from wasminfer_runtime import formats
from wasminfer_runtime.config import BackendName, Device, format_validation_error, read_yaml_file

DEFAULT_IMAGE = "ghcr.io/wasminfer/runtime:0.1.0"
NVIDIA_IMAGE = "ghcr.io/wasminfer/runtime-nvidia:0.1.0"
CONFIG_ENV = "WASMINFER_OPERATOR_CONFIG"
IMAGE_ENV = "WASMINFER_RUNTIME_IMAGE"


class ConfigurationError(Exception):
    """An operator configuration file that cannot be used; the message names the file and the key."""


class _Cfg(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class NodeRequirement(_Cfg):
    """A core/v1 NodeSelectorRequirement the pods' nodes must meet."""

    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    values: list[str] = Field(default_factory=list)

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "operator": self.operator}
        if self.values:
            out["values"] = list(self.values)
        return out




# A surge count or a percentage of the replicas, as Deployment.spec.strategy.rollingUpdate takes it.
IntOrPercent = Annotated[int | str, Field(union_mode="left_to_right")]
_PERCENT_RE = re.compile(r"^(0|[1-9][0-9]*)%$")


def _is_zero(v: int | str) -> bool:
    return v == 0 or v == "0%"


class Rollout(_Cfg):
    """How a worker's pods are replaced when its spec changes (the Deployment's strategy).

    A pod that holds a device cannot be surged: on a node with one free device the extra pod never
    schedules and the rollout waits forever. Profiles that request resources therefore replace pods
    one at a time (maxSurge 0) unless configured otherwise."""

    strategy: Literal["RollingUpdate", "Recreate"] = Field(default="RollingUpdate")
    max_surge: IntOrPercent | None = Field(default=None, description="Extra pods during a rolling update (count or percent).")
    max_unavailable: IntOrPercent | None = Field(default=None, description="Pods that may be missing during a rolling update.")

    @model_validator(mode="after")
    def _check(self) -> Rollout:
        for key, v in (("maxSurge", self.max_surge), ("maxUnavailable", self.max_unavailable)):
            if v is None:
                continue
            if self.strategy == "Recreate":
                raise ValueError(f"{key}: only for strategy RollingUpdate")
            if isinstance(v, int) and v < 0 or isinstance(v, str) and not _PERCENT_RE.match(v):
                raise ValueError(f"{key}: {v!r} is neither a count >= 0 nor a percentage like 25%")
            if key == "maxUnavailable" and isinstance(v, str) and int(v[:-1]) > 100:
                raise ValueError(f"{key}: {v!r} is more than 100%")
        surge, unavailable = self.max_surge, self.max_unavailable
        if surge is not None and unavailable is not None and _is_zero(surge) and _is_zero(unavailable):
            raise ValueError("maxSurge and maxUnavailable cannot both be 0 (the rollout could never start)")
        return self

    def wire(self) -> dict[str, Any]:
        """Deployment.spec.strategy, every field written out: a value the API server defaulted is
        owned by no one in server-side apply, and a defaulted rollingUpdate left behind would make
        a later switch to Recreate invalid."""
        if self.strategy == "Recreate":
            return {"type": "Recreate"}
        surge = "25%" if self.max_surge is None else self.max_surge
        unavailable = "25%" if self.max_unavailable is None else self.max_unavailable
        return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}


# The Deployment default (25% surge) for profiles without devices; for profiles that request a
# device, replace one pod at a time and never surge.
DEPLOYMENT_DEFAULT = Rollout()
REPLACE_ONE_AT_A_TIME = Rollout(max_surge=0, max_unavailable=1)


class DeviceProfile(_Cfg):
    device: Device = Field(description="Device the models run on under this profile (OpenVINO/ONNX Runtime device name).")
    backends: list[BackendName] = Field(min_length=1, description="Backends that can use the device under this profile.")
    resources: dict[str, Quantity] = Field(default_factory=dict, description="Extended resources requested (and limited) per pod.")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    node_affinity: list[NodeRequirement] = Field(
        default_factory=list, description="Required node expressions, ANDed with the worker's own node affinity."
    )
    image: str | None = Field(default=None, description="Runtime image for this profile; the operator default when unset.")
    automatic: bool = Field(default=True, description="Chosen automatically for models that need this device and backend.")
    avoid_accelerator_nodes: bool | None = Field(
        default=None, description="Require nodes without the acceleratorNodeLabels; unset: true for a CPU profile."
    )
    rollout: Rollout | None = Field(
        default=None,
        description="Deployment strategy; unset: maxSurge 0 / maxUnavailable 1 when the profile requests resources, else the Deployment default (25%/25%).",
    )

    @model_validator(mode="after")
    def _backends_run_on_device(self) -> DeviceProfile:
        for backend in self.backends:
            error = formats.device_error(backend, self.device)
            if error:
                raise ValueError(f"backends: {error}")
        return self

    def deployment_strategy(self) -> dict[str, Any]:
        """Deployment.spec.strategy for this profile's workers."""
        if self.rollout is not None:
            return self.rollout.wire()
        return (REPLACE_ONE_AT_A_TIME if self.resources else DEPLOYMENT_DEFAULT).wire()

    def serves(self, device: Device, backend: BackendName) -> bool:
        return self.device is device and backend in self.backends


def builtin_profiles() -> dict[str, DeviceProfile]:
    return {
        "cpu": DeviceProfile(
            device=Device.CPU,
            backends=[BackendName.openvino, BackendName.onnxruntime, BackendName.llamacpp],
        ),
        "intel-gpu": DeviceProfile(device=Device.GPU, backends=[BackendName.openvino], resources={INTEL_GPU_RESOURCE: 1}),
        "intel-npu": DeviceProfile(device=Device.NPU, backends=[BackendName.openvino], resources={INTEL_NPU_RESOURCE: 1}),
        "nvidia-gpu": DeviceProfile(
            device=Device.GPU,
            backends=[BackendName.onnxruntime, BackendName.llamacpp],
            resources={NVIDIA_GPU_RESOURCE: 1},
            tolerations=[Toleration(key=NVIDIA_GPU_RESOURCE, operator="Exists", effect="NoSchedule")],
            image=NVIDIA_IMAGE,
        ),
    }


class NamespaceIdentity(_Cfg):
    identity: str = Field(min_length=1, description="The signing certificate's e-mail or URI.")
    issuer: str = Field(min_length=1, description="The OIDC issuer that vouched for it.")


class NamespaceSigstore(_Cfg):
    """Keyless: Sigstore bundles verified offline against this trusted root, by one of these identities."""

    trusted_root: str = Field(description="The text of a Sigstore trusted_root.json.")
    identities: list[NamespaceIdentity] = Field(min_length=1, max_length=16)

    @field_validator("trusted_root")
    @classmethod
    def _root(cls, v: str) -> str:
        try:
            doc = json.loads(v)
        except ValueError as err:
            raise ValueError(f"trustedRoot is not JSON: {err}") from None
        if not isinstance(doc, dict) or "trustedroot" not in str(doc.get("mediaType", "")):
            raise ValueError("trustedRoot is not a Sigstore trusted root (its mediaType names trustedroot)")
        return v


class NamespaceSignatures(_Cfg):
    """A namespace's signature policy: every module and model there must carry a signature by one of its keys
    or Sigstore identities, whatever the resource's own spec.signatures says (those apply too)."""

    keys: list[str] = Field(default_factory=list, max_length=8, description="Trusted PEM public keys (the text of cosign.pub).")
    sigstore: NamespaceSigstore | None = Field(default=None, description="Keyless: trusted Sigstore identities (files so far).")
    required: bool = Field(default=True, description="false: what carries no signature loads; a signature present must verify.")

    @model_validator(mode="after")
    def _trusts_someone(self) -> NamespaceSignatures:
        if not self.keys and self.sigstore is None:
            raise ValueError("set keys, sigstore or both: whose signatures verify")
        return self

    @field_validator("keys")
    @classmethod
    def _pem(cls, v: list[str]) -> list[str]:
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        for i, text in enumerate(v):
            try:
                load_pem_public_key(text.encode())
            except ValueError as err:
                raise ValueError(f"keys[{i}] is not a PEM public key: {err}") from None
        return v


class OperatorConfig(_Cfg):
    image: str = Field(default=DEFAULT_IMAGE, description="Runtime image when neither the worker nor its profile names one.")
    image_pull_policy: str = Field(default="IfNotPresent")
    default_profile: str = Field(default="cpu", description="Profile of workers whose models need no particular device.")
    fallback_after_seconds: int = Field(default=120, ge=1, description="How long pods may stay Unschedulable before a fallback.")
    move_back: bool = Field(default=True, description="Return a worker on a fallback profile to a more preferred one once that one has room.")
    move_back_after_seconds: int = Field(default=600, ge=0, description="No move back sooner than this after a fallback.")
    move_back_stable_seconds: int = Field(default=60, ge=0, description="How long the capacity check must keep finding room before a move back.")
    move_back_check_seconds: int = Field(default=30, ge=1, description="How often the capacity of a worker's preferred profiles is checked while it is on a fallback.")
    resync_seconds: int = Field(default=600, ge=10, description="Every object is reconciled at least this often.")
    source_recheck_seconds: int = Field(default=300, ge=5, description="How often resolved model sources are checked again.")
    run_as_user: int = Field(default=65532, ge=1, description="UID of runtime pods (never root).")
    progress_deadline_seconds: int = Field(
        default=600, ge=1, description="Seconds a rollout may make no progress before the worker reports Degraded (ProgressDeadlineExceeded)."
    )
    profiles: dict[str, DeviceProfile] = Field(default_factory=builtin_profiles)
    signatures: dict[str, NamespaceSignatures] = Field(
        default_factory=dict,
        description="Signature policies by namespace; '*' for every namespace without one of its own.",
    )
    accelerator_node_labels: list[str] = Field(
        default_factory=lambda: list(ACCELERATOR_NODE_LABELS),
        description="Labels of GPU/NPU nodes; pods of profiles that avoid accelerator nodes require nodes without them.",
    )

    @model_validator(mode="after")
    def _check(self) -> OperatorConfig:
        for name in self.profiles:
            if not re.match(PROFILE_RE, name):
                raise ValueError(f"profiles: {name!r} is not a valid profile name (lowercase letters, digits, '-')")
        if self.default_profile not in self.profiles:
            raise ValueError(f"defaultProfile: {self.default_profile!r} is not one of the profiles")
        # Added here, not in each profile, so that a profile given in the configuration (the chart's
        # cpu) keeps CPU pods off accelerator nodes too, unless it says otherwise.
        for p in self.profiles.values():
            if p.device is Device.CPU if p.avoid_accelerator_nodes is None else p.avoid_accelerator_nodes:
                own = {r.key for r in p.node_affinity}
                p.node_affinity += [NodeRequirement(key=k, operator="DoesNotExist") for k in self.accelerator_node_labels if k not in own]
        return self

    def signatures_for(self, namespace: str) -> NamespaceSignatures | None:
        return self.signatures.get(namespace, self.signatures.get("*"))

    def image_for(self, profile: str, override: str | None) -> str:
        if override:
            return override
        return self.profiles[profile].image or self.image

    def profile_for_model(self, device: Device, backend: BackendName) -> str | None:
        """The profile a model needs: the default one where it runs anywhere (CPU, AUTO), else the first
        automatic profile serving it."""
        if formats.needs_no_profile(device):
            return self.default_profile
        for name, p in self.profiles.items():
            if p.automatic and p.serves(device, backend):
                return name
        return None


def parse_operator_config(data: Any, source: str) -> OperatorConfig:
    """Validate configuration data; profiles given replace built-ins of the same name and add new ones."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigurationError(f"{source}: expected a mapping at the top level")
    data = dict(data)
    given = data.pop("profiles", None) or {}
    if not isinstance(given, dict):
        raise ConfigurationError(f"{source}: profiles: expected a mapping of profile name to profile")
    merged: dict[str, Any] = {n: p.model_dump(mode="json", by_alias=True, exclude_none=True) for n, p in builtin_profiles().items()}
    merged.update(given)
    try:
        return OperatorConfig.model_validate({**data, "profiles": merged})
    except ValidationError as err:
        raise ConfigurationError(format_validation_error(source, err)) from None


def load_operator_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> OperatorConfig:
    """The configuration from `path` (or $WASMINFER_OPERATOR_CONFIG), with $WASMINFER_RUNTIME_IMAGE applied."""
    env = os.environ if env is None else env
    if path is None and env.get(CONFIG_ENV):
        path = Path(env[CONFIG_ENV])
    data: Any = {}
    source = "built-in defaults"
    if path is not None:
        source = str(path)
        data = read_yaml_file(path, ConfigurationError)
    cfg = parse_operator_config(data, source)
    if env.get(IMAGE_ENV):
        cfg = cfg.model_copy(update={"image": env[IMAGE_ENV]})
    return cfg
