"""Per-request limits that protect the other clients: embeddings (inputs and tokens per request,
dropped when their client leaves) and grammar size, through a real server."""
from __future__ import annotations

import http.client as http_client
import json
import socket
import time

import pytest

from server_helpers import http, running_server

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("limits"), {"max_embed_inputs": 4, "max_embed_tokens": 40000,
                                                                       "grammar_compile_seconds": 0.5}) as base:
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


def test_a_grammar_past_the_compile_deadline_is_a_400_and_the_server_serves_on(server):
    """A 20,000-way alternative (230 kB of grammar, seconds to compile here) against a 0.5 s deadline."""
    grammar = "start ::= " + " | ".join(f'"v{i}y"' for i in range(20000)) + ";"
    started = time.perf_counter()
    status, answer = http("POST", server + "/v1/completions", {"prompt": "x", "max_tokens": 2, "bnf_schema": grammar},
                          timeout=120)
    assert time.perf_counter() - started < 5
    assert status == 400 and answer["error"]["code"] == "grammar_timeout", answer
    assert "grammar_compile_seconds" in answer["error"]["message"] and answer["error"]["param"] == "bnf_schema"
    status, answer = http("POST", server + "/v1/completions",
                          {"prompt": "x", "max_tokens": 2, "bnf_schema": 'start ::= "ab" | "cd";'})
    assert status == 200 and answer["choices"][0]["text"] in ("ab", "cd"), answer


def test_prefix_cache_budget_is_sized_from_the_machine(server):
    budget = requests_status(server)["prefix_cache"]["budget"]
    assert budget["configured_gpu_bytes"] == 1 << 30 and budget["configured_host_bytes"] == 4 << 30
    available = budget["memory_available_bytes"]
    assert available > 0
    allowance = available // 4 + 1
    if budget["software_adapter"]:  # lavapipe: both tiers come out of host memory
        assert budget["gpu_bytes"] + budget["host_bytes"] <= allowance
    else:
        assert budget["host_bytes"] <= allowance


def requests_status(base: str) -> dict:
    status, answer = http("GET", base + "/api/status")
    assert status == 200, answer
    return answer


def test_a_body_refused_unread_does_not_stall_the_connection(server):
    """A 415 answered before a 100 kB body was read closes the connection; the client's next
    request (reconnecting) is served at once, instead of waiting behind the body's unread rest
    on a kept-alive connection until its timeout."""
    host, port = server.removeprefix("http://").split(":")
    connection = http_client.HTTPConnection(host, int(port), timeout=10)
    connection.request("POST", "/v1/completions", b"x" * 100_000, {"Content-Type": "text/plain"})
    response = connection.getresponse()
    assert response.status == 415 and response.getheader("Connection") == "close"
    response.read()
    started = time.perf_counter()
    connection.request("POST", "/v1/completions", json.dumps({"prompt": "x", "max_tokens": 1}),
                       {"Content-Type": "application/json"})
    assert connection.getresponse().status == 200 and time.perf_counter() - started < 5
    connection.close()


def test_a_body_sent_after_its_answer_does_not_stall_the_connection(server):
    """An OPTIONS (or GET) that carries a body is answered by routing alone, before its body is
    read; the answer waits for the body, so the next request on the kept-alive connection is
    served (hypercorn never reads it when the body comes after the answer)."""
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(b"OPTIONS /detokenize HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 14\r\n\r\n")
        time.sleep(0.3)  # the body comes after the answer could have been written
        connection.sendall(b'{"tokens": []}')
        first = connection.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
        connection.sendall(b"GET /v1/models HTTP/1.1\r\nHost: test\r\n\r\n")
        second = connection.recv(65536)
        assert second.startswith(b"HTTP/1.1 200"), second
