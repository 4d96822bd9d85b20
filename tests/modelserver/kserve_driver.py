"""Runs in the virtual environment of the `kserve` package (.venv-kserve: its pins clash with ours):
KServe's own clients against a model server. Prints one JSON document of what they got.

    python kserve_driver.py REST_URL GRPC_ADDRESS MODEL INPUT_NAME INPUT.npy
"""

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig


def request(model: str, name: str, x: np.ndarray) -> InferRequest:
    inp = InferInput(name=name, shape=list(x.shape), datatype="FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    return InferRequest(model_name=model, infer_inputs=[inp], request_id="k1")


async def main(rest: str, grpc_address: str, model: str, name: str, path: str) -> dict:
    x = np.load(path)
    out: dict = {}
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
    try:
        out["rest_live"] = await client.is_server_live(rest)
        out["rest_ready"] = await client.is_server_ready(rest)
        out["rest_model_ready"] = await client.is_model_ready(rest, model)
        resp = await client.infer(rest, request(model, name, x), model_name=model)
        out["rest"] = {o.name: o.as_numpy().tolist() for o in resp.outputs}
        out["rest_shapes"] = {o.name: list(o.shape) for o in resp.outputs}
        bad = InferInput(name=name, shape=list(x.shape), datatype="INT64")
        bad.set_data_from_numpy(x.astype(np.int64), binary_data=False)
        try:
            await client.infer(rest, InferRequest(model_name=model, infer_inputs=[bad]), model_name=model)
            out["rest_error"] = None
        except Exception as err:  # the client raises its own error types
            out["rest_error"] = str(err)
    finally:
        await client.close()
    grpc_client = InferenceGRPCClient(grpc_address, retries=0)
    try:
        out["grpc_live"] = await grpc_client.is_server_live()
        out["grpc_model_ready"] = await grpc_client.is_model_ready(model)
        resp = await grpc_client.infer(request(model, name, x))
        out["grpc"] = {o.name: o.as_numpy().tolist() for o in resp.outputs}
    finally:
        await grpc_client.close()
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:6]))))
