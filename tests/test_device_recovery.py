"""A lost GPU device end to end, on the tiny model: the server's first device is destroyed for
real (AI00_TRIO_FAULT_INJECTION, read at startup only) while a stream runs. The stream ends
with a device_lost error event and [DONE], /ready is 503 while the model is rebuilt on a new
device (the first two rebuilds are made to fail, so the retries are exercised and the rebuild
takes 1 + 2 s: time enough to see the 503 on a busy machine), then 200, and the next
request is answered exactly as before the loss."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from email.message import Message

import pytest

from server_helpers import http, running_server

pytestmark = pytest.mark.gpu

PROMPT = {"model": "m", "prompt": "The quick", "temperature": 0, "max_tokens": 8}


def get(url: str) -> tuple[int, dict, Message]:
    """Status, JSON body and headers of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), error.headers


def stream_lines(url: str, body: dict) -> list[str]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return [line.decode().strip()[6:] for line in response if line.startswith(b"data: ")]


def test_a_lost_device_fails_the_stream_then_the_server_recovers(tmp_path, monkeypatch):
    monkeypatch.setenv("AI00_TRIO_FAULT_INJECTION", "device_lost_after_steps:20,failed_rebuilds:2")
    with running_server(tmp_path, {"max_batch": 2}) as base:
        status, before = http("POST", base + "/v1/completions", PROMPT)
        assert status == 200 and before["choices"][0]["text"]

        lines = stream_lines(base + "/v1/completions", {**PROMPT, "max_tokens": 500, "stream": True})
        assert lines[-1] == "[DONE]"
        chunks = [json.loads(line) for line in lines[:-1]]
        tokens, error = chunks[:-1], chunks[-1]
        assert tokens and all(chunk["choices"] for chunk in tokens)  # it streamed, then the device went
        assert error["error"]["code"] == "device_lost" and error["error"]["type"] == "server_error"
        assert "re-creating it" in error["error"]["message"]

        status, body, headers = get(base + "/ready")
        assert status == 503 and body["error"]["code"] == "device_lost" and headers.get("Retry-After") == "5"
        status, body = http("POST", base + "/v1/completions", PROMPT)
        assert status == 503 and body["error"]["code"] == "device_lost"
        assert http("GET", base + "/health")[0] == 200  # alive all along

        deadline = time.monotonic() + 30
        while (status := get(base + "/ready")[0]) != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status == 200

        status, after = http("POST", base + "/v1/completions", PROMPT)
        assert status == 200 and after["choices"][0]["text"] == before["choices"][0]["text"]
        status, figures = http("GET", base + "/api/status")
        assert status == 200
        device = figures["device"]
        assert (device["losses"], device["recoveries"], device["failed_rebuilds"], device["recovering"]) == \
            (1, 1, 2, False)
        assert "lost" in device["last_reason"] and device["last_recovery_seconds"] >= 3.0  # the retries waited 1 + 2 s
        status, metrics = http("GET", base + "/metrics")
        assert "ai00_device_losses_total 1.0" in metrics and "ai00_device_recoveries_total 1.0" in metrics
        assert "ai00_device_recovering 0.0" in metrics and "ai00_ready 1.0" in metrics
