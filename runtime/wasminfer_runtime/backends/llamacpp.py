"""GGML models (GGUF files) on llama.cpp, through llama-cpp-python's bindings, answering the way WasmEdge's
GGML backend does, so its LLM guests run unchanged.

- A named model is loaded once (`llama_model`) and shared; each execution context has its own
  `llama_context` (KV cache) at its first compute, of the context's `ctx-size` (taken from the model's
  pool of idle ones of that shape, which closed contexts go back to), and its own sampler.
- Input 0 is the prompt (UTF-8 bytes, tokenized with BOS and special tokens); input 1 is metadata JSON
  that updates the context's options. Output 0 is the generated text (never the prompt; the end token's
  text included); output 1 is the token counts as WasmEdge writes them.
- `compute` generates until an end token, `n-predict` tokens or the `reverse-prompt`; `compute_single`
  generates one token (EndOfSequence after the end token), `output_single` is that token's text, and
  `fini_single` ends the stream. With `embedding`, `compute` gives the prompt's embedding instead.
- To a component's named-tensor compute (the WIT interface) a model shows that as its signature:
  inputs `prompt` and `metadata`, outputs `text` and `metadata`, all bytes.
- Model-level options (the GPU layers) come from the runtime's model declaration: a guest's config cannot
  reload a model other workers share. What a guest asks for is bounded: the context is at most the
  model's trained length, the threads at most this machine's CPUs.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from wasminfer_runtime import deadlines
from wasminfer_runtime.backends.base import (
    Backend,
    BackendError,
    ContextFull,
    ElementType,
    EndOfSequence,
    ExecutionContext,
    Graph,
    InvalidEncoding,
    InvalidModel,
    InvalidTensor,
    PromptTooLong,
    ShapeBounds,
    Signature,
    TensorInfo,
    TooLarge,
    Unsupported,
)
from wasminfer_runtime.config import Device, ModelConfig, ModelFormat
from wasminfer_runtime.modelhost.client import DeadlineExceeded

PROMPT, METADATA = 0, 1
Shape = tuple[int, int, int, bool]  # a llama.cpp context's: n_ctx, n_batch, flash attention, embeddings
MAX_PROMPT_BYTES = 1 << 20
MAX_GRAMMAR_BYTES = 64 << 10  # a grammar's rules are compiled for every token: a guest's is bounded
PROMPT_MARGIN = 4  # WasmEdge refuses a prompt of more than n_ctx - 4 tokens
_BYTES = (None,)  # a byte string of any length
SIGNATURE = Signature(
    inputs=(TensorInfo("prompt", ElementType.u8, _BYTES), TensorInfo("metadata", ElementType.u8, _BYTES)),
    outputs=(TensorInfo("text", ElementType.u8, _BYTES), TensorInfo("metadata", ElementType.u8, _BYTES)),
)


@dataclass(frozen=True)
class LlmOptions:
    """The per-context options of WasmEdge's metadata JSON this backend honours (its names, dashes and all)."""

    n_predict: int = -1
    reverse_prompt: str = ""
    stream_stdout: bool = False
    ctx_size: int = 0  # 0: the model's trained context length
    batch_size: int = 512
    threads: int = 0  # 0: half this machine's CPUs (its physical cores)
    temp: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    last_n_penalty: int = 64
    seed: int = 0xFFFFFFFF  # random
    ignore_eos: bool = False
    embedding: bool = False
    enable_log: bool = False
    flash_attn: str = ""  # on, off or auto; unset: off on the CPU (slower there per token), auto with a GPU
    grammar: str = ""  # GBNF, as llama.cpp reads it; generation is held to it
    json_schema: str = ""  # a JSON schema (as a string), held to through the grammar llama.cpp derives from it

    def updated(self, text: bytes, what: str) -> LlmOptions:
        """These options with the keys of a metadata JSON object applied; unknown keys are ignored (as
        WasmEdge does), a known key of the wrong type is refused."""
        try:
            doc = json.loads(text.rstrip(b"\0") or b"{}")
        except (ValueError, RecursionError):
            raise InvalidEncoding(f"{what} is not JSON") from None
        if not isinstance(doc, dict):
            raise InvalidEncoding(f"{what} is not a JSON object")
        changes: dict[str, Any] = {}
        for f in fields(self):
            key = f.name.replace("_", "-")
            if key not in doc:
                continue
            value, kind = doc[key], type(getattr(self, f.name))
            if not _of_json_type(value, kind):
                raise InvalidTensor(f"{what}: {key} must be a {'finite number' if kind is float else kind.__name__}")
            changes[f.name] = float(value) if kind is float else value
        return replace(self, **changes)


