"""Unknown request fields: accepted, and each named once in the server's log."""
from __future__ import annotations

import json

import pytest

from ai00_trio.server import schemas as s
from ai00_trio.server.field_log import MAX_NAMED, UnknownFields, route_key
from server_helpers import http, running_server


def test_unknown_fields_are_named_once_and_metadata_never(capsys):
    log = UnknownFields()
    body = json.dumps({"messages": [{"role": "user", "content": "x"}], "repetition_penalty": 1.1, "user": "u", "store": True,
                       "metadata": {"a": "b"}, "service_tier": "auto", "top_a": 0}).encode()
    assert log.check("/v1/chat/completions", body, s.ChatCompletionRequest) == ["repetition_penalty", "top_a"]
    assert log.check("/api/oai/chat/completions", body, s.ChatCompletionRequest) == []  # once per process
    assert log.check("/v1/completions", b'{"prompt": "x", "top_a": 1, "mirostat": 2}', s.CompletionRequest) \
        == ["mirostat"]
    assert log.check("/v1/completions", b"[1, 2]", s.CompletionRequest) == []  # the route's 400, not ours
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and "'repetition_penalty', 'top_a'" in lines[0] and "'mirostat'" in lines[1]
    assert UnknownFields().check("/v1/completions", body, s.CompletionRequest) != []  # each server its own


def test_the_names_remembered_are_bounded(capsys):
    log = UnknownFields()
    body = json.dumps({f"f{i}": 0 for i in range(MAX_NAMED + 50)}).encode()
    assert len(log.check("/tokenize", body, s.TokenizeRequest)) == MAX_NAMED
    assert log.full and log.check("/tokenize", b'{"other": 1}', s.TokenizeRequest) == []
    assert "further ones are ignored" in capsys.readouterr().err


def test_route_keys_join_the_prefixes():
    assert {route_key(p) for p in ("/v1/chat/completions", "/api/oai/chat/completions",
                                   "/api/oai/v1/chat/completions")} == {"/chat/completions"}
    assert route_key("/tokenize") == "/tokenize" and route_key("/api/auth/exchange") == "/api/auth/exchange"


@pytest.mark.gpu
def test_a_server_names_each_unknown_field_once_in_its_log(tmp_path):
    with running_server(tmp_path) as base:
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "repetition_penalty": 1.2,
                "typical_p": 0.9, "user": "me", "store": False, "metadata": {"k": "v"}, "service_tier": "auto"}
        for prefix in ("/v1", "/api/oai", "/api/oai/v1"):
            status, answer = http("POST", base + prefix + "/chat/completions", body)
            assert status == 200 and answer["choices"][0]["message"]["content"] is not None
        assert http("POST", base + "/tokenize", {"content": "x", "add_bos": True})[0] == 200
        port = base.rsplit(":", 1)[1]
        log = (tmp_path / f"server-{port}.log").read_text()
    named = [line for line in log.splitlines() if "ignoring request field" in line]
    assert len(named) == 2, named
    assert "/v1/chat/completions" in named[0] and "'repetition_penalty', 'typical_p'" in named[0]
    assert "'add_bos'" in named[1]
    for silent in ("'user'", "'store'", "'metadata'", "'service_tier'"):
        assert silent not in log
