"""The NHWC reading of input tensors that wws 1.7 gave its workers, as a reordering of the guest's bytes.

wws 1.7 links wasmtime-wasi-nn 13, whose OpenVINO backend (OpenVINO's 1.0 API) marks every
network input NHWC when it loads a model and wraps each tensor a guest sets in a TensorDesc of
layout NHWC. In that API the dims of a TensorDesc are always listed N,C,H,W and the layout says
how the memory is ordered: a guest declaring 1x3x224x224 sends interleaved pixels (N,H,W,C), and
OpenVINO transposes them to the network's planar order. Today's wasmtime, and this runtime by
default, read the same bytes in the order of the declared dims.

What `input_layout: nhwc` does here, decided from that API:
- a 4-D input is transposed from N,H,W,C (the declared dims read as N,C,H,W) to the declared
  order before the backend sees it, for any element type (it moves whole elements);
- any other rank is passed on unchanged. wws could not serve such a model at all: setting the
  NHWC layout on a non-4-D input throws at load ("Size of dims(2) and format(NHWC) are
  inconsistent"), so no wws worker depends on a reading of those bytes;
- outputs are untouched: that backend never set an output layout, so an output kept the
  network's own (planar) order, which is what a guest gets today;
- it applies to OpenVINO IR models only, the one format wws loaded. ONNX models never ran on
  wws 1.7 (it had no ONNX backend, and its OpenVINO backend loaded model.xml + model.bin), so a
  guest using one was written for the model's own layout, whichever backend runs it.

A byte count that does not match the dims is passed on as it is, so the guest gets the
backend's usual error. The reordering wraps the execution context, above both in-process
backends and model-host clients, so it happens once, in the worker's process.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

from wasminfer_runtime.backends.base import ElementType, ExecutionContext
from wasminfer_runtime.config import InputLayout, ModelFormat

if TYPE_CHECKING:  # imported on the first reordering: a module that never calls wasi-nn does not load numpy
    import numpy as np

# Element sizes -> the name of an unsigned type of that size: the transpose moves whole elements, whatever they hold.
_WORDS = {1: "uint8", 2: "uint16", 4: "uint32", 8: "uint64"}


def reads_nhwc(layout: InputLayout, fmt: ModelFormat) -> bool:
    """Whether a worker's inputs to a model of format `fmt` are reordered from NHWC."""
    return layout is InputLayout.nhwc and fmt is ModelFormat.openvino


def nhwc_to_declared(src: int, dims: tuple[int, ...], etype: ElementType) -> np.ndarray | None:
    """The bytes at host address `src`, read as N,H,W,C under `dims` N,C,H,W, in N,C,H,W order.

    None when nothing needs moving: a rank other than 4, or no elements.
    """
    if len(dims) != 4 or 0 in dims:
        return None
    import numpy as np

    n, c, h, w = dims
    count = n * c * h * w
    view = np.ctypeslib.as_array((ctypes.c_uint8 * (count * etype.size)).from_address(src))
    interleaved = view.view(_WORDS[etype.size]).reshape(n, h, w, c)
    return np.ascontiguousarray(interleaved.transpose(0, 3, 1, 2))


class NhwcInputs(ExecutionContext):
    """An execution context whose 4-D inputs arrive interleaved (N,H,W,C) under dims N,C,H,W."""

    __slots__ = ("inner",)

    def __init__(self, inner: ExecutionContext) -> None:
        self.inner = inner

    def set_input(self, index: int, etype: ElementType, dims: tuple[int, ...], src: int, nbytes: int) -> None:
        count = 1
        for d in dims:
            count *= d
        planar = nhwc_to_declared(src, dims, etype) if count * etype.size == nbytes else None
        if planar is None:
            self.inner.set_input(index, etype, dims, src, nbytes)
        else:  # the backend copies the bytes before returning: `planar` may go after this call
            self.inner.set_input(index, etype, dims, planar.ctypes.data, nbytes)

    def compute(self) -> None:
        self.inner.compute()

    def output(self, index: int) -> tuple[int, int]:
        return self.inner.output(index)

    def output_dims(self, index: int) -> tuple[int, ...]:
        return self.inner.output_dims(index)

    def close(self) -> None:
        self.inner.close()

    def cancel(self) -> bool:
        return self.inner.cancel()
