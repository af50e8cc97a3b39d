"""AI00's chooses and states on the prefix cache (the prompt computed once, per initial state),
and their work stopped when the client leaves."""
from __future__ import annotations

import http.client as http_client
import json
import time

import pytest

from server_helpers import http, running_server
from test_ai00_routes import NLL_TOLERANCE, engine_nll

pytestmark = pytest.mark.gpu

PROMPT = "Once upon a time, in a quiet village by the sea,"
CHOICES = [" there lived an old fisherman.", " 7#q!", " the", " a cat sat on the mat and looked at the dog. " * 3]
SAME = 1e-5  # the same request twice: a cached state gives what the computed one gave


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("ai00-cache")) as base:
        yield base


@pytest.fixture(scope="module")
def engine(load_tiny):
    return load_tiny("v7", "fp16")


def cache_stats(server: str) -> dict:
    return http("GET", server + "/api/status")[1]["prefix_cache"]


def perplexities(answer: dict) -> dict[str, float]:
    return {d["choice"]: d["perplexity"] for d in answer["data"]}


def chooses(server: str, body: dict) -> dict:
    status, answer = http("POST", server + "/api/oai/chooses", body, timeout=120)
    assert status == 200, answer
    return answer


def test_a_second_chooses_takes_the_prompt_from_the_cache(server, engine):
    body = {"input": PROMPT, "choices": CHOICES}
    first = chooses(server, body)
    before = cache_stats(server)
    second = chooses(server, body)
    after = cache_stats(server)
    assert after["hit_tokens"] - before["hit_tokens"] == len(PROMPT.encode())
    assert after["entries"] == before["entries"]  # the candidates are not cached
    assert [d["choice"] for d in second["data"]] == [d["choice"] for d in first["data"]]
    for choice, score in perplexities(second).items():
        assert score == pytest.approx(perplexities(first)[choice], abs=SAME)
        assert score == pytest.approx(engine_nll(engine, list(PROMPT.encode()), list(choice.encode())),
                                      abs=NLL_TOLERANCE)


def test_chooses_and_generations_share_the_cache_of_their_initial_state(server, engine):
    prompt = "The lighthouse keeper climbed the stairs"
    status, _ = http("POST", server + "/v1/completions", {"prompt": prompt, "max_tokens": 1, "temperature": 0})
    assert status == 200
    before = cache_stats(server)
    answer = chooses(server, {"input": prompt, "choices": [" slowly", " 42"], "calibrate": True})
    assert cache_stats(server)["hit_tokens"] - before["hit_tokens"] == len(prompt.encode())
    for d in answer["data"]:
        tokens = list(d["choice"].encode())
        calibrated = engine_nll(engine, list(prompt.encode()), tokens) - engine_nll(engine, [0], tokens)
        assert d["perplexity"] == pytest.approx(calibrated, abs=2 * NLL_TOLERANCE)


def test_states_takes_its_input_from_the_cache(server):
    body = {"input": "Water is wet and the sky is blue."}
    status, first = http("POST", server + "/api/oai/states", body)
    assert status == 200, first
    before = cache_stats(server)
    status, second = http("POST", server + "/api/oai/states", body)
    assert status == 200, second
    assert cache_stats(server)["hit_tokens"] - before["hit_tokens"] == len(body["input"].encode())
    assert second["data"][0]["data"] == pytest.approx(first["data"][0]["data"], abs=SAME)


def test_a_state_given_in_the_request_is_not_cached(server):
    """Its states serve that request only; the scores equal the input computed in one go."""
    status, given = http("POST", server + "/api/oai/states", {"input": "Once upon a time,"})
    assert status == 200, given
    state = {"data": given["data"][0]["data"], "shape": given["data"][0]["shape"]}
    rest = " in a quiet village by the sea,"
    whole = perplexities(chooses(server, {"input": "Once upon a time," + rest, "choices": CHOICES}))
    before = cache_stats(server)
    for _ in range(2):
        answer = chooses(server, {"input": rest, "choices": CHOICES, "state": state})
        after = cache_stats(server)
        assert (after["entries"], after["hits"], after["misses"]) == (before["entries"], before["hits"],
                                                                     before["misses"])
    for choice, score in perplexities(answer).items():
        assert score == pytest.approx(whole[choice], abs=1e-4)  # the state went through float32 and back


def leave_while_it_runs(server: str, route: str, body: dict, after: float) -> dict:
    """Send `body`, hang up `after` seconds after it took a slot; /api/status once the slot is
    back (within 3 s)."""
    host, port = server.removeprefix("http://").split(":")
    connection = http_client.HTTPConnection(host, int(port), timeout=30)
    connection.request("POST", route, json.dumps(body), {"Content-Type": "application/json"})
    deadline = time.time() + 10
    while http("GET", server + "/api/status")[1]["queue"]["active"] != 1:
        assert time.time() < deadline, "the request never took a slot"
        time.sleep(0.05)
    time.sleep(after)
    connection.sock.close()
    connection.close()
    left = time.time()
    while (status := http("GET", server + "/api/status")[1])["queue"]["active"] != 0:
        assert time.time() - left < 3, "the slot is still held after its client left"
        time.sleep(0.05)
    return status


def test_a_chooses_whose_client_leaves_frees_its_slot(server):
    """64 candidates of 1,000 tokens take minutes on lavapipe; the slot is back in seconds."""
    choices = [f"{i}: " + "The quick brown fox jumps over the lazy dog. " * 22 for i in range(64)]
    status = leave_while_it_runs(server, "/api/oai/chooses", {"input": PROMPT, "choices": choices}, 1)
    assert status["prefix_cache"]["in_flight"] == 0
    answer = chooses(server, {"input": PROMPT, "choices": CHOICES[:2]})
    assert len(answer["data"]) == 2


def test_a_client_leaving_during_the_prompt_gives_up_its_claim(server):
    """The prompt (3,000 tokens, seconds of work on lavapipe) is left unfinished and uncached, and the same
    input sent again is computed, not waited for."""
    prompt = "A long preamble about foxes and dogs. " * 80
    after_leaving = leave_while_it_runs(server, "/api/oai/states", {"input": prompt}, 0.1)["prefix_cache"]
    assert after_leaving["in_flight"] == 0
    status, answer = http("POST", server + "/api/oai/states", {"input": prompt}, timeout=60)
    assert status == 200, answer
    assert cache_stats(server)["entries"] == after_leaving["entries"] + 1