def _of_json_type(value: Any, kind: type) -> bool:
    """A JSON value of the option's type: a bool is no number here, an int is a float, NaN is nothing."""
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, kind)


def _llama() -> Any:
    try:
        import llama_cpp
    except ImportError as err:  # the backend is optional: say what to install
        raise Unsupported(f"GGML models need llama-cpp-python (make llama-cpp): {err}") from None
    return llama_cpp


_QUIET = None  # the log callback kept alive while llama.cpp holds it


def _silence(llama_cpp: Any) -> None:
    """llama.cpp logs every tensor it loads to stderr; a service keeps its own log."""
    global _QUIET
    if _QUIET is None:
        _QUIET = llama_cpp.llama_log_callback(lambda level, text, user: None)
        llama_cpp.llama_log_set(_QUIET, ctypes.c_void_p(0))


class LlamaCppBackend(Backend):
    name = "llamacpp"

    def __init__(self) -> None:
        self.llama_cpp = _llama()
        self.llama_cpp.llama_backend_init()
        _silence(self.llama_cpp)

    def load_model(self, cfg: ModelConfig) -> Graph:
        if cfg.format is not ModelFormat.ggml:
            raise Unsupported(f"llama.cpp reads GGUF models, not {cfg.format.value}")
        (path,) = cfg.files
        gpu_layers = -1 if cfg.device is Device.GPU else 0
        return LlamaGraph(self.llama_cpp, str(path), gpu_layers, cfg.name, ShapeBounds(cfg.options), cfg.options.pool_size)

    def load_bytes(self, fmt: ModelFormat, parts: Sequence[bytes], device: Device) -> Graph:
        raise Unsupported("GGML models are loaded by name (a named model, or --nn-preload), not passed through guest memory")


