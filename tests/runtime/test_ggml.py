"""GGML models on llama.cpp through the wasi-nn imports WasmEdge's LLM guests call, with a tiny llama GGUF
built here (tests/guests/tiny_llama.py). Greedy decoding makes generation deterministic, so the tokens a
guest gets under `wasminfer run --nn-preload` are checked against llama.cpp's own generation of the same
prompt (llama-cpp-python's `Llama`, its own sampler). Limits come back as WasmEdge's errnos, and hostile
configs get clean errors."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import GUESTS, RunWasminfer

sys.path.insert(0, str(GUESTS))
import tiny_llama  # noqa: E402

GUEST = GUESTS / "nn_llm.wasm"
PROMPT = "hello world"
GREEDY = {"temp": 0.0, "ctx-size": 128}
END_OF_SEQUENCE, CONTEXT_FULL, PROMPT_TOO_LONG = 100, 101, 102


@pytest.fixture(scope="module")
def llama_cpp() -> Any:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.fail("llama-cpp-python is not installed: run `make llama-cpp` (it builds llama.cpp from source, once)")
    import llama_cpp

    return llama_cpp


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama.build(tmp_path_factory.mktemp("ggml") / "tiny.gguf")


@pytest.fixture(scope="module")
def reference(llama_cpp: Any, model: Path) -> Any:
    """What llama.cpp itself generates, greedily, for a prompt: the token pieces."""
    return tiny_llama.llama_cpp_generation(llama_cpp, model)


def run(wasminfer_run: RunWasminfer, model: Path, *args: str) -> tuple[int, list[str]]:
    done = wasminfer_run(["--nn-preload", f"tiny:GGML:AUTO:{model}", str(GUEST), "--", *args])
    assert b"Traceback" not in done.stderr, done.stderr.decode()
    return done.returncode, done.stdout.decode().split("\n")[:-1]


def meta(line: str) -> dict[str, Any]:
    assert line.startswith("meta "), line
    value: dict[str, Any] = json.loads(line[5:])
    return value


def test_a_whole_generation_is_what_llama_cpp_generates(wasminfer_run: RunWasminfer, model: Path, reference: Any) -> None:
    prompt_tokens, pieces = reference(PROMPT, 16)
    code, lines = run(wasminfer_run, model, "whole", "tiny", PROMPT, json.dumps({**GREEDY, "n-predict": 16}))
    assert code == 0, lines
    before, text, after = lines[0], lines[1], lines[-1]
    assert meta(before)["input_tokens"] == len(prompt_tokens) and meta(before)["output_tokens"] == 0
    assert text == "text " + b"".join(pieces).hex()
    assert meta(after)["output_tokens"] == len(pieces) == 16
    assert set(meta(after)) == {"input_tokens", "output_tokens", "llama_build_number", "llama_commit"}


def test_streamed_tokens_are_llama_cpps_one_by_one(wasminfer_run: RunWasminfer, model: Path, reference: Any) -> None:
    _, pieces = reference(PROMPT, 12)
    code, lines = run(wasminfer_run, model, "stream", "tiny", PROMPT, json.dumps(GREEDY), "12")
    assert code == 0, lines
    tokens = [line.removeprefix("token ") for line in lines if line.startswith("token ")]
    assert tokens == [p.hex() for p in pieces]
    assert meta(lines[-1])["output_tokens"] == 0, "fini_single ends the stream and its count, as WasmEdge's does"


def test_context_limits_come_back_as_wasmedges_errnos(wasminfer_run: RunWasminfer, model: Path) -> None:
    code, lines = run(wasminfer_run, model, "whole", "tiny", "abc " * 40, json.dumps({**GREEDY, "ctx-size": 32}))
    assert code == 0 and f"stop {PROMPT_TOO_LONG}" in lines, lines
    code, lines = run(wasminfer_run, model, "whole", "tiny", PROMPT, json.dumps({**GREEDY, "ctx-size": 24, "ignore-eos": True}))
    assert code == 0 and f"stop {CONTEXT_FULL}" in lines, lines
    assert meta(lines[-1])["input_tokens"] + meta(lines[-1])["output_tokens"] >= 24 - 1, lines
    code, lines = run(wasminfer_run, model, "stream", "tiny", "abc " * 40, json.dumps({**GREEDY, "ctx-size": 32}))
    assert code == 0 and f"stop {PROMPT_TOO_LONG}" in lines, lines


def test_hostile_configs_get_clean_errors(wasminfer_run: RunWasminfer, model: Path) -> None:
    # a context larger than the model was trained for (a KV cache the host would have to allocate)
    code, lines = run(wasminfer_run, model, "whole", "tiny", PROMPT, json.dumps({"ctx-size": 1 << 30}))
    assert code == 0 and "stop 1" in lines, lines
    # NaN, which Python's JSON reads, is no temperature; a penalty window of two billion tokens is the context's
    code, lines = run(wasminfer_run, model, "whole", "tiny", PROMPT, '{"temp": NaN}')
    assert code == 1 and "error load 1" in lines, lines
    code, lines = run(wasminfer_run, model, "whole", "tiny", PROMPT,
                      json.dumps({**GREEDY, "n-predict": 4, "repeat-penalty": 1.1, "last-n-penalty": 2_000_000_000}))
    assert code == 0 and meta(lines[-1])["output_tokens"] == 4, lines
    # a known key of the wrong type, in the metadata input
    code, lines = run(wasminfer_run, model, "meta", "tiny", PROMPT, json.dumps(GREEDY), '{"n-predict": "many"}')
    assert code == 1 and "error set_input_meta 1" in lines, lines
    # metadata that is not JSON
    code, lines = run(wasminfer_run, model, "meta", "tiny", PROMPT, json.dumps(GREEDY), "{not json")
    assert code == 1 and "error set_input_meta 2" in lines, lines
    # a model name that was not preloaded; one whose file is missing (WasmEdge's model_not_found)
    code, lines = run(wasminfer_run, model, "whole", "other", PROMPT)
    assert code == 1 and "error load 8" in lines, lines
    code, lines = run(wasminfer_run, model.with_name("missing.gguf"), "whole", "tiny", PROMPT)
    assert code == 1 and "error load 103" in lines, lines


def test_metadata_changes_the_next_generation_and_unload_reloads(wasminfer_run: RunWasminfer, model: Path,
                                                                reference: Any) -> None:
    _, pieces = reference(PROMPT, 5)
    code, lines = run(wasminfer_run, model, "meta", "tiny", PROMPT, json.dumps({**GREEDY, "n-predict": 40}), '{"n-predict": 5}')
    assert code == 0 and lines[1] == "text " + b"".join(pieces).hex(), lines
    code, lines = run(wasminfer_run, model, "whole", "tiny", PROMPT, json.dumps({**GREEDY, "n-predict": 5}), "3")
    texts = [line for line in lines if line.startswith("text ")]
    assert code == 0 and len(texts) == 3 and len(set(texts)) == 1, lines


def test_stream_stdout_prints_the_tokens_in_order_with_the_guests_own_output(wasminfer_run: RunWasminfer, model: Path,
                                                                             reference: Any) -> None:
    _, pieces = reference(PROMPT, 6)
    config = json.dumps({**GREEDY, "n-predict": 6, "stream-stdout": True})
    done = wasminfer_run(["--nn-preload", f"tiny:GGML:AUTO:{model}", str(GUEST), "--", "whole", "tiny", PROMPT, config])
    assert done.returncode == 0, done.stderr.decode()
    first_line, rest = done.stdout.split(b"\n", 1)
    assert first_line.startswith(b"meta "), done.stdout
    streamed = b"".join(pieces)
    assert rest.startswith(streamed + b"text " + streamed.hex().encode() + b"\n"), done.stdout


def test_a_generation_that_outlives_the_deadline_is_stopped(wasminfer_run: RunWasminfer, model: Path) -> None:
    endless = json.dumps({"temp": 0.0, "ctx-size": tiny_llama.N_CTX, "ignore-eos": True, "n-predict": -1})
    done = wasminfer_run(["--timeout", "1", "--nn-preload", f"tiny:GGML:AUTO:{model}", str(GUEST), "--",
                          "whole", "tiny", PROMPT, endless])
    assert done.returncode != 0 and b"execution timeout in a wasi-nn call" in done.stderr, done.stderr.decode()


def test_a_served_worker_answers_with_the_generated_text_and_a_hostile_one_gets_an_error(
    model: Path, reference: Any, tmp_path: Path
) -> None:
    import subprocess
    import time
    import urllib.error
    import urllib.request

    (tmp_path / "runtime.yaml").write_text(json.dumps({
        "models": [{"name": "tiny", "format": "ggml", "files": [str(model)]}],
        "workers": [{"name": "llm", "route": "/llm", "module": str(GUESTS / "wws_llm.wasm"),
                     "wasi_nn": {"enabled": True, "models": ["tiny"]}}],
    }))  # fmt: skip
    proc = subprocess.Popen([str(Path(sys.executable).parent / "wasminfer"), "serve", "--config", str(tmp_path / "runtime.yaml"),
                             "--port", "0", "--processes", "1"], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        url = next((line.split("http://", 1)[1].split()[0] for line in proc.stderr if "serving" in line and "http://" in line), "")
        assert url, "the server did not start"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://{url}/readyz", timeout=5) as r:
                    if r.status == 200:
                        break
            except urllib.error.HTTPError:
                time.sleep(0.1)

        def ask(config: str | None = None) -> tuple[int, str, str]:
            headers = {"x-llm-config": config} if config else {}
            request = urllib.request.Request(f"http://{url}/llm", data=PROMPT.encode(), headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=60) as r:
                    return r.status, r.read().decode(), r.headers.get("x-llm-usage", "")
            except urllib.error.HTTPError as err:
                return err.code, err.read().decode(), ""

        _, pieces = reference(PROMPT, 16)
        status, body, usage = ask()
        assert status == 200 and body == b"".join(pieces).hex(), body
        assert json.loads(usage)["output_tokens"] == 16
        status, body, _ = ask(json.dumps({"ctx-size": 1 << 30}))
        assert status == 500 and "compute: errno 1" in body, body
        status, body, _ = ask()
        assert status == 200 and body == b"".join(pieces).hex(), "the next request is served as before"
    finally:
        proc.terminate()
        proc.communicate(timeout=60)


def test_embedding_mode_gives_llama_cpps_embedding_in_wasmedges_json(wasminfer_run: RunWasminfer, model: Path,
                                                                       llama_cpp: Any) -> None:
    import math

    code, lines = run(wasminfer_run, model, "whole", "tiny", PROMPT, json.dumps({"embedding": True, "ctx-size": 128}))
    assert code == 0, lines
    ours = json.loads(bytes.fromhex(lines[1].removeprefix("text ")))
    assert set(ours) == {"n_embedding", "embedding"} and ours["n_embedding"] == tiny_llama.N_EMBD == len(ours["embedding"])
    assert meta(lines[-1])["output_tokens"] == 0
    # llama.cpp's own: this model pools nothing, so the prompt's embedding is its last token's, L2-normalised
    llm = llama_cpp.Llama(model_path=str(model), embedding=True, n_ctx=128, verbose=False)
    last = llm.embed(PROMPT, normalize=False)[-1]
    norm = math.sqrt(sum(v * v for v in last))
    assert max(abs(a - b / norm) for a, b in zip(ours["embedding"], last)) < 1e-6
    # a prompt longer than the batch takes is refused, as WasmEdge refuses it
    code, lines = run(wasminfer_run, model, "whole", "tiny", PROMPT * 4, json.dumps({"embedding": True, "ctx-size": 128, "batch-size": 8}))
    assert code == 0 and f"stop {PROMPT_TOO_LONG}" in lines, lines


def generated(lines: list[str]) -> bytes:
    (text,) = [line for line in lines if line.startswith("text ")]
    return bytes.fromhex(text.removeprefix("text "))


def test_grammar_and_json_schema_hold_generation_to_them(wasminfer_run: RunWasminfer, model: Path) -> None:
    """WasmEdge's `grammar` (GBNF) and `json-schema` keys: what the model generates is what they allow,
    where the same prompt alone gives something else; the end token follows once the grammar is done."""
    code, lines = run(wasminfer_run, model, "whole", "tiny", PROMPT, json.dumps({**GREEDY, "n-predict": 12}))
    free = generated(lines)
    assert code == 0 and free[:2] not in (b"ye", b"no", b"tr", b"fa"), free
    code, lines = run(wasminfer_run, model, "whole", "tiny", PROMPT,
                      json.dumps({**GREEDY, "n-predict": 12, "grammar": 'root ::= "yes" | "no"'}))
    assert code == 0 and generated(lines) in (b"yes</s>", b"no</s>"), lines
    code, lines = run(wasminfer_run, model, "whole", "tiny", PROMPT,
                      json.dumps({**GREEDY, "n-predict": 12, "json-schema": json.dumps({"type": "boolean"})}))
    assert code == 0 and generated(lines) in (b"true</s>", b"false</s>"), lines
    # sampled, not greedy: still an object with an integer `n`, whatever the seed
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    for seed in (1, 2, 3):
        code, lines = run(wasminfer_run, model, "whole", "tiny", PROMPT,
                          json.dumps({"temp": 0.8, "seed": seed, "n-predict": 60, "ctx-size": 128, "json-schema": json.dumps(schema)}))
        text = generated(lines)
        assert code == 0 and text.endswith(b"</s>"), lines
        assert isinstance(json.loads(text.removesuffix(b"</s>"))["n"], int), text


def test_bad_grammars_get_clean_errors(wasminfer_run: RunWasminfer, model: Path) -> None:
    for config in ({"grammar": "root ::= root \"a\""},  # left recursion: llama.cpp refuses it
                   {"grammar": "not gbnf"},
                   {"json-schema": "{not json"}):
        code, lines = run(wasminfer_run, model, "whole", "tiny", PROMPT, json.dumps({**GREEDY, **config}))
        assert code == 0 and "stop 1" in lines, (config, lines)
    # past the size bound, in the metadata input (a load config is bounded to 64 KiB before)
    huge = json.dumps({"grammar": "root ::= " + " | ".join(['"a"'] * 12000)})
    code, lines = run(wasminfer_run, model, "meta", "tiny", PROMPT, json.dumps(GREEDY), huge)
    assert code == 0 and "stop 1" in lines, lines[-3:]
    code, lines = run(wasminfer_run, model, "whole", "tiny", PROMPT, json.dumps({**GREEDY, "n-predict": 4}))
    assert code == 0 and meta(lines[-1])["output_tokens"] == 4, "the next run generates as before"


def test_gguf_bytes_through_load_are_refused_before_llama_cpp_reads_them(wasminfer_run: RunWasminfer, model: Path) -> None:
    """GGML models load in the serving process: a guest's own bytes are never handed to llama.cpp's parser."""
    done = wasminfer_run(["-S", "nn", "--dir", f"{model.parent}::/m", str(GUESTS / "nn_infer.wasm"), "--", "ggml", f"/m/{model.name}", "1"])
    assert done.returncode == 1 and done.stdout.decode().splitlines() == ["error load 6"], done.stdout  # unsupported operation
    assert b"GGML models are loaded by name" in done.stderr, done.stderr.decode()


# --- the same models through the WIT interface, from a component -------------------------------------------

COMPONENT = GUESTS / "llm_component.wasm"
TOO_LARGE, INVALID_ARGUMENT, INVALID_ENCODING = 5, 0, 1  # wasi:nn error-code cases


def run_component(wasminfer_run: RunWasminfer, model: Path, *inputs: str) -> tuple[int, dict[str, bytes], list[str]]:
    """The component's outputs by name, and its other lines."""
    done = wasminfer_run(["--nn-preload", f"tiny:GGML:AUTO:{model}", str(COMPONENT), "--", "tiny", *inputs])
    assert b"Traceback" not in done.stderr, done.stderr.decode()
    outputs, other = {}, []
    for line in done.stdout.decode().splitlines():
        words = line.split(" ")
        if words[0] == "output":
            name, ty, dims, nbytes, data = words[1], int(words[2]), words[3], int(words[4]), bytes.fromhex(words[5])
            assert (ty, dims, nbytes) == (4, str(len(data)), len(data)), f"{name}: not a U8 tensor of its bytes: {line}"
            outputs[name] = data
        else:
            other.append(line)
    return done.returncode, outputs, other


