"""Bounded load on loopback: clients that leave mid-stream give back every slot, and 256
concurrent streams all finish when the waiting room admits them (bench/soak.py runs longer)."""
from __future__ import annotations

import concurrent.futures
import http.client as http_client
import json
import time

import pytest

from server_helpers import http, running_server

pytestmark = pytest.mark.gpu


def open_stream(base: str, max_tokens: int, timeout: float = 120) -> http_client.HTTPResponse:
    host, port = base.removeprefix("http://").split(":")
    connection = http_client.HTTPConnection(host, int(port), timeout=timeout)
    connection.request("POST", "/v1/completions", json.dumps({"prompt": "The", "max_tokens": max_tokens,
                                                              "stream": True, "temperature": 1.0}),
                       {"Content-Type": "application/json"})
    return connection.getresponse()


def rss_bytes(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def settled(base: str, seconds: float = 30) -> dict:
    deadline = time.time() + seconds
    while True:
        queue = http("GET", base + "/api/status")[1]["queue"]
        if (queue["active"], queue["waiting"]) == (0, 0) or time.time() > deadline:
            return queue
        time.sleep(0.2)


def test_a_hundred_clients_leaving_mid_stream_free_every_slot(tmp_path):
    with running_server(tmp_path, {"max_queue": 128, "max_batch": 8}) as base:
        def leave_after_first_chunk(_: int) -> bool:
            response = open_stream(base, 5000)
            first = response.read1(65536) if response.status == 200 else b""
            response.close()  # mid-stream: thousands of tokens still to go
            return response.status == 200 and first.startswith(b"data: ")

        with concurrent.futures.ThreadPoolExecutor(100) as pool:
            results = list(pool.map(leave_after_first_chunk, range(100)))
        assert all(results), results.count(False)
        assert settled(base) == {"active": 0, "waiting": 0, "max_batch": 8}
        status, answer = http("POST", base + "/v1/completions", {"prompt": "The", "max_tokens": 3})
        assert status == 200 and answer["usage"]["completion_tokens"] == 3


def stream_ok(base: str) -> bool | str:
    response = open_stream(base, 4, timeout=300)
    body = response.read()
    ok = response.status == 200 and body.endswith(b"data: [DONE]\n\n") and b'"error"' not in body
    return ok or f"{response.status}: {body[-300:]!r}"


def wave(base: str, size: int) -> list[bool | str]:
    with concurrent.futures.ThreadPoolExecutor(size) as pool:
        return list(pool.map(lambda _: stream_ok(base), range(size)))


def test_256_concurrent_streams_all_finish(tmp_path):
    """A burst of 256 connections at once (hypercorn's default backlog of 100 reset some)."""
    with running_server(tmp_path, {"max_queue": 300, "max_batch": 8, "queue_timeout": 300}) as base:
        started = time.time()
        failed = [result for result in wave(base, 256) if result is not True]
        assert not failed, (len(failed), time.time() - started, failed[:3])
        assert settled(base)["active"] == 0


def test_rss_returns_after_a_wave(tmp_path):
    """A second wave of 256 requests leaves the server no bigger than the first did (steps
    recorded ahead and dropped unsubmitted used to keep ~100 kB each: see Runtime.launch)."""
    with running_server(tmp_path, {"max_queue": 300, "max_batch": 8, "queue_timeout": 300}) as base:
        assert all(result is True for result in wave(base, 256))  # the allocator grows to a wave's size once
        before = rss_bytes(base.process.pid)
        assert all(result is True for result in wave(base, 256))
        after = rss_bytes(base.process.pid)
        assert after <= before * 1.10, (before, after)


def test_a_generation_past_its_deadline_gives_its_slot_back(tmp_path):
    """[model] max_generation_seconds: a client that never reads its stream, and one that asks
    for far more tokens than the deadline allows, both end there (finish_reason "length")."""
    with running_server(tmp_path, {"max_batch": 2, "max_generation_seconds": 1.5}) as base:
        silent = open_stream(base, 16000)  # never read: the server's socket buffer fills
        started = time.monotonic()
        status, answer = http("POST", base + "/v1/completions", {"prompt": "The", "max_tokens": 16000})
        assert status == 200 and answer["choices"][0]["finish_reason"] == "length"
        assert 0 < answer["usage"]["completion_tokens"] < 16000
        assert time.monotonic() - started < 15
        assert settled(base, 15) == {"active": 0, "waiting": 0, "max_batch": 2}
        silent.close()
