"""AI00's own routes on a real server: chooses (perplexity ranking), states and the embeds alias,
checked against the engine run directly."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ai00_trio.server.ai00_state import ai00_state_tensor
from server_helpers import http, running_server

pytestmark = pytest.mark.gpu

PREFIXES = ("/api/oai", "/api/oai/v1", "/v1")
# Measured on lavapipe: identical to the engine for short choices, within 1e-5 for one fed in
# several steps (the server's steps split its tokens otherwise than the engine's chunks).
NLL_TOLERANCE = 1e-3
STATE_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("ai00")) as base:
        yield base


@pytest.fixture(scope="module")
def engine(load_tiny):
    return load_tiny("v7", "fp16")


def log_softmax(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, np.float64)
    shifted = rows - rows.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def engine_nll(model, context: list[int], choice: list[int]) -> float:
    """Mean -ln p of `choice` after `context`, each token scored by the logits before it."""
    state = model.new_state()
    rows = [model.forward(context, state)]
    if len(choice) > 1:
        rows += list(model.forward(choice[:-1], state, full=True))
    logp = log_softmax(np.stack(rows))
    return -sum(logp[i, token] for i, token in enumerate(choice)) / len(choice)


def greedy(model, prompt: list[int], n: int) -> list[int]:
    state, out = model.new_state(), []
    logits = model.forward(prompt, state)
    for _ in range(n):
        out.append(int(np.argmax(logits)))
        logits = model.forward([out[-1]], state)
    return out


def test_chooses_ranks_by_the_models_perplexity(server, engine):
    prompt = "The cat"
    likely = bytes(greedy(engine, list(prompt.encode()), 5)).decode("utf-8", "replace")
    long = " sat on the mat and looked at the dog, who was not amused by the cat at all." * 2  # 3 steps of 64
    choices = ["~}|{`", likely, "Q", " 9@#zx!", long, ""]
    expected = {c: engine_nll(engine, list(prompt.encode()), list(c.encode())) for c in choices if c}
    for prefix in PREFIXES:
        status, answer = http("POST", server + prefix + "/chooses",
                              {"input": ["The", " cat"], "choices": choices,
                               "state": "00000000-0000-0000-0000-000000000000"})
        assert status == 200, answer
        assert answer["object"] == "list" and answer["model"].endswith("tiny-rwkv-7v0-834K.st")
        data = answer["data"]
        assert [d["rank"] for d in data] == list(range(len(choices)))
        assert {d["object"] for d in data} == {"choice"}
        assert data[0]["choice"] == likely  # the model's own continuation is the most likely
        assert data[-1] == {"object": "choice", "index": 5, "rank": 5, "choice": "", "perplexity": None}
        for d in data[:-1]:
            assert choices[d["index"]] == d["choice"]
            assert d["perplexity"] == pytest.approx(expected[d["choice"]], abs=NLL_TOLERANCE)
        assert [d["choice"] for d in data[:-1]] == sorted(expected, key=expected.get)
        assert "usage" not in answer


def test_calibrate_subtracts_the_perplexity_without_input(server, engine):
    prompt, choices = list(b"Once upon a"), [" time", " xylophone", "e"]
    status, answer = http("POST", server + "/api/oai/chooses",
                          {"input": "Once upon a", "choices": choices, "calibrate": True})
    assert status == 200, answer
    for d in answer["data"]:
        tokens = list(d["choice"].encode())
        calibrated = engine_nll(engine, prompt, tokens) - engine_nll(engine, [0], tokens)
        assert d["perplexity"] == pytest.approx(calibrated, abs=2 * NLL_TOLERANCE), d
    scores = [d["perplexity"] for d in answer["data"]]
    assert scores == sorted(scores)


def test_chooses_bad_requests_are_400s(server):
    for body, param in (({"input": "x"}, "choices"), ({"input": "x", "choices": []}, "choices"),
                        ({"input": "x", "choices": ["a"] * 257}, "choices"),
                        ({"input": "x", "choices": ["b", "a" * 1025]}, "choices"),
                        ({"input": 3, "choices": ["a"]}, "input"),
                        ({"input": "x", "choices": ["a"], "state": "no-such-state"}, "state")):
        status, answer = http("POST", server + "/api/oai/chooses", body)
        assert status == 400 and answer["error"]["param"] == param, (body, answer)


def test_states_returns_the_state_after_the_input(server, engine):
    info = engine.info
    state = engine.new_state()
    engine.forward(list(b"Water is wet."), state)
    arrays = state.to_numpy()  # the package's layout: per layer att x_prev, wkv [H, N value, N key], ffn x_prev
    C, H, N, L = info.n_embd, info.n_head, info.head_size, info.n_layer
    for prefix in PREFIXES:
        status, answer = http("POST", server + prefix + "/states", {"input": ["Water", " is wet."]})
        assert status == 200, answer
        assert answer["object"] == "list" and answer["model"].endswith("tiny-rwkv-7v0-834K.st")
        assert answer["usage"] == {"prompt": 0, "completion": 0, "total": 0, "duration": {"secs": 0, "nanos": 0}}
        (item,) = answer["data"]
        assert item["object"] == "states" and item["index"] == 0 and item["shape"] == [C, N + 2, L, 1]
        got = np.array(item["data"], np.float32).reshape(L, N + 2, C)  # x (channel) fastest
        for layer in range(L):
            att, wkv, ffn = arrays[3 * layer:3 * layer + 3]
            np.testing.assert_allclose(got[layer, 0], att, atol=STATE_TOLERANCE)
            np.testing.assert_allclose(got[layer, N + 1], ffn, atol=STATE_TOLERANCE)
            for key in range(N):
                for head in range(H):
                    np.testing.assert_allclose(got[layer, 1 + key, head * N:(head + 1) * N], wkv[head, :, key],
                                               atol=STATE_TOLERANCE)
        assert np.abs(got).max() > 0.01  # a state that moved, not the zero one


def test_embeds_is_the_embeddings_route(server):
    body = {"input": "Hello there"}
    _, expected = http("POST", server + "/v1/embeddings", body)
    for prefix in ("/api/oai", "/api/oai/v1"):
        status, answer = http("POST", server + prefix + "/embeds", body)
        assert status == 200 and answer["data"][0]["embedding"] == expected["data"][0]["embedding"]
        assert math.isclose(sum(x * x for x in answer["data"][0]["embedding"]), 1.0, rel_tol=1e-5)


@pytest.mark.parametrize("version", ["v4", "v5.2", "v6"])
def test_ai00_state_layout_of_every_version(load_tiny, version):
    """web-rwkv's layout (the one AI00's `states` returns), written out element by element."""
    model = load_tiny(version, "fp32")
    info = model.info
    state = model.new_state()
    model.forward(list(b"A dog barks."), state)
    data, shape = ai00_state_tensor(model, state.to_host())
    arrays = state.to_numpy()
    C, L = info.n_embd, info.n_layer
    if version == "v4":
        assert shape == [C, 5 * L, 1, 1]
        np.testing.assert_array_equal(data.reshape(5 * L, C), np.stack(arrays))
        return
    H, N = info.n_head, info.head_size
    assert shape == [C, N + 2, L, 1]
    got = data.reshape(L, N + 2, C)
    for layer in range(L):
        att, wkv, ffn = arrays[3 * layer:3 * layer + 3]  # v5/v6 wkv [H, N key, N value]
        np.testing.assert_array_equal(got[layer, 0], att)
        np.testing.assert_array_equal(got[layer, N + 1], ffn)
        for key in range(N):
            for head in range(H):
                np.testing.assert_array_equal(got[layer, 1 + key, head * N:(head + 1) * N], wkv[head, key, :])
