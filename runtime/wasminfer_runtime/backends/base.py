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
from typing import Protocol, TypeVar

from wasminfer_runtime.config import Device, ModelConfig, ModelFormat


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


class InvalidModel(BackendError):
    """Model bytes or files the backend cannot read."""


class Unsupported(BackendError):
    """A device or format this backend (or this host) does not have."""


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

    @abstractmethod
    def close(self) -> None:
        """Give the buffers back (to the graph's pool, for a named model)."""


class Graph(ABC):
    def __init__(self, label: str) -> None:
        self.label = label  # the model name in metrics and logs

    @abstractmethod
    def init_context(self) -> ExecutionContext: ...

    def close(self) -> None:
        """Free a graph loaded from bytes; named graphs live as long as the registry."""


class Backend(ABC):
    name: str

    @abstractmethod
    def load_model(self, cfg: ModelConfig) -> Graph:
        """Compile a named model from its files (raises InvalidModel / Unsupported)."""

    @abstractmethod
    def load_bytes(self, fmt: ModelFormat, parts: Sequence[bytes], device: Device) -> Graph:
        """Compile a model a guest passed to `load` (raises InvalidModel / Unsupported)."""
