"""Per-request limits that protect the other clients: embeddings (inputs and tokens per request,
dropped when their client leaves) and grammar size, through a real server."""
from __future__ import annotations

import http.client as http_client
import json
import time

import pytest

from server_helpers import http, running_server

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("limits"), {"max_embed_inputs": 4, "max_embed_tokens": 40000}) as base:
        yield base


def chat_seconds(base: str) -> float:
    started = time.perf_counter()
    status, answer = http("POST", base + "/v1/chat/completions",
                          {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}, timeout=120)
    assert status == 200, answer
    return time.perf_counter() - started


def test_embedding_limits_are_400s_naming_the_key(server):
    status, answer = http("POST", server + "/v1/embeddings", {"input": ["a", "b", "c", "d", "e"]})
    assert status == 400 and answer["error"]["param"] == "input" and "max_embed_inputs" in answer["error"]["message"]
    status, answer = http("POST", server + "/v1/embeddings", {"input": [[65] * 10001] * 4})
    assert status == 400 and "max_embed_tokens" in answer["error"]["message"]
    assert answer["error"]["code"] == "embedding_tokens_exceeded"
    status, answer = http("POST", server + "/v1/embeddings", {"input": ["a", "b", "c", "d"]})
    assert status == 200 and len(answer["data"]) == 4


def test_an_abandoned_long_embedding_does_not_hold_up_chat(server):
    baseline = chat_seconds(server)
    host, port = server.removeprefix("http://").split(":")
    connection = http_client.HTTPConnection(host, int(port), timeout=30)
    body = json.dumps({"input": [[65 + i] * 9900 for i in range(4)]})  # minutes of steps on the software adapter
    connection.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
    time.sleep(1.0)
    during = chat_seconds(server)  # interleaved with the embedding's steps
    connection.close()             # the client leaves: its remaining steps are dropped
    time.sleep(0.5)
    after = chat_seconds(server)
    assert during < 30 + 4 * baseline, (baseline, during)
    assert after < 5 + 3 * baseline, (baseline, after)


def test_a_huge_alternation_is_answered_quickly(server):
    """A 20,000-way alternative (230 kB of grammar) compiles in seconds, or is refused at once."""
    grammar = "start ::= " + " | ".join(f'"w{i}x"' for i in range(20000)) + ";"
    started = time.perf_counter()
    status, answer = http("POST", server + "/v1/completions", {"prompt": "x", "max_tokens": 2, "bnf_schema": grammar},
                          timeout=120)
    assert time.perf_counter() - started < 30
    assert status in (200, 400), answer
