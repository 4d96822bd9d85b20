"""What a model server answers, whatever the transport: health, metadata and inference over named models.

Inputs are matched to the model's inputs by name and copied straight from the request's bytes into
the backend's buffers; outputs are copied once, out of the backend's. Inferences run on a thread
pool (the runtime's WorkPool: a hand-over costs tens of microseconds less than run_in_executor), so the
event loop keeps answering health checks and other requests while models compute. A model whose
inferences take less than the two hand-overs (a thread's wake-up and the loop's) runs on the event
loop itself, for small requests: there the hand-overs would be most of its latency.
"""

from __future__ import annotations

import ctypes
import logging
import time
from typing import Any

import numpy as np

from wasminfer_runtime import __version__
from wasminfer_runtime.backends.base import BackendError, Graph, InvalidTensor, Signature, first_line
from wasminfer_runtime.metrics import Metrics
from wasminfer_runtime.models import ModelRegistry
from wasminfer_runtime.workpool import WorkPool
from wasminfer_runtime.oip.types import (
    InferRequest,
    InferResponse,
    OipError,
    Tensor,
    datatype_name,
    metadata_shape,
)

log = logging.getLogger(__name__)

SERVER_NAME = "wasminfer"
MODEL_VERSION = "1"  # a named model has one version; the protocol's paths may name it
EXTENSIONS = ["binary_tensor_data"]
PLATFORMS = {"openvino": "openvino", "onnxruntime": "onnxruntime_onnx"}
# Inline on the event loop: models whose recent inferences took less than this (measured here: the
# two thread hand-overs cost about 100 us on a 2-CPU machine), for requests of at most this many bytes.
INLINE_BELOW_SECONDS = 0.0003
INLINE_MAX_BYTES = 64 * 1024
_RECENT_WEIGHT = 0.2  # of the newest inference in a model's moving average


