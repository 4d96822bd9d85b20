"""A flood of inference requests against a model server that takes two at a time: the rest get 503
with Retry-After before their bodies are read, those taken get their normal answers, and the next
request is served."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .conftest import free_port, model_config, wait_ready


def post(url: str, body: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def test_requests_beyond_the_limit_are_turned_away_and_the_rest_served(tmp_path: Path) -> None:
    config = model_config(tmp_path)
    port = free_port()
    log = tmp_path / "model-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "wasminfer_runtime", "model-server", str(config), "--port", str(port),
                                 "--grpc-port", "-1", "--threads", "1", "--max-requests", "2"], stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, log)
        x = np.random.default_rng(1).random((4, 3, 224, 224), dtype=np.float32)
        body = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}).encode()
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda _: post(f"{url}/v2/models/orientation/infer", body), range(12)))
        served = [doc for status, _, doc in answers if status == 200]
        turned = [(headers, doc) for status, headers, doc in answers if status == 503]
        assert len(served) + len(turned) == 12, [a[0] for a in answers]
        assert served and turned, [a[0] for a in answers]
        assert all("inference request(s) in hand (--max-requests)" in str(doc["error"]) for _, doc in turned)
        assert all(h.get("Retry-After") == "1" for h, _ in turned)
        first = served[0]["outputs"][0]  # type: ignore[index]
        assert all(doc["outputs"][0] == first for doc in served), "every request taken gets the same, normal answer"  # type: ignore[index]
        status, _, doc = post(f"{url}/v2/models/orientation/infer", body)
        assert status == 200 and doc["outputs"][0] == first  # type: ignore[index]
    finally:
        proc.terminate()
        proc.wait(20)