def test_a_component_generates_what_llama_cpp_generates(wasminfer_run: RunWasminfer, model: Path, reference: Any) -> None:
    prompt_tokens, pieces = reference(PROMPT, 16)
    config = json.dumps({**GREEDY, "n-predict": 16})
    code, outputs, other = run_component(wasminfer_run, model, f"prompt={PROMPT}", f"metadata={config}")
    assert code == 0 and not other, other
    assert list(outputs) == ["0", "1"], "outputs keep the indices of WasmEdge's GGML API"
    assert outputs["0"] == b"".join(pieces)
    counts = json.loads(outputs["1"])
    assert (counts["input_tokens"], counts["output_tokens"]) == (len(prompt_tokens), 16)
    # inputs by index, as WasmEdge's set_input numbers them: the same generation
    code, by_index, _ = run_component(wasminfer_run, model, f"1={config}", f"0={PROMPT}")
    assert code == 0 and by_index == outputs


def test_a_components_generation_that_fills_the_context_ends_with_its_text(wasminfer_run: RunWasminfer, model: Path,
                                                                            reference: Any) -> None:
    config = json.dumps({**GREEDY, "ctx-size": 24, "ignore-eos": True})
    code, outputs, other = run_component(wasminfer_run, model, f"prompt={PROMPT}", f"metadata={config}")
    assert code == 0, other
    counts = json.loads(outputs["1"])
    assert counts["input_tokens"] + counts["output_tokens"] >= 24 - 1, counts
    _, pieces = reference(PROMPT, counts["output_tokens"])
    assert outputs["0"] == b"".join(pieces)


def test_a_components_bad_inputs_get_wasi_nn_errors(wasminfer_run: RunWasminfer, model: Path) -> None:
    code, _, other = run_component(wasminfer_run, model, "prompt=" + "abc " * 40, "metadata=" + json.dumps({**GREEDY, "ctx-size": 32}))
    assert code == 1 and other[0].startswith(f"error compute {TOO_LARGE} the prompt is "), other
    code, _, other = run_component(wasminfer_run, model, "question=hi")
    assert code == 1 and other == [f"error compute {INVALID_ARGUMENT} the model has no input 'question' (its inputs: 'prompt', 'metadata')"]
    code, _, other = run_component(wasminfer_run, model, "prompt=hi", "metadata={not json")
    assert code == 1 and other[0].startswith(f"error compute {INVALID_ENCODING} the metadata (input 1) is not JSON"), other
    code, _, other = run_component(wasminfer_run, model, f"prompt={PROMPT}", "metadata=" + json.dumps({"ctx-size": 1 << 30}))
    assert code == 1 and other[0].startswith(f"error compute {INVALID_ARGUMENT} "), other
