"""The execution timeout covers guests asleep in WASI calls, and shutdown keeps to its grace."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from wasminfer_runtime.config import RuntimeConfig

from .support import Reply, ServerThread, request, wait_ready, wasminfer_command

SLEEP_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def url(guests: dict[str, Path]) -> Iterator[str]:
    cfg = RuntimeConfig.model_validate({"workers": [
        {"name": "sleep", "module": guests["hostile_sleep"], "route": "/sleep",
         "limits": {"timeout_seconds": SLEEP_TIMEOUT}},
        {"name": "hello", "module": guests["hello"], "route": "/hello"},
    ]})
    with ServerThread(cfg) as server:
        wait_ready(server.url)
        yield server.url


def _timed(url: str) -> tuple[Reply, float]:
    t0 = time.monotonic()
    reply = request(url, timeout=60)
    return reply, time.monotonic() - t0


def test_a_sleeping_guest_gets_504_at_its_timeout_and_frees_its_thread(url: str) -> None:
    # As many hour-long sleepers as the worker may run at once (every invocation thread but one).
    sleepers = 7
    with ThreadPoolExecutor(sleepers) as pool:
        futures = [pool.submit(_timed, url + "/sleep") for _ in range(sleepers)]
        time.sleep(0.2)
        # Meanwhile another worker answers promptly, on the thread the sleepers leave it.
        while not all(f.done() for f in futures):
            hello, seconds = _timed(url + "/hello")
            assert hello.status == 200 and seconds < 1.0, (hello.status, seconds)
            time.sleep(0.1)
        results = [f.result() for f in futures]
    for reply, seconds in results:
        assert reply.status == 504, reply.body
        doc = reply.json()
        assert doc["error"] == "timeout" and "2 s execution timeout" in doc["message"], doc
        assert 1.5 < seconds < 10, seconds
    # Every thread is free again: one more request than the worker's slots, all served at once.
    with ThreadPoolExecutor(sleepers + 1) as pool:
        again = list(pool.map(_timed, [url + "/sleep?ms=50"] * (sleepers + 1)))
    for reply, seconds in again:  # and a short sleep within the timeout returns normally
        assert reply.status == 200, reply.body
        assert reply.json()["rc"] == 0 and 50 <= reply.json()["slept_ms"] < 1000, reply.body
        assert seconds < 5, seconds


def test_poll_oneoff_checks_guest_pointers_and_keeps_its_semantics(url: str) -> None:
    reply = request(url + "/sleep?poll=bad")
    assert reply.status == 200, reply.body
    # Subscriptions, events or the count pointer beyond memory: fault (21); a count of 2^31 - 1,
    # no subscriptions, an unknown subscription tag: inval (28).
    assert reply.json() == [21, 21, 21, 28, 28, 28]
    assert request(url + "/hello").status == 200
    # Until an absolute time on the guest's monotonic clock (clock_nanosleep with TIMER_ABSTIME).
    absolute = request(url + "/sleep?poll=abs").json()
    assert absolute["rc"] == 0 and 45 <= absolute["slept_ms"] < 1000, absolute
    # A ready fd beside an hour-long clock: the call returns at once with the fd's event.
    t0 = time.monotonic()
    fd = request(url + "/sleep?poll=fd").json()
    assert time.monotonic() - t0 < 1.0
    assert fd == {"errno": 0, "nevents": 1, "userdata": 2, "type": 1}, fd


def test_sigterm_stops_sleeping_and_spinning_guests_within_the_grace(guests: dict[str, Path], tmp_path: Path) -> None:
    grace = 2.0
    config = tmp_path / "runtime.yaml"
    config.write_text(
        f"server: {{host: 127.0.0.1, port: 0, shutdown_grace_seconds: {grace}}}\n"
        "workers:\n"
        f"  - {{name: sleep, module: {guests['hostile_sleep']}, route: /sleep, limits: {{timeout_seconds: 60}}}}\n"
        f"  - {{name: spin, module: {guests['hostile_loop']}, route: /spin, limits: {{timeout_seconds: 60}}}}\n"
    )
    proc = subprocess.Popen([*wasminfer_command(), "serve", "--config", str(config)], stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        found = None
        while found is None:
            line = proc.stderr.readline()
            assert line, f"server exited early (rc={proc.poll()}):\n{''.join(lines)}"
            lines.append(line)
            found = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
        url = found.group(1)
        wait_ready(url)
        with ThreadPoolExecutor(2) as pool:
            in_flight = [pool.submit(_timed, url + path) for path in ("/sleep", "/spin")]
            time.sleep(0.5)  # both guests are running
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=grace + 30)
            stopped_in = time.monotonic() - t0
            answers = [f.result()[0] for f in in_flight]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = "".join(lines) + proc.stderr.read()
    assert rc == 0, log
    assert stopped_in < grace + 3, (stopped_in, log)
    for reply in answers:  # answered before the grace ended, as timeouts
        assert reply.status == 504, reply.body
        assert "shutting down" in reply.json()["message"], reply.body