class DataPlane:
    def __init__(self, registry: ModelRegistry, metrics: Metrics, expected: list[str], threads: int,
                 elsewhere: dict[str, tuple[str, ...]] | None = None) -> None:  # fmt: skip
        self.registry = registry
        self.metrics = metrics
        self.expected = expected  # the models this server serves, loaded or not
        self.elsewhere = elsewhere or {}  # in a pool: models other replicas hold -> those replicas
        self.pool = WorkPool(threads, "wasminfer-infer")
        self._signatures: dict[str, Signature] = {}
        self._recent: dict[str, float] = {}  # model -> moving average of its compute time, in seconds

    def close(self) -> None:
        self.pool.shutdown(wait=False)

    # -- health and metadata -----------------------------------------------------------------------

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Every model of the configuration is loaded."""
        return all(self.registry.is_loaded(m) for m in self.expected)

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}

    def model_ready(self, model: str, version: str) -> bool:
        self._check_known(model, version)
        return self.registry.is_loaded(model)

    def model_metadata(self, model: str, version: str) -> dict[str, Any]:
        self._check_known(model, version)
        sig = self.signature(model)
        cfg = self.registry.config(model)
        platform = PLATFORMS.get(cfg.resolved_backend.value, cfg.resolved_backend.value) if cfg else ""

        def tensors(infos: Any) -> list[dict[str, Any]]:
            return [{"name": t.name, "datatype": datatype_name(t.etype), "shape": metadata_shape(t.dims)} for t in infos]

        return {"name": model, "versions": [MODEL_VERSION], "platform": platform,
                "inputs": tensors(sig.inputs), "outputs": tensors(sig.outputs)}  # fmt: skip

    def signature(self, model: str) -> Signature:
        sig = self._signatures.get(model)
        if sig is None:
            sig = self._graph(model).signature()
            self._signatures[model] = sig
        return sig

    def _check_known(self, model: str, version: str) -> None:
        if model not in self.expected:
            holders = self.elsewhere.get(model)
            if holders:
                raise OipError(404, f"model {model!r} is not served here: replica(s) {', '.join(holders)} of this pool hold it")
            raise OipError(404, f"model {model!r} is not served here")
        if version not in ("", MODEL_VERSION):
            raise OipError(404, f"model {model!r} has no version {version!r} (versions: {MODEL_VERSION})")

    def _graph(self, model: str) -> Graph:
        graph = self.registry.get(model)
        if graph is None:
            raise OipError(503, f"model {model!r} is not loaded")
        return graph

    # -- inference ---------------------------------------------------------------------------------

    async def infer(self, req: InferRequest) -> InferResponse:
        self._check_known(req.model, req.version)
        graph = self._graph(req.model)
        sig = self.signature(req.model)
        by_name = {t.name: t for t in req.inputs}
        known = {i.name for i in sig.inputs}
        unknown = [n for n in by_name if n not in known]
        if unknown:
            names = ", ".join(i.name for i in sig.inputs)
            raise OipError(400, f"model {req.model!r} has no input {unknown[0]!r} (inputs: {names})")
        feeds: list[tuple[int, Tensor]] = []
        for index, info in enumerate(sig.inputs):
            tensor = by_name.get(info.name)
            if tensor is None:
                raise OipError(400, f"input {info.name!r} of model {req.model!r} is missing")
            if info.etype is not tensor.etype:
                raise OipError(400, f"input {info.name!r} takes {datatype_name(info.etype)}, not {tensor.datatype}")
            feeds.append((index, tensor))
        out_index = {o.name: i for i, o in enumerate(sig.outputs)}
        if req.outputs is None:
            wanted = [(i, req.binary_outputs) for i in range(len(sig.outputs))]
        else:
            wanted = []
            for out in req.outputs:
                if out.name not in out_index:
                    names = ", ".join(out_index)
                    raise OipError(400, f"model {req.model!r} has no output {out.name!r} (outputs: {names})")
                wanted.append((out_index[out.name], out.binary))
        for index, _ in wanted:
            if sig.outputs[index].etype is None:
                raise OipError(400, f"output {sig.outputs[index].name!r} has a datatype this server cannot pass")
        if self.runs_inline(req.model, sum(len(t.data) for _, t in feeds)):
            outputs = self._run(req.model, graph, sig, feeds, wanted)
        else:
            outputs = await self.pool.run(self._run, req.model, graph, sig, feeds, wanted)
        return InferResponse(req.model, MODEL_VERSION, req.id, outputs)

    def runs_inline(self, model: str, nbytes: int) -> bool:
        """Whether an inference of `model` on `nbytes` of inputs runs on the event loop (see the module)."""
        recent = self._recent.get(model)
        return recent is not None and recent < INLINE_BELOW_SECONDS and nbytes <= INLINE_MAX_BYTES

    def _run(self, model: str, graph: Graph, sig: Signature, feeds: list[tuple[int, Tensor]],
             wanted: list[tuple[int, bool]]) -> list[tuple[Tensor, bool]]:  # fmt: skip
        ctx = graph.init_context()
        try:
            for index, tensor in feeds:
                view = np.frombuffer(tensor.data, dtype=np.uint8)
                ctx.set_input(index, tensor.etype, tensor.shape, int(view.ctypes.data), view.nbytes)
            started = time.perf_counter()
            ctx.compute()
            took = time.perf_counter() - started
            self.metrics.inference_seconds.labels(model).observe(took)
            recent = self._recent.get(model)
            self._recent[model] = took if recent is None else recent + _RECENT_WEIGHT * (took - recent)
            out = []
            for index, binary in wanted:
                addr, nbytes = ctx.output(index)
                info = sig.outputs[index]
                assert info.etype is not None
                out.append((Tensor(info.name, info.etype, ctx.output_dims(index), ctypes.string_at(addr, nbytes)), binary))
            return out
        except InvalidTensor as err:  # TooLarge included
            raise OipError(400, str(err)) from None
        except BackendError as err:
            log.warning("model %s: inference failed: %s", model, first_line(err))
            raise OipError(500, f"model {model!r}: {first_line(err)}") from None
        finally:
            ctx.close()
