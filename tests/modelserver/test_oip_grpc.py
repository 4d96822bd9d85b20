"""`wasminfer model-server` over gRPC, driven by Triton's own client (tritonclient.grpc), and the
wire contract of our message table checked field by field against the client's."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from wasminfer_runtime.oip import grpc_schema

from .conftest import ModelServer, in_process

RNG = np.random.default_rng(11)


@pytest.fixture(scope="module")
def client(model_server: ModelServer) -> Iterator[grpcclient.InferenceServerClient]:
    c = grpcclient.InferenceServerClient(model_server.grpc)
    yield c
    c.close()


def test_every_message_has_the_wire_layout_clients_use() -> None:
    """Field numbers, types, labels and nesting as in the protocol's own definition (Triton's copy)."""
    for name in grpc_schema.MESSAGES:
        ours = grpc_schema.POOL.FindMessageTypeByName(f"inference.{name}")
        theirs = service_pb2.DESCRIPTOR.pool.FindMessageTypeByName(f"inference.{name}")

        def layout(d: object) -> list[tuple[str, int, int, int, str]]:
            return sorted((f.name, f.number, f.type, int(f.is_repeated), f.message_type.name if f.message_type else "") for f in d.fields)  # type: ignore[attr-defined]

        assert layout(ours) == layout(theirs), name
    service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method, (request, response) in grpc_schema.METHODS.items():
        rpc = service.methods_by_name[method]
        assert (rpc.input_type.name, rpc.output_type.name) == (request, response)


def test_health_and_metadata(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "wasminfer" and "binary_tensor_data" in meta["extensions"]
    assert client.is_model_ready("fc256")
    two = client.get_model_metadata("two-headed", as_json=True)
    assert two["platform"] == "onnxruntime_onnx"
    assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in two["inputs"]] == [("a", "FP32", [-1, 4]), ("k", "INT64", [1])]
    with pytest.raises(InferenceServerException, match="not served here") as err:
        client.get_model_metadata("nope")
    assert err.value.status() == "StatusCode.NOT_FOUND"


@pytest.mark.parametrize("model", ["fc256", "fc256-onnx"])
def test_fc256_answers_as_the_in_process_backend(model_server: ModelServer, client: grpcclient.InferenceServerClient, model: str) -> None:
    x = RNG.standard_normal((1, 256), dtype=np.float32)
    inp = grpcclient.InferInput("input", [1, 256], "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer(model, [inp], request_id="q1")
    (want,) = in_process(model_server.config, model, [x])
    np.testing.assert_array_equal(result.as_numpy("output"), want)
    assert result.get_response().id == "q1" and result.get_response().model_version == "1"


def test_a_dynamic_batch_and_outputs_as_asked(model_server: ModelServer, client: grpcclient.InferenceServerClient) -> None:
    x = RNG.random((2, 3, 224, 224), dtype=np.float32)
    inp = grpcclient.InferInput("x", [2, 3, 224, 224], "FP32")
    inp.set_data_from_numpy(x)
    got = client.infer("orientation", [inp]).as_numpy("fetch_name_0")
    (want,) = in_process(model_server.config, "orientation", [x])
    assert got.shape == (2, 4)
    np.testing.assert_array_equal(got, want)
    a, k = grpcclient.InferInput("a", [1, 4], "FP32"), grpcclient.InferInput("k", [1], "INT64")
    a.set_data_from_numpy(np.arange(4, dtype=np.float32).reshape(1, 4))
    k.set_data_from_numpy(np.array([9], dtype=np.int64))
    result = client.infer("two-headed", [k, a], outputs=[grpcclient.InferRequestedOutput("next")])
    assert result.as_numpy("next").tolist() == [10] and result.as_numpy("twice") is None


def test_typed_contents_as_well_as_raw(model_server: ModelServer) -> None:
    """A client that fills InferTensorContents instead of raw_input_contents."""
    request = service_pb2.ModelInferRequest(model_name="two-headed")
    a = request.inputs.add(name="a", datatype="FP32", shape=[1, 4])
    a.contents.fp32_contents.extend([1.0, 2.0, 3.0, 4.0])
    k = request.inputs.add(name="k", datatype="INT64", shape=[1])
    k.contents.int64_contents.append(5)
    with grpc.insecure_channel(model_server.grpc) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                    request_serializer=service_pb2.ModelInferRequest.SerializeToString,
                                    response_deserializer=service_pb2.ModelInferResponse.FromString)  # fmt: skip
        resp = infer(request)
        outs = {o.name: (o.datatype, list(o.shape), raw) for o, raw in zip(resp.outputs, resp.raw_output_contents)}
        assert np.frombuffer(outs["twice"][2], dtype="<f4").tolist() == [2.0, 4.0, 6.0, 8.0]
        assert outs["next"][:2] == ("INT64", [1]) and np.frombuffer(outs["next"][2], dtype="<i8").tolist() == [6]
        k.contents.int64_contents.append(6)
        with pytest.raises(grpc.RpcError) as err:
            infer(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "input 'k': contents has 2 elements; shape [1] takes 1" in str(err.value.details())


@pytest.mark.parametrize(
    ("build", "code", "says"),
    [
        (lambda: ("fc256", [("input", [1, 256], "INT64", np.zeros((1, 256), np.int64))]), "INVALID_ARGUMENT", "input 'input' takes FP32, not INT64"),
        (lambda: ("fc256", [("input", [1, 128], "FP32", np.zeros((1, 128), np.float32))]), "INVALID_ARGUMENT", "dimension 1 is 128"),
        (lambda: ("fc256", [("other", [1, 256], "FP32", np.zeros((1, 256), np.float32))]), "INVALID_ARGUMENT", "has no input 'other'"),
        (lambda: ("nope", [("input", [1, 256], "FP32", np.zeros((1, 256), np.float32))]), "NOT_FOUND", "model 'nope' is not served here"),
    ],
)  # fmt: skip
def test_bad_requests_get_the_code_and_the_reason(client: grpcclient.InferenceServerClient, build: object, code: str, says: str) -> None:
    model, tensors = build()  # type: ignore[operator]
    inputs = []
    for name, shape, datatype, array in tensors:
        inp = grpcclient.InferInput(name, shape, datatype)
        inp.set_data_from_numpy(array)
        inputs.append(inp)
    with pytest.raises(InferenceServerException) as err:
        client.infer(model, inputs)
    assert err.value.status() == f"StatusCode.{code}" and says in str(err.value.message())
    x = grpcclient.InferInput("input", [1, 256], "FP32")
    x.set_data_from_numpy(np.ones((1, 256), np.float32))
    assert client.infer("fc256", [x]).as_numpy("output").shape == (1, 256), "the next request is served"
