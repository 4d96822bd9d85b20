"""The one interface every inference backend implements.

A Backend turns model files (named models) or model bytes (wasi-nn `load`) into a Graph; a
Graph hands out ExecutionContexts; a context takes inputs, computes, and exposes outputs.
Tensor data crosses this interface as host addresses and byte counts, so the wasi-nn host can
copy straight between guest memory and the backend's own buffers with no intermediate object.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from wasminfer_runtime.config import Device, ModelConfig, ModelFormat, ModelOptions


class ElementType(str, enum.Enum):
    f16 = "f16"
    f32 = "f32"
    f64 = "f64"
    u8 = "u8"
    i32 = "i32"
    i64 = "i64"

    @property
    def size(self) -> int:
        return _SIZES[self.value]


_SIZES = {"f16": 2, "f32": 4, "f64": 8, "u8": 1, "i32": 4, "i64": 8}


class BackendError(Exception):
    """The backend failed to do what was asked (a runtime error)."""


class InvalidTensor(BackendError):
    """An input index, element type, shape or size the graph does not take."""


class TooLarge(InvalidTensor):
    """An inference whose output would exceed the model's max_output_bytes (wasi-nn too_large)."""


class InvalidModel(BackendError):
    """Model bytes or files the backend cannot read."""


class Unsupported(BackendError):
    """A device or format this backend (or this host) does not have."""


# An LLM backend's (WasmEdge's GGML API): how a token stream ends, and the limits of its context.
class EndOfSequence(BackendError):
    """The model emitted its end token (compute_single): the stream is over."""


class ContextFull(BackendError):
    """The prompt and the generated tokens fill the context (ctx-size)."""


class PromptTooLong(BackendError):
    """The prompt alone takes more than the context leaves room for."""


class InvalidEncoding(InvalidTensor):
    """Metadata that is not JSON (WasmEdge answers invalid_encoding)."""


class _TypedInput(Protocol):
    @property
    def etype(self) -> ElementType | None: ...


_Slot = TypeVar("_Slot", bound=_TypedInput)


def input_slot(slots: Sequence[_Slot], index: int, etype: ElementType) -> _Slot:
    """Input `index` of a context, if it exists and takes `etype` (raises InvalidTensor)."""
    if not 0 <= index < len(slots):
        raise InvalidTensor(f"input {index} does not exist (the model has {len(slots)})")
    slot = slots[index]
    if etype is not slot.etype:
        want = slot.etype.value if slot.etype else "an unsupported type"
        raise InvalidTensor(f"input {index} takes {want}, not {etype.value}")
    return slot


# A model input's shape as the shape rule sees it: an int for a fixed dimension, None for a
# dynamic one; None as a whole when even the rank is dynamic.
ModelDims = Sequence[int | None] | None


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a model, as its metadata tells it (model servers publish it)."""

    name: str
    etype: ElementType | None  # None: a type this host cannot pass
    dims: ModelDims


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]


class ShapeBounds:
    """What one inference of a model may make the host allocate, from its ModelOptions.

    A guest picks the dynamic dimensions of its inputs; outputs and the backend's intermediate
    buffers grow with them. Bounding every dynamic dimension stops that before anything is
    allocated; the output bound catches models whose outputs grow faster than their inputs.
    """

    __slots__ = ("max_dynamic_dim", "max_output_bytes")

    def __init__(self, options: ModelOptions) -> None:
        self.max_dynamic_dim = options.max_dynamic_dim
        self.max_output_bytes = options.max_output_bytes

    def check_input(self, label: str, model_dims: ModelDims, etype: ElementType, dims: tuple[int, ...], nbytes: int) -> None:
        """Refuse dims the model does not take, or a byte count they do not make (raises InvalidTensor).

        The rank must match, a fixed dimension must be equal, a dynamic one 1..max_dynamic_dim.
        Called before a backend sizes any buffer for `dims`.
        """
        bound = self.max_dynamic_dim
        if model_dims is not None and len(dims) != len(model_dims):
            shape = ["?" if d is None else d for d in model_dims]
            raise InvalidTensor(f"{label} has rank {len(model_dims)} {shape}, not {len(dims)} {list(dims)}")
        for i, got in enumerate(dims):
            want = None if model_dims is None else model_dims[i]
            if want is None:
                if not 1 <= got <= bound:
                    raise InvalidTensor(
                        f"{label} dimension {i} is {got}; the model's dynamic dimensions take 1 to {bound} "
                        f"(options.max_dynamic_dim)"
                    )
            elif got != want:
                raise InvalidTensor(f"{label} dimension {i} is {got}; the model fixes it at {want}")
        count = 1
        for d in dims:
            count *= d
        if count * etype.size != nbytes:
            raise InvalidTensor(f"{label} of shape {list(dims)} takes {count * etype.size} bytes, not {nbytes}")

    def check_output(self, index: int, nbytes: int) -> None:
        """Refuse an output larger than max_output_bytes (raises TooLarge)."""
        if nbytes > self.max_output_bytes:
            raise TooLarge(
                f"output {index} is {nbytes} bytes, more than the model's {self.max_output_bytes} "
                f"(options.max_output_bytes)"
            )


def first_line(err: BaseException) -> str:
    """The first line of an error's message, for one-line reports."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class ExecutionContext(ABC):
    """One set of input and output buffers; used by one guest instance at a time."""

    @abstractmethod
    def set_input(self, index: int, etype: ElementType, dims: tuple[int, ...], src: int, nbytes: int) -> None:
        """Copy `nbytes` from host address `src` into input `index` (raises InvalidTensor)."""

    @abstractmethod
    def compute(self) -> None: ...

    @abstractmethod
    def output(self, index: int) -> tuple[int, int]:
        """(host address, byte length) of output `index`, valid until the next compute or close."""

    def output_dims(self, index: int) -> tuple[int, ...]:
        """The shape of output `index` after compute (wasi-nn has no use for it; model servers do)."""
        raise Unsupported("this backend does not tell output shapes")

    @abstractmethod
    def close(self) -> None:
        """Give the buffers back (to the graph's pool, for a named model)."""

    def cancel(self) -> bool:
        """Stop a compute running on another thread; False when the backend cannot."""
        return False


class Graph(ABC):
    def __init__(self, label: str, bounds: ShapeBounds | None = None) -> None:
        self.label = label  # the model name in metrics and logs
        self.bounds = bounds if bounds is not None else ShapeBounds(ModelOptions())

    @abstractmethod
    def init_context(self) -> ExecutionContext: ...

    def signature(self) -> Signature:
        """The model's inputs and outputs: names, element types and shapes."""
        raise Unsupported("this backend does not tell a model's inputs and outputs")

    def close(self) -> None:
        """Free a graph loaded from bytes; named graphs live as long as the registry."""


class Backend(ABC):
    name: str

    @abstractmethod
    def load_model(self, cfg: ModelConfig) -> Graph:
        """Compile a named model from its files (raises InvalidModel / Unsupported)."""

    @abstractmethod
    def load_bytes(self, fmt: ModelFormat, parts: Sequence[bytes], device: Device) -> Graph:
        """Compile a model a guest passed to `load`, with the default ModelOptions (raises InvalidModel / Unsupported)."""
