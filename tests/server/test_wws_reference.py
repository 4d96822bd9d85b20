"""wasminfer against a recorded wws 1.7.0: the same folder, the same requests, field by field.

tests/wws_reference/ holds the folder (app/), the requests (cases.py) and wws's answers
(answers.json, recorded from a real wws by record.py). One test per request, so each difference
shows on its own; each failure lists every field that differs, wws's value beside ours.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from wasminfer_runtime.wws import load_wws_folder
from wws_reference.cases import ANSWERS, CASES, SERVER_ENV, build_site, differences, normalize, send

from .support import ServerThread, wait_ready

RECORDED: dict[str, Any] = json.loads(ANSWERS.read_text())["answers"]


@pytest.fixture(scope="module")
def replies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Any]]]:
    """wasminfer's answers to every case, sent once and in order (the kv counter counts them)."""
    site = build_site(Path(tmp_path_factory.mktemp("wws-reference")))
    with pytest.MonkeyPatch.context() as mp:
        for name, value in SERVER_ENV.items():
            mp.setenv(name, value)
        with ServerThread(load_wws_folder(site)) as server:
            port = urlsplit(server.url).port
            assert port is not None
            wait_ready(server.url)  # wws compiles every worker before it listens
            yield {case.name: normalize(send(port, case), port) for case in CASES}


def test_the_recording_covers_every_case() -> None:
    assert list(RECORDED) == [case.name for case in CASES], "answers.json is stale: run tests/wws_reference/record.py"


@pytest.mark.parametrize("name", [case.name for case in CASES])
def test_same_answer_as_wws(replies: dict[str, dict[str, Any]], name: str) -> None:
    diffs = differences(RECORDED[name], replies[name])
    assert not diffs, f"{name}: wasminfer differs from wws 1.7.0:\n  " + "\n  ".join(diffs)
