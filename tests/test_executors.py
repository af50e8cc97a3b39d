"""Several executors of one model in one server (`[adapter] count = 2`: two devices on the software
adapter, each with its own copy of the weights, slots and prefix cache): requests spread over them,
a conversation's next turn goes to the executor whose cache holds its history, and the answers are
the ones a single executor gives."""
from __future__ import annotations

from http.client import HTTPConnection
import json

import pytest

from ai00_trio.config import AdapterConfig, ConfigError, parse_config
from server_helpers import http, running_server

pytestmark = pytest.mark.gpu

TWO = "[adapter]\ncount = 2\n"
OPENINGS = ["Tell me about the sea.", "Name three colours."]


def ask(base: str, messages: list[dict]) -> str:
    status, body = http("POST", base + "/v1/chat/completions", {"messages": messages, "max_tokens": 12,
                                                                "temperature": 0})
    assert status == 200, body
    return body["choices"][0]["message"]["content"]


def executors(base: str) -> list[dict]:
    status, body = http("GET", base + "/api/status")
    assert status == 200, body
    return body["executors"]


def first_turns_at_once(base: str) -> list[str]:
    """The first conversation streams; once its first token came, the second is asked."""
    port = int(base.rsplit(":", 1)[1])
    connection = HTTPConnection("127.0.0.1", port, timeout=120)
    connection.request("POST", "/v1/chat/completions", json.dumps({
        "messages": [{"role": "user", "content": OPENINGS[0]}], "max_tokens": 48, "temperature": 0,
        "stream": True}), {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    pieces = []

    def read_event() -> bool:
        line = response.readline().decode()
        while line.strip() == "":
            line = response.readline().decode()
        data = line.removeprefix("data: ").strip()
        if data == "[DONE]":
            return False
        pieces.extend(choice["delta"].get("content") or "" for choice in json.loads(data)["choices"])
        return True

    read_event()
    second = ask(base, [{"role": "user", "content": OPENINGS[1]}])
    while read_event():
        pass
    connection.close()
    return ["".join(pieces), second]


def conversations(base: str, first: list[str]) -> list[str]:
    """Each conversation's second turn, asked one after the other."""
    return [ask(base, [{"role": "user", "content": opening}, {"role": "assistant", "content": answer},
                       {"role": "user", "content": "And then?"}])
            for opening, answer in zip(OPENINGS, first)]


def test_two_executors_share_the_work_and_keep_each_conversation(tmp_path):
    with running_server(tmp_path, {"max_batch": 2}, extra_sections=TWO) as base:
        status, body = http("GET", base + "/api/status")
        assert body["queue"]["max_batch"] == 4 and len(body["executors"]) == 2
        first = first_turns_at_once(base)
        served = [lane["tokens"]["generated"] for lane in executors(base)]
        assert all(served), f"both executors generated: {served}"
        hits = []
        for opening, answer in zip(OPENINGS, first):
            before = [lane["prefix_cache"]["hits"] for lane in executors(base)]
            ask(base, [{"role": "user", "content": opening}, {"role": "assistant", "content": answer},
                       {"role": "user", "content": "And then?"}])
            hits.append([lane["prefix_cache"]["hits"] - b for lane, b in zip(executors(base), before)])
        # each second turn hit one cache, and not the same one: each conversation stayed on its executor
        assert sorted(map(sorted, hits)) == [[0, 1], [0, 1]] and hits[0] != hits[1], hits
        second = conversations(base, first)
        status, metrics = http("GET", base + "/metrics")
    executor_lines = [line for line in metrics.splitlines() if line.startswith("ai00_executor_generated_tokens_total")]
    assert len(executor_lines) == 2 and 'executor="1"' in executor_lines[1], executor_lines
    with running_server(tmp_path, {"max_batch": 2}) as base:
        alone = first_turns_at_once(base)
        assert alone == first  # greedy answers do not depend on where they ran
        assert conversations(base, alone) == second


def test_adapter_executors():
    assert AdapterConfig().executors(1) == [None]
    assert AdapterConfig(count=2).executors(1) == [None, None]
    assert AdapterConfig(Manual=1, count=2).executors(3) == [1, 1]
    assert AdapterConfig(gpus=[0, "NVIDIA"], count=2).executors(3) == [0, 0, "NVIDIA", "NVIDIA"]
    assert AdapterConfig(gpus="all").executors(3) == [0, 1, 2]
    assert parse_config('[adapter]\ngpus = [0, "NVIDIA"]\ncount = 2\n').adapter.executors(1) == [0, 0, "NVIDIA",
                                                                                             "NVIDIA"]
    for adapter in ("count = 0", "count = 17", "gpus = [0, 1, 2, 3, 4, 5, 6, 7, 8]\ncount = 2"):
        with pytest.raises(ConfigError, match="executors"):
            parse_config(f"[adapter]\n{adapter}\n")


def test_a_lora_changes_every_executor(tmp_path):
    """`max_batch` 1: while a stream holds the first executor, the next request goes to the second."""
    from test_lora_hotswap import ADMIN, ADMIN_KEY, MODEL_V7, close, lora_folder, top_logprobs

    folder = lora_folder(tmp_path)
    sections = TWO + f'[admin]\nkeys = ["{ADMIN_KEY}"]\n'
    with running_server(tmp_path, {"path": str(folder), "name": MODEL_V7.name, "max_batch": 1},
                        extra_sections=sections) as base:
        before = top_logprobs(base)
        status, body = http("POST", base + "/admin/loras/load", {"path": "sub/lora.st", "alpha": 8.0}, ADMIN)
        assert status == 200, body
        first = top_logprobs(base)
        port = int(base.rsplit(":", 1)[1])
        connection = HTTPConnection("127.0.0.1", port, timeout=120)
        connection.request("POST", "/v1/completions", json.dumps({"prompt": "Once", "max_tokens": 200,
                                                                   "temperature": 0, "stream": True}),
                           {"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200 and response.readline().startswith(b"data: ")
        generated = [lane["tokens"]["generated"] for lane in executors(base)]
        second = top_logprobs(base)
        assert executors(base)[1]["tokens"]["generated"] > generated[1]  # the second executor answered it
        response.read()
        connection.close()
    assert not close(first, before, 0.1)
    assert close(first, second, 1e-3)
