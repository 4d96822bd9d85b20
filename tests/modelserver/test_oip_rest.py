"""`wasminfer model-server` over REST, driven by Triton's own client (tritonclient.http): health,
metadata and inference, binary and JSON, with the numbers the in-process backend gives."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from .conftest import ModelServer, in_process

RNG = np.random.default_rng(7)


@pytest.fixture(scope="module")
def client(model_server: ModelServer) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(model_server.host_port)


def raw(server: ModelServer, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(server.url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_health_and_server_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "wasminfer" and "binary_tensor_data" in meta["extensions"]
    assert client.is_model_ready("fc256") and client.is_model_ready("orientation", "1")
    assert not client.is_model_ready("no-such-model")


def test_model_metadata_tells_real_names_datatypes_and_shapes(client: httpclient.InferenceServerClient) -> None:
    fc = client.get_model_metadata("fc256")
    assert fc["name"] == "fc256" and fc["versions"] == ["1"] and fc["platform"] == "openvino"
    assert fc["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [1, 256]}]
    assert fc["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [1, 256]}]
    orientation = client.get_model_metadata("orientation", "1")
    assert orientation["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3, 224, 224]}], "a dynamic batch is -1"
    two = client.get_model_metadata("two-headed")
    assert two["platform"] == "onnxruntime_onnx"
    assert [(t["name"], t["datatype"], t["shape"]) for t in two["inputs"]] == [("a", "FP32", [-1, 4]), ("k", "INT64", [1])]
    assert [(t["name"], t["datatype"], t["shape"]) for t in two["outputs"]] == [("twice", "FP32", [-1, 4]), ("next", "INT64", [1])]
    with pytest.raises(InferenceServerException, match="not served here"):
        client.get_model_metadata("no-such-model")
    with pytest.raises(InferenceServerException, match="no version '2'"):
        client.get_model_metadata("fc256", "2")


def infer(client: httpclient.InferenceServerClient, model: str, arrays: dict[str, np.ndarray], binary: bool,
          outputs: list[tuple[str, bool]] | None = None) -> httpclient.InferResult:  # fmt: skip
    inputs = []
    for name, array in arrays.items():
        datatype = {np.float32: "FP32", np.int64: "INT64"}[array.dtype.type]
        inp = httpclient.InferInput(name, list(array.shape), datatype)
        inp.set_data_from_numpy(array, binary_data=binary)
        inputs.append(inp)
    requested = None if outputs is None else [httpclient.InferRequestedOutput(n, binary_data=b) for n, b in outputs]
    return client.infer(model, inputs, outputs=requested)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("model", ["fc256", "fc256-onnx"])
def test_fc256_answers_as_the_in_process_backend(model_server: ModelServer, client: httpclient.InferenceServerClient,
                                                 model: str, binary: bool) -> None:  # fmt: skip
    x = RNG.standard_normal((1, 256), dtype=np.float32)
    result = infer(client, model, {"input": x}, binary)
    got = result.as_numpy("output")
    (want,) = in_process(model_server.config, model, [x])
    assert got.dtype == np.float32 and got.shape == (1, 256)
    np.testing.assert_array_equal(got, want)
    response = result.get_response()
    assert response["model_name"] == model and response["model_version"] == "1"


def test_a_dynamic_batch_answers_with_its_own_shape(model_server: ModelServer, client: httpclient.InferenceServerClient) -> None:
    x = RNG.random((3, 3, 224, 224), dtype=np.float32)
    got = infer(client, "orientation", {"x": x}, True).as_numpy("fetch_name_0")
    (want,) = in_process(model_server.config, "orientation", [x])
    assert got.shape == (3, 4)
    np.testing.assert_array_equal(got, want)
    assert (got.argmax(axis=1) == want.argmax(axis=1)).all()


def test_inputs_by_name_and_outputs_as_asked(client: httpclient.InferenceServerClient) -> None:
    a = RNG.standard_normal((2, 4), dtype=np.float32)
    k = np.array([41], dtype=np.int64)
    # Inputs in the other order than the model's; one output binary, one JSON; then one output only.
    result = infer(client, "two-headed", {"k": k, "a": a}, True, outputs=[("next", False), ("twice", True)])
    np.testing.assert_array_equal(result.as_numpy("twice"), a + a)
    assert result.as_numpy("next").tolist() == [42]
    outs = {o["name"]: o for o in result.get_response()["outputs"]}
    assert outs["next"]["data"] == [42] and "binary_data_size" in outs["twice"]["parameters"]
    only = infer(client, "two-headed", {"k": k, "a": a}, False, outputs=[("next", False)])
    assert [o["name"] for o in only.get_response()["outputs"]] == ["next"]


def test_json_without_the_binary_extension(model_server: ModelServer) -> None:
    """A plain JSON client (curl): nested data, and every output as JSON when none is asked in binary."""
    body = {"id": "r1", "inputs": [{"name": "a", "shape": [1, 4], "datatype": "FP32", "data": [[1, 2, 3, 4.5]]},
                                   {"name": "k", "shape": [1], "datatype": "INT64", "data": [7]}]}  # fmt: skip
    status, headers, payload = raw(model_server, "POST", "/v2/models/two-headed/infer", json.dumps(body).encode(),
                                   {"Content-Type": "application/json"})  # fmt: skip
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    doc = json.loads(payload)
    assert doc["id"] == "r1" and doc["model_name"] == "two-headed"
    assert doc["outputs"] == [{"name": "twice", "datatype": "FP32", "shape": [1, 4], "data": [2.0, 4.0, 6.0, 9.0]},
                              {"name": "next", "datatype": "INT64", "shape": [1], "data": [8]}]  # fmt: skip


def test_compressed_requests_and_answers(client: httpclient.InferenceServerClient, model_server: ModelServer) -> None:
    x = RNG.standard_normal((1, 256), dtype=np.float32)
    (want,) = in_process(model_server.config, "fc256", [x])
    for algorithm in ("gzip", "deflate"):
        inp = httpclient.InferInput("input", [1, 256], "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer("fc256", [inp], request_compression_algorithm=algorithm, response_compression_algorithm=algorithm)
        np.testing.assert_array_equal(result.as_numpy("output"), want)
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 256], "datatype": "FP32", "data": x.ravel().tolist()}]}).encode()
    status, headers, payload = raw(model_server, "POST", "/v2/models/fc256/infer", gzip.compress(body),
                                   {"Content-Encoding": "gzip", "Accept-Encoding": "gzip"})  # fmt: skip
    assert status == 200 and headers.get("Content-Encoding") == "gzip"
    assert np.array_equal(np.array(json.loads(gzip.decompress(payload))["outputs"][0]["data"], dtype=np.float32), want.ravel())


def error_of(server: ModelServer, path: str, doc: Any = None, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, str]:
    data = body if body is not None else json.dumps(doc).encode()
    status, _, payload = raw(server, "POST", path, data, headers)
    parsed = json.loads(payload)
    assert set(parsed) == {"error"}, parsed
    return status, str(parsed["error"])


def fc_input(**overrides: Any) -> dict[str, Any]:
    inp: dict[str, Any] = {"name": "input", "shape": [1, 256], "datatype": "FP32", "data": [0.5] * 256}
    inp.update(overrides)
    return {"inputs": [inp]}


@pytest.mark.parametrize(
    ("path", "doc", "status", "says"),
    [
        ("/v2/models/nope/infer", fc_input(), 404, "model 'nope' is not served here"),
        ("/v2/models/fc256/versions/3/infer", fc_input(), 404, "no version '3'"),
        ("/v2/models/fc256/infer", fc_input(datatype="INT64", data=[1] * 256), 400, "input 'input' takes FP32, not INT64"),
        ("/v2/models/fc256/infer", fc_input(datatype="BYTES"), 400, "datatype BYTES is not supported here"),
        ("/v2/models/fc256/infer", fc_input(datatype="FP99"), 400, "unknown datatype 'FP99'"),
        ("/v2/models/fc256/infer", fc_input(shape=[1, 255], data=[0.5] * 255), 400, "dimension 1 is 255; the model fixes it at 256"),
        ("/v2/models/fc256/infer", fc_input(data=[0.5] * 3), 400, "data has 3 elements; shape [1, 256] takes 256"),
        ("/v2/models/fc256/infer", fc_input(data=["x"] * 256), 400, "data is not a list of FP32 values"),
        ("/v2/models/fc256/infer", fc_input(shape=[1, -256]), 400, "negative or non-integer dimension"),
        ("/v2/models/fc256/infer", fc_input(name="wrong"), 400, "has no input 'wrong' (inputs: input)"),
        ("/v2/models/fc256/infer", {"inputs": []}, 400, "input 'input' of model 'fc256' is missing"),
        ("/v2/models/fc256/infer", {"inputs": fc_input()["inputs"] * 2}, 400, "input(s) given twice: input"),
        ("/v2/models/fc256/infer", {**fc_input(), "outputs": [{"name": "nope"}]}, 400, "has no output 'nope' (outputs: output)"),
        ("/v2/models/fc256/infer", {"outputs": []}, 400, "inputs: Field required"),
        ("/v2/models/fc256/infer", fc_input(shape=[1 << 20, 1 << 20]), 400, "more than"),
        ("/v2/models/orientation/infer", {"inputs": [{"name": "x", "shape": [100000, 3, 224, 224], "datatype": "FP32", "data": [0]}]}, 400,
         "has 15052800000 elements, more than 268435456"),
        ("/v2/models/orientation/infer", {"inputs": [{"name": "x", "shape": [0, 3, 224, 224], "datatype": "FP32", "data": []}]}, 400,
         "dimension 0 is 0; the model's dynamic dimensions take 1 to"),
    ],
)  # fmt: skip
def test_bad_requests_get_the_protocols_error_body(model_server: ModelServer, path: str, doc: Any, status: int, says: str) -> None:
    got_status, message = error_of(model_server, path, doc)
    assert (got_status, says in message) == (status, True), message


def test_binary_framing_errors(model_server: ModelServer) -> None:
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, 256], "datatype": "FP32", "parameters": {"binary_data_size": 1024}}]}).encode()
    data = np.zeros(256, dtype=np.float32).tobytes()
    path = "/v2/models/fc256/infer"
    status, msg = error_of(model_server, path, body=header + data[:-4], headers={"Inference-Header-Content-Length": str(len(header))})
    assert status == 400 and "runs past the 1020 bytes sent" in msg
    status, msg = error_of(model_server, path, body=header + data + b"xx", headers={"Inference-Header-Content-Length": str(len(header))})
    assert status == 400 and "2 bytes after the JSON header belong to no input" in msg
    status, msg = error_of(model_server, path, body=header + data, headers={"Inference-Header-Content-Length": str(len(header) + 10**6)})
    assert status == 400 and "is not a length within" in msg
    status, msg = error_of(model_server, path, body=header, headers={})
    assert status == 400 and "without binary data" in msg
    status, msg = error_of(model_server, path, body=b"{not json")
    assert status == 400 and "invalid inference request" in msg


def test_limits_and_unknown_paths(model_server: ModelServer) -> None:
    status, msg = error_of(model_server, "/v2/models/fc256/infer", body=b"x" * (9 * 1024 * 1024))
    assert status == 413 and "--max-request-bytes" in msg
    status, _, payload = raw(model_server, "GET", "/v2/nothing/here")
    assert status == 404 and "error" in json.loads(payload)
    # The next request is served normally.
    x = np.ones((1, 256), dtype=np.float32)
    status, _, payload = raw(model_server, "POST", "/v2/models/fc256/infer",
                             json.dumps({"inputs": [{"name": "input", "shape": [1, 256], "datatype": "FP32", "data": x.ravel().tolist()}]}).encode())  # fmt: skip
    assert status == 200 and len(json.loads(payload)["outputs"][0]["data"]) == 256


def test_metrics_count_inferences(model_server: ModelServer) -> None:
    status, _, payload = raw(model_server, "GET", "/metrics")
    text = payload.decode()
    assert status == 200
    assert 'wasminfer_model_ready{model="fc256"} 1.0' in text
    assert 'wasminfer_inference_duration_seconds_count{model="fc256"}' in text
