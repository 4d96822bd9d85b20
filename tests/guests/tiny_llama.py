"""A tiny llama-architecture GGUF model with random weights, built with the `gguf` package: two layers,
a 64-wide embedding, and a SentencePiece vocabulary of the printable ASCII characters, the 256 byte
tokens and <s>, </s>, <unk>. It generates nonsense, but deterministically: greedy decoding of a fixed
prompt gives the same tokens every run, so a guest's tokens can be checked against llama.cpp's own."""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

N_EMBD, N_LAYER, N_HEAD, N_FF, N_CTX = 64, 2, 4, 128, 4096
BOS, EOS, UNK = 1, 2, 0


def vocabulary() -> tuple[list[bytes], list[float], list[int]]:
    import gguf

    tokens = [b"<unk>", b"<s>", b"</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>".encode() for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    words = ["\u2581" + c for c in "abcdefghijklmnopqrstuvwxyz"] + [chr(c) for c in range(33, 127)]
    tokens += [w.encode() for w in words]
    types += [gguf.TokenType.NORMAL] * len(words)
    scores = [0.0] * 3 + [-1000.0] * 256 + [-float(i) for i in range(len(words))]
    return tokens, scores, [int(t) for t in types]


def build(path: Path, seed: int = 7) -> Path:
    """Writes the model to path (a .gguf file) and returns it."""
    import gguf

    rng = np.random.default_rng(seed)
    tokens, scores, types = vocabulary()
    n_vocab = len(tokens)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("wasminfer-tiny-llama")
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(BOS)
    w.add_eos_token_id(EOS)
    w.add_unk_token_id(UNK)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    w.add_tensor("token_embd.weight", weight(n_vocab, N_EMBD))
    for i in range(N_LAYER):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        for part in ("q", "k", "v", "output"):
            w.add_tensor(f"blk.{i}.attn_{part}.weight", weight(N_EMBD, N_EMBD))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", weight(N_FF, N_EMBD))
        w.add_tensor(f"blk.{i}.ffn_up.weight", weight(N_FF, N_EMBD))
        w.add_tensor(f"blk.{i}.ffn_down.weight", weight(N_EMBD, N_FF))
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    w.add_tensor("output.weight", weight(n_vocab, N_EMBD) * 4)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def llama_cpp_generation(llama_cpp: Any, path: Path) -> Callable[[str, int], tuple[list[int], list[bytes]]]:
    """llama.cpp's own greedy generation with the model at `path` (llama-cpp-python's `Llama` and its
    sampler): for a prompt and a token count, the prompt's tokens and the generated tokens' pieces."""
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=128, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)

    def piece(token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, True)
        return buf.raw[:n]

    def generate(prompt: str, n: int) -> tuple[list[int], list[bytes]]:
        prompt_tokens: list[int] = llm.tokenize(prompt.encode(), add_bos=True, special=True)
        llm.reset()
        pieces = []
        for token in llm.generate(prompt_tokens, temp=0.0, top_k=1, reset=True):
            pieces.append(piece(token))
            if len(pieces) == n or llama_cpp.llama_vocab_is_eog(vocab, token):
                break
        return prompt_tokens, pieces

    return generate


if __name__ == "__main__":
    print(build(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-llama.gguf")))