class LlamaGraph(Graph):
    """One GGUF model in memory, shared by every context of every worker that may use it."""

    def __init__(self, llama_cpp: Any, path: str, gpu_layers: int, label: str, bounds: ShapeBounds, pool_size: int = 4) -> None:
        super().__init__(label, bounds)
        self.llama_cpp = llama_cpp
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = gpu_layers
        model = llama_cpp.llama_model_load_from_file(path.encode(), params)
        if not model:
            raise InvalidModel(f"{path}: llama.cpp cannot load it as a GGUF model")
        self.model = model
        self.gpu_layers = gpu_layers
        self.vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(model))
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.defaults = LlmOptions()
        self._pieces: dict[int, bytes] = {}  # a dict's get and set are atomic: contexts on many threads share it
        self._lock = threading.Lock()
        self._closed = False
        # llama.cpp contexts (KV caches) kept for the next execution context with the same shape, up to the
        # model's pool_size: creating one is most of a request's time to first token.
        self._idle: list[tuple[Shape, Any]] = []
        self.pool_size = pool_size

    def take_context(self, shape: Shape) -> Any:
        """An idle llama.cpp context of this shape, or None."""
        with self._lock:
            for i, (idle_shape, ctx) in enumerate(self._idle):
                if idle_shape == shape:
                    del self._idle[i]
                    return ctx
        return None

    def give_back(self, shape: Shape, ctx: Any) -> None:
        with self._lock:
            if self._closed:
                return  # shutting down with the model freed: freeing its context now would touch freed memory
            if len(self._idle) < self.pool_size:
                self._idle.append((shape, ctx))
                return
        self.llama_cpp.llama_free(ctx)

    def init_context(self) -> ExecutionContext:
        return LlamaContext(self, self.defaults)

    def signature(self) -> Signature:
        return SIGNATURE

    def with_defaults(self, config: bytes) -> LlamaGraph:
        """A view of this graph whose contexts start from a guest's load-time config."""
        view = object.__new__(LlamaGraph)
        view.__dict__.update(self.__dict__)
        view.defaults = self.defaults.updated(config, "the load config")
        return view

    def tokenize(self, text: bytes) -> list[int]:
        llama_cpp = self.llama_cpp
        cap = len(text) + 8
        buf = (llama_cpp.llama_token * cap)()
        n = llama_cpp.llama_tokenize(self.vocab, text, len(text), buf, cap, True, True)
        if n < 0:
            cap = -n
            buf = (llama_cpp.llama_token * cap)()
            n = llama_cpp.llama_tokenize(self.vocab, text, len(text), buf, cap, True, True)
        if n < 0:
            raise InvalidTensor("the prompt cannot be tokenized")
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        """A token's text (special tokens rendered), looked up once per token id."""
        known = self._pieces.get(token)
        if known is not None:
            return known
        buf = ctypes.create_string_buffer(64)
        n = self.llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, True)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self.llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, True)
        text = buf.raw[:max(n, 0)]
        self._pieces[token] = text
        return text

    def is_end(self, token: int) -> bool:
        return bool(self.llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def close(self) -> None:
        with self._lock:
            if self._closed or not self.model:
                return
            self._closed = True
            idle, self._idle = self._idle, []
        for _, ctx in idle:
            self.llama_cpp.llama_free(ctx)
        self.llama_cpp.llama_model_free(self.model)


@dataclass
class _Run:
    """One generation's state: what compute and compute_single share."""

    tokens: list[int] = field(default_factory=list)
    text: bytearray = field(default_factory=bytearray)
    position: int = 0
    started: bool = False


class LlamaContext(ExecutionContext):
    """A guest's execution context: its options, prompt, llama_context and sampler."""

    takes_text = True  # its inputs are bytes (a prompt, JSON), whatever tensor type and shape a guest gives them

    def __init__(self, graph: LlamaGraph, options: LlmOptions) -> None:
        self.graph = graph
        self.llama_cpp = graph.llama_cpp
        self.options = options
        self.prompt: list[int] = []
        self.run = _Run()
        self.ctx: Any = None
        self.ctx_size = 0
        self.shape: Shape = (0, 0, 0, False)
        self.sampler: Any = None
        self.sampler_options: LlmOptions | None = None
        self.out = b""
        self.stdout: Callable[[bytes], None] | None = None  # where stream-stdout prints (the host sets it)
        self._cancelled = threading.Event()
        self._one = (self.llama_cpp.llama_token * 1)()

    # -- inputs ---------------------------------------------------------------------------------
    def set_input(self, index: int, etype: ElementType, dims: tuple[int, ...], src: int, nbytes: int) -> None:
        if nbytes > MAX_PROMPT_BYTES:
            raise InvalidTensor(f"input {index} is {nbytes} bytes (at most {MAX_PROMPT_BYTES})")
        data = ctypes.string_at(src, nbytes)
        if index == METADATA:
            self.options = self.options.updated(data, "the metadata (input 1)")
            return
        self.prompt = self.graph.tokenize(data)
        self.run.started = False

    def configure(self, config: bytes) -> None:
        self.options = self.options.updated(config, "the config")

    # -- generation ---------------------------------------------------------------------------
    def compute(self) -> None:
        if self.options.embedding:
            self._embed()
            return
        self._start()
        limit = self.options.n_predict if self.options.n_predict >= 0 else 1 << 31
        reverse = self.options.reverse_prompt.encode()
        for _ in range(limit):
            try:
                self._step(stream=True)
            except EndOfSequence:
                break
            if reverse and reverse in self.run.text:
                break
        self.run.started = False

    def compute_single(self) -> None:
        if not self.run.started:
            self._start()
        try:
            self._step(stream=False)
        except BaseException:
            self.run.started = False
            raise

    def _embed(self) -> None:
        """Embedding mode: the prompt's embedding (the model's pooling, else its last token's), L2-normalised,
        as output 0 in WasmEdge's JSON."""
        if not self.prompt:
            raise InvalidTensor("no prompt was set (input 0)")
        self._ensure_context()
        llama_cpp = self.llama_cpp
        if len(self.prompt) > min(self.shape[1], self.ctx_size - PROMPT_MARGIN):
            raise PromptTooLong(f"the prompt is {len(self.prompt)} tokens; embedding takes at most "
                                f"{min(self.shape[1], self.ctx_size - PROMPT_MARGIN)} (batch-size, ctx-size)")
        memory = llama_cpp.llama_get_memory(self.ctx)
        if memory:
            llama_cpp.llama_memory_clear(memory, True)
        self.run = _Run()
        self._check_time()
        self._decode(self.prompt)
        n = int(llama_cpp.llama_model_n_embd(self.graph.model))
        pooled = llama_cpp.llama_pooling_type(self.ctx) != llama_cpp.LLAMA_POOLING_TYPE_NONE
        values = llama_cpp.llama_get_embeddings_seq(self.ctx, 0) if pooled else llama_cpp.llama_get_embeddings_ith(self.ctx, -1)
        if not values:
            raise BackendError("llama.cpp gave no embedding for the prompt")
        vector = [float(values[i]) for i in range(n)]
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        text = ",".join("%.10g" % (v / norm) for v in vector)
        self.run.text = bytearray(f'{{"n_embedding": {n}, "embedding": [{text}]}}'.encode())

    def _start(self) -> None:
        """A fresh generation of the stored prompt: KV cache and sampler reset, the prompt decoded."""
        if not self.prompt:
            raise InvalidTensor("no prompt was set (input 0)")
        self._ensure_context()
        llama_cpp = self.llama_cpp
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)
        self._ensure_sampler(reset=True)
        self.run = _Run()
        if len(self.prompt) > self.ctx_size - PROMPT_MARGIN:
            raise PromptTooLong(f"the prompt is {len(self.prompt)} tokens; the context (ctx-size {self.ctx_size}) takes "
                                f"at most {self.ctx_size - PROMPT_MARGIN}")
        step = max(1, min(self.options.batch_size, self.ctx_size))
        for i in range(0, len(self.prompt), step):
            self._check_time()
            self._decode(self.prompt[i:i + step])
        self.run.started = True

    def _check_time(self) -> None:
        """Generation stops between two decodes once the invocation's deadline has passed."""
        if self._cancelled.is_set():
            raise BackendError("cancelled")
        left = deadlines.remaining()
        if left is not None and left <= 0:
            raise DeadlineExceeded(f"model {self.graph.label}: the deadline passed after {len(self.run.tokens)} generated tokens")

    def _step(self, stream: bool) -> None:
        llama_cpp = self.llama_cpp
        self._check_time()
        token = int(llama_cpp.llama_sampler_sample(self.sampler, self.ctx, -1))
        piece = self.graph.piece(token)
        self.run.tokens.append(token)
        self.run.text += piece
        if len(self.run.text) > self.graph.bounds.max_output_bytes:
            raise TooLarge(f"the generated text passed {self.graph.bounds.max_output_bytes} bytes (options.max_output_bytes)")
        if stream and self.options.stream_stdout and self.stdout is not None:
            self.stdout(piece)
        if self.graph.is_end(token) and not self.options.ignore_eos:
            raise EndOfSequence("end of sequence")
        self._decode([token])

    def _decode(self, tokens: list[int]) -> None:
        llama_cpp = self.llama_cpp
        if self.run.position + len(tokens) > self.ctx_size:
            raise ContextFull(f"the context is full ({self.ctx_size} tokens, ctx-size)")
        if len(tokens) == 1:  # the generation loop: one array, reused
            arr = self._one
            arr[0] = tokens[0]
        else:
            arr = (llama_cpp.llama_token * len(tokens))(*tokens)
        code = llama_cpp.llama_decode(self.ctx, llama_cpp.llama_batch_get_one(arr, len(tokens)))
        if code != 0:
            raise BackendError(f"llama_decode failed ({code})")
        self.run.position += len(tokens)

    def _ensure_context(self) -> None:
        want = self.options.ctx_size or self.graph.n_ctx_train
        if want > self.graph.n_ctx_train or want < 8:
            raise InvalidTensor(f"ctx-size {want}: this model takes 8 to {self.graph.n_ctx_train} (its trained context)")
        cpus = os.cpu_count() or 1
        # Default: one per physical core (half the logical CPUs), as llama.cpp's own tools count them.
        threads = max(1, min(self.options.threads or cpus // 2, cpus))
        shape = (want, max(1, min(self.options.batch_size, want)), self._flash_attention(), self.options.embedding)
        if self.ctx is None or shape != self.shape:
            self._free_context()
            ctx = self.graph.take_context(shape)
            if ctx is None:
                ctx = self._new_context(shape)
            self.ctx, self.ctx_size, self.shape = ctx, want, shape
        self.llama_cpp.llama_set_n_threads(self.ctx, threads, threads)

    def _new_context(self, shape: Shape) -> Any:
        llama_cpp = self.llama_cpp
        params = llama_cpp.llama_context_default_params()
        params.n_ctx, params.n_batch, params.flash_attn_type, params.embeddings = shape
        params.n_ubatch = params.n_batch
        ctx = llama_cpp.llama_init_from_model(self.graph.model, params)
        if not ctx:
            raise BackendError(f"llama.cpp could not create a context of {shape[0]} tokens")
        return ctx

    def _flash_attention(self) -> int:
        choice = self.options.flash_attn or ("auto" if self.graph.gpu_layers else "off")
        value = FLASH_ATTENTION.get(choice)
        if value is None:
            raise InvalidTensor(f"flash-attn {choice!r}: one of {', '.join(FLASH_ATTENTION)}")
        return value

    def _ensure_sampler(self, reset: bool) -> None:
        o = self.options
        if self.sampler is not None and self.sampler_options == o:
            if reset:
                self.llama_cpp.llama_sampler_reset(self.sampler)
            return
        grammar = self._grammar()  # before the chain: a refused grammar leaves nothing to free
        self._free_sampler()
        llama_cpp = self.llama_cpp
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = llama_cpp.llama_sampler_chain_add
        if o.repeat_penalty != 1.0 or o.presence_penalty or o.frequency_penalty:
            window = max(0, min(o.last_n_penalty, self.ctx_size))  # a guest's number sizes a buffer: bounded
            add(chain, llama_cpp.llama_sampler_init_penalties(self.graph.n_vocab, window, o.repeat_penalty,
                                                             o.frequency_penalty, o.presence_penalty))
        if grammar is not None:
            add(chain, grammar)  # before the choosing samplers: they choose among the tokens it allows
        if o.temp <= 0:
            add(chain, llama_cpp.llama_sampler_init_greedy())  # temperature 0: the likeliest token, every time
        else:
            add(chain, llama_cpp.llama_sampler_init_top_k(o.top_k))
            add(chain, llama_cpp.llama_sampler_init_top_p(o.top_p, 1))
            add(chain, llama_cpp.llama_sampler_init_min_p(o.min_p, 1))
            add(chain, llama_cpp.llama_sampler_init_temp(o.temp))
            add(chain, llama_cpp.llama_sampler_init_dist(o.seed & 0xFFFFFFFF))
        self.sampler, self.sampler_options = chain, o

    def _grammar(self) -> Any:
        """The grammar sampler of the options' json-schema (which wins, as in WasmEdge) or grammar, or None."""
        o = self.options
        if o.json_schema:
            if len(o.json_schema) > MAX_GRAMMAR_BYTES:
                raise InvalidTensor(f"json-schema of {len(o.json_schema)} bytes (at most {MAX_GRAMMAR_BYTES})")
            from llama_cpp.llama_grammar import json_schema_to_gbnf

            try:
                text = json_schema_to_gbnf(o.json_schema)
            except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as err:
                raise InvalidTensor(f"json-schema: not a schema llama.cpp can hold generation to: {err}") from None
            what = "the grammar of json-schema"
        elif o.grammar:
            text, what = o.grammar, "grammar"
        else:
            return None
        if len(text.encode()) > MAX_GRAMMAR_BYTES:
            raise InvalidTensor(f"{what} is {len(text.encode())} bytes (at most {MAX_GRAMMAR_BYTES})")
        sampler = self.llama_cpp.llama_sampler_init_grammar(self.graph.vocab, text.encode(), b"root")
        if not sampler:
            raise InvalidTensor(f"{what}: llama.cpp cannot parse it (GBNF with a `root` rule, no left recursion)")
        return sampler

    # -- outputs --------------------------------------------------------------------------------
    def output(self, index: int) -> tuple[int, int]:
        data = self.metadata() if index == METADATA else bytes(self.run.text)
        return self._hold(data)

    def output_single(self, index: int) -> tuple[int, int]:
        if index == METADATA:
            return self._hold(self.metadata())
        return self._hold(self.graph.piece(self.run.tokens[-1]) if self.run.tokens else b"")

    def fini_single(self) -> None:
        self.run = _Run()
        if self.sampler is not None:
            self.llama_cpp.llama_sampler_reset(self.sampler)

    def metadata(self) -> bytes:
        return (f'{{"input_tokens": {len(self.prompt)}, "output_tokens": {len(self.run.tokens)}, '
                f'"llama_build_number": {LLAMA_BUILD_NUMBER}, "llama_commit": "{LLAMA_COMMIT}"}}').encode()

    def _hold(self, data: bytes) -> tuple[int, int]:
        self.out = data  # kept alive until the host has copied it
        return ctypes.cast(ctypes.c_char_p(self.out), ctypes.c_void_p).value or 0, len(data)

    # -- lifetime -----------------------------------------------------------------------------
    def cancel(self) -> bool:
        self._cancelled.set()
        return True

    def close(self) -> None:
        self._free_sampler()
        self._free_context()

    def _free_sampler(self) -> None:
        if self.sampler is not None:
            self.llama_cpp.llama_sampler_free(self.sampler)
            self.sampler, self.sampler_options = None, None

    def _free_context(self) -> None:
        if self.ctx is not None:
            self.graph.give_back(self.shape, self.ctx)  # its KV cache is cleared before its next prompt
            self.ctx, self.ctx_size = None, 0


# What output 1 reports: the llama.cpp commit llama-cpp-python 0.3.36 vendors (its changelog names it; the
# binding built from source knows no build number).
LLAMA_BUILD_NUMBER = 0
LLAMA_COMMIT = "0c1e570"
FLASH_ATTENTION = {"on": 1, "enabled": 1, "off": 0, "disabled": 0, "auto": -1}  # WasmEdge's names, llama.cpp's values
