"""The HTTP server end to end: a real server process, the official OpenAI SDK and raw HTTP."""
from __future__ import annotations

import base64
import concurrent.futures
import http.client as http_client
import json
import re
import time
import urllib.error
import urllib.request

import numpy as np
import openai
import pytest

from server_helpers import http, running_server

pytestmark = pytest.mark.gpu  # every test here runs a server process on the GPU adapter

PROMPTS = ["The cat", "Once upon a time", "In the", "A dog", "She said", "Water is", "The end", "Hello"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("server")) as base:
        yield base


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def engine(load_tiny):
    return load_tiny("v7", "fp16")


def wait_until_no_slot_is_held(server: str, seconds: float, why: str) -> None:
    deadline = time.time() + seconds
    while http("GET", server + "/api/status")[1]["queue"]["active"] != 0:
        assert time.time() < deadline, why
        time.sleep(0.05)


def greedy_alone(model, prompt: str, max_tokens: int, stop: str | None = None) -> str:
    """What a single request should produce with greedy sampling, straight from the engine."""
    state = model.new_state()
    logits = model.forward(list(prompt.encode()), state)
    out = bytearray()
    for _ in range(max_tokens):
        token = int(np.argmax(logits))
        out.append(token)
        text = out.decode("utf-8", errors="ignore")
        if stop and stop in text:
            return text[:text.index(stop)]
        logits = model.forward([token], state)
    return out.decode("utf-8", errors="replace")


def test_models_list(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny-rwkv-7v0-834K"]


def test_chat_completion_matches_engine(client, engine):
    response = client.chat.completions.create(model="tiny-rwkv-7v0-834K", temperature=0, max_tokens=24,
                                              messages=[{"role": "user", "content": "Hi"}])
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    expected = greedy_alone(engine, "User: Hi\n\nAssistant:", 24, stop="\n\n")
    assert choice.message.content == expected.strip()
    assert response.usage.prompt_tokens == len("User: Hi\n\nAssistant:")
    assert response.usage.completion_tokens == 24 and choice.finish_reason == "length"
    assert response.object == "chat.completion" and response.id.startswith("chatcmpl-")


def test_chat_streaming_equals_non_streaming(client):
    kwargs = dict(model="x" if False else "tiny-rwkv-7v0-834K", temperature=0, max_tokens=20,
                  messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me"}])
    full = client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 20
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["length"]


def test_a_last_assistant_message_is_continued(client, engine):
    messages = [{"role": "user", "content": "Tell me"}, {"role": "assistant", "content": "Once upon"}]
    reply = client.chat.completions.create(model="m", messages=messages, temperature=0, max_tokens=12)
    want = greedy_alone(engine, "User: Tell me\n\nAssistant: Once upon", 12, stop="\n\n")
    assert reply.choices[0].message.content == want.rstrip()
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="m", messages=messages, temperature=0, max_tokens=12, stream=True) if c.choices)
    assert streamed == reply.choices[0].message.content


def test_text_completion_and_stream(client, engine):
    response = client.completions.create(model="tiny-rwkv-7v0-834K", prompt="The", max_tokens=16, temperature=0)
    assert response.choices[0].text == greedy_alone(engine, "The", 16)
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny-rwkv-7v0-834K", prompt="The", max_tokens=16, temperature=0, stream=True) if c.choices)
    assert streamed == response.choices[0].text


def test_stop_strings_across_tokens(client):
    response = client.completions.create(model="tiny-rwkv-7v0-834K", prompt="The", max_tokens=40, temperature=0,
                                         stop=["e t"])
    choice = response.choices[0]
    assert choice.finish_reason == "stop" and "e t" not in choice.text
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny-rwkv-7v0-834K", prompt="The", max_tokens=40, temperature=0, stop=["e t"], stream=True)
        if c.choices)
    assert streamed == choice.text


def test_seed_gives_same_output_and_n_choices(client):
    kwargs = dict(model="tiny-rwkv-7v0-834K", prompt="Once", max_tokens=24, temperature=1.0, top_p=1.0, seed=7)
    first = client.completions.create(**kwargs).choices[0].text
    second = client.completions.create(**kwargs).choices[0].text
    assert first == second
    several = client.completions.create(n=3, **kwargs)
    assert [c.index for c in several.choices] == [0, 1, 2]
    assert several.choices[0].text == first
    assert several.usage.completion_tokens == 3 * 24


def test_logprobs(client):
    response = client.chat.completions.create(model="tiny-rwkv-7v0-834K", temperature=0, max_tokens=5,
                                              logprobs=True, top_logprobs=3,
                                              messages=[{"role": "user", "content": "Hi"}])
    content = response.choices[0].logprobs.content
    assert len(content) == 5
    for item in content:
        assert len(item.top_logprobs) == 3
        assert item.logprob <= 0 and abs(item.logprob - item.top_logprobs[0].logprob) < 1e-5  # greedy = top-1


def test_embeddings(client, engine):
    response = client.embeddings.create(model="tiny-rwkv-7v0-834K", input=["hello world", "the cat"])
    vectors = [np.array(d.embedding) for d in response.data]
    assert len(vectors) == 2 and vectors[0].shape == (64,)
    assert abs(np.linalg.norm(vectors[0]) - 1) < 1e-4
    state = engine.new_state()
    engine.forward(list(b"hello world"), state)
    hidden = engine._single.read_hidden(1)[0]                 # ln_out of the last token
    assert np.abs(vectors[0] - hidden / np.linalg.norm(hidden)).max() < 1e-4
    assert response.usage.prompt_tokens == len("hello world") + len("the cat")
    raw = client.embeddings.create(model="tiny-rwkv-7v0-834K", input="the cat", encoding_format="base64")
    decoded = raw.data[0].embedding
    if isinstance(decoded, str):
        decoded = np.frombuffer(base64.b64decode(decoded), "<f4")
    assert np.abs(np.asarray(decoded) - vectors[1]).max() < 1e-6


def test_any_model_name_is_served_by_the_one_model(client, server):
    """SDK code hard-codes names (AI00's own example says model="model"): the loaded model serves
    them and answers with its real id."""
    reply = client.chat.completions.create(model="model", messages=[{"role": "user", "content": "x"}], max_tokens=2)
    assert reply.model == "tiny-rwkv-7v0-834K"
    assert client.models.retrieve("tiny-rwkv-7v0-834K").id == "tiny-rwkv-7v0-834K"
    assert client.models.retrieve("gpt-4").id == "tiny-rwkv-7v0-834K"


def test_strict_names_and_aliases(tmp_path):
    with running_server(tmp_path, {"strict_names": True, "aliases": ["gpt-4o-mini"]}) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=60)
        assert [m.id for m in client.models.list()] == ["tiny-rwkv-7v0-834K", "gpt-4o-mini"]
        assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
        reply = client.completions.create(model="gpt-4o-mini", prompt="The", max_tokens=2)
        assert reply.model == "tiny-rwkv-7v0-834K"
        with pytest.raises(openai.NotFoundError) as info:
            client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
        assert info.value.body["param"] == "model" and info.value.body["code"] == "model_not_found"
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("gpt-4")


def test_errors_are_openai_shaped_and_server_survives(client, server):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny-rwkv-7v0-834K", messages=[{"role": "user", "content": "x"}],
                                       max_tokens="many")
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="tiny-rwkv-7v0-834K", prompt="x" * 20000, max_tokens=1)
    assert info.value.body["code"] == "context_length_exceeded" and info.value.body["param"] == "prompt"
    for body in (b"{not json", b"[]", json.dumps({"messages": "hi"}).encode(),
                 json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(),
                 json.dumps({"messages": [], "temperature": -1}).encode(),
                 json.dumps({"prompt": "x", "logit_bias": {"999": 1}}).encode()):
        path = "/v1/completions" if b"prompt" in body else "/v1/chat/completions"
        status, answer = http("POST", server + path, body, {"Content-Type": "application/json"})
        assert status == 400, (body, answer)
        assert set(answer["error"]) == {"message", "type", "param", "code"}
    status, answer = http("POST", server + "/v1/chat/completions", {"messages": [], "max_tokens": 1})
    assert status == 400 and answer["error"]["param"] == "messages", answer
    assert answer["error"]["message"] == "invalid request: messages must have at least 1 item"
    for method, path in (("GET", "/v1/nothing"), ("POST", "/v1/nothing"), ("POST", "/api/oai/nothing"),
                         ("DELETE", "/v1/nothing")):
        status, answer = http(method, server + path, b"{}" if method == "POST" else None)
        assert status == 404 and "error" in answer, (method, path, status)
    for method, path, allow in (("GET", "/v1/chat/completions", "POST"), ("DELETE", "/v1/models", "GET")):
        request = urllib.request.Request(server + path, method=method)  # routes with other methods
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 405 and refused.value.headers["Allow"] == allow, (method, path)
    assert client.completions.create(model="tiny-rwkv-7v0-834K", prompt="ok", max_tokens=2).choices[0].text


def test_ai00_routes_and_fields(server, engine):
    body = {"messages": [{"role": "user", "content": "Hi"}], "names": {"user": "Bob", "assistant": "Alice"},
            "template": {"record": "{role}> {content}", "prefix": "{assistant}>", "sep": "\n"},
            "max_tokens": 12, "temperature": 0, "half_life": 400, "sampler_override": None}
    for prefix in ("/api/oai", "/api/oai/v1", "/v1"):
        status, answer = http("POST", server + prefix + "/chat/completions", body)
        assert status == 200, answer
        expected = greedy_alone(engine, "Bob> Hi\nAlice>", 12, stop="\n\n")
        assert answer["choices"][0]["message"]["content"] == expected.strip()
    # openai 0.28 style: api_base=".../api/oai", extra fields passed through
    status, answer = http("POST", server + "/api/oai/completions",
                          {"prompt": ["The", " cat"], "max_tokens": 8, "temperature": 0, "top_k": 1,
                           "stop": ["\n\n"], "stream": False})
    assert status == 200 and answer["choices"][0]["text"] == greedy_alone(engine, "The cat", 8)
    status, answer = http("GET", server + "/api/oai/models")
    assert status == 200 and answer["data"][0]["id"] == "tiny-rwkv-7v0-834K"
    for sampler in ({"type": "Typical", "tau": 0.5, "top_k": 8}, {"type": "Mirostat", "tau": 3.0, "rate": 0.1},
                    {"type": "Nucleus", "top_p": 0.3, "presence_penalty": 0.5, "penalty_decay": 0.99}):
        status, answer = http("POST", server + "/api/oai/completions",
                              {"prompt": "The", "max_tokens": 6, "sampler_override": sampler, "seed": 1})
        assert status == 200 and answer["usage"]["completion_tokens"] == 6, (sampler, answer)
    status, answer = http("POST", server + "/api/oai/completions", {"prompt": "The", "sampler": {"type": "Greedy"}})
    assert status == 400 and answer["error"]["param"] == "sampler"
    # logit_bias steers greedy decoding
    status, answer = http("POST", server + "/v1/completions",
                          {"prompt": "The", "max_tokens": 3, "temperature": 0, "logit_bias": {"90": 100}})
    assert status == 200 and answer["choices"][0]["text"] == "ZZZ"


def test_docs_health_ready_status(server):
    assert http("GET", server + "/health")[0] == 200
    status, ready = http("GET", server + "/ready")
    assert status == 200 and ready["status"] == "ready"
    status, spec = http("GET", server + "/api-docs/openapi.json")
    assert status == 200 and "/v1/chat/completions" in spec["paths"]
    assert "ChatCompletionRequest" in spec["components"]["schemas"]
    assert {"/v1/models/{model_id}", "/tokenize", "/detokenize"} <= set(spec["paths"])
    completion_fields = spec["components"]["schemas"]["CompletionRequest"]["properties"]
    assert {"echo", "best_of", "suffix", "half_life", "min_p"} <= set(completion_fields)
    status, page = http("GET", server + "/api-docs")
    assert status == 200 and "swagger-ui-bundle.js" in page
    status, info = http("GET", server + "/api/status")
    assert status == 200 and info["model"]["version"] == "v7" and info["queue"]["max_batch"] == 8


def test_sampled_requests_choose_on_the_gpu(client, server):
    """Nucleus requests without logprobs get every token after the first from the GPU (16
    bytes back, no logits), logit_bias too; a seed still repeats the output. Requests that need
    the logits (top_logprobs, Typical) keep the host sampler."""
    def outputs() -> dict:
        return http("GET", server + "/api/status")[1]["outputs"]

    kwargs = dict(model="tiny-rwkv-7v0-834K", prompt="Once upon", max_tokens=16, temperature=0.8, top_p=0.9,
                  presence_penalty=0.6, frequency_penalty=0.3, seed=21)
    before = outputs()
    first = client.completions.create(**kwargs)
    after = outputs()
    assert first.usage.completion_tokens == 16
    assert after["gpu_choices"] - before["gpu_choices"] == 15  # the first token is sampled from the prompt's logits
    assert after["logits_rows"] - before["logits_rows"] == 1
    assert client.completions.create(**kwargs).choices[0].text == first.choices[0].text
    before = outputs()
    client.completions.create(**kwargs, logit_bias={"65": 1.0})
    assert outputs()["gpu_choices"] - before["gpu_choices"] == 15
    for extra in ({"logprobs": 2}, {"extra_body": {"sampler": {"type": "Typical"}}}):
        before = outputs()
        client.completions.create(**{**kwargs, **extra})
        assert outputs()["gpu_choices"] == before["gpu_choices"], extra


def test_concurrent_streams_equal_solo_runs(client, server):
    prompts = [PROMPTS[i % len(PROMPTS)] + " " * (i // len(PROMPTS)) for i in range(32)]

    def run(prompt: str, stream: bool) -> str:
        kwargs = dict(model="tiny-rwkv-7v0-834K", prompt=prompt, max_tokens=12, temperature=0)
        if not stream:
            return client.completions.create(**kwargs).choices[0].text
        return "".join(c.choices[0].text for c in client.completions.create(stream=True, **kwargs) if c.choices)

    solo = [run(p, False) for p in prompts]
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        together = list(pool.map(lambda p: run(p, True), prompts))
    assert together == solo


def test_prefix_cache_hits_give_cold_results(client, server, engine):
    def chat(messages):
        return client.chat.completions.create(model="tiny-rwkv-7v0-834K", temperature=0, max_tokens=16,
                                              messages=messages).choices[0].message.content

    def cache_stats():
        return http("GET", server + "/api/status")[1]["prefix_cache"]

    messages = [{"role": "user", "content": "Tell me a long story about a cat and a dog."}]
    first = chat(messages)
    hits = cache_stats()["hits"]
    assert chat(messages) == first                       # the whole prompt comes from the cache
    assert cache_stats()["hits"] > hits
    follow_up = messages + [{"role": "assistant", "content": first}, {"role": "user", "content": "And then?"}]
    before = cache_stats()
    answer = chat(follow_up)                              # only the new turn is prefilled
    after = cache_stats()
    assert after["hits"] > before["hits"]
    # the state at the end of the first answer (its tokens chosen on the GPU; it holds all of
    # them but the last) served the follow-up
    first_turn = len(f"User: {messages[0]['content']}\n\nAssistant: {first}".encode())
    assert after["hit_tokens"] - before["hit_tokens"] >= first_turn - 1
    prompt = f"User: {messages[0]['content']}\n\nAssistant: {first}\n\nUser: And then?\n\nAssistant:"
    assert answer == greedy_alone(engine, prompt, 16, stop="\n\n").strip()


def test_disconnect_frees_the_slot(server):
    host, port = server.removeprefix("http://").split(":")
    connection = http_client.HTTPConnection(host, int(port), timeout=30)
    body = json.dumps({"prompt": "The", "max_tokens": 5000, "stream": True, "temperature": 0})
    connection.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    response.fp.readline()
    assert http("GET", server + "/api/status")[1]["queue"]["active"] == 1
    connection.sock.close()
    connection.close()
    wait_until_no_slot_is_held(server, 10, "slot not freed after the client went away")


def test_clients_gone_before_their_first_token_free_their_slots(server):
    """As many clients as slots leave while their long prompts prefill (max_tokens 300, more
    events than a choice's first 64): the slots come back and the next request is served."""
    host, port = server.removeprefix("http://").split(":")
    body = json.dumps({"prompt": "The quick brown fox. " * 60, "max_tokens": 300, "temperature": 0})
    for _ in range(8):
        connection = http_client.HTTPConnection(host, int(port), timeout=30)
        connection.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        connection.sock.close()
        connection.close()
    wait_until_no_slot_is_held(server, 60, "slots still held after their clients went away")
    status, answer = http("POST", server + "/v1/completions", {"prompt": "The", "max_tokens": 3}, timeout=30)
    assert status == 200 and answer["choices"][0]["finish_reason"] == "length"


def test_more_choices_than_slots_take_turns(server):
    """n = 9 on 8 slots: the ninth choice waits for a slot instead of every slot waiting for a
    reader."""
    status, answer = http("POST", server + "/v1/completions",
                          {"prompt": "The", "max_tokens": 100, "n": 9, "temperature": 0}, timeout=120)
    assert status == 200
    texts = [choice["text"] for choice in answer["choices"]]
    assert len(texts) == 9 and len(set(texts)) == 1 and answer["usage"]["completion_tokens"] == 900
    assert http("GET", server + "/api/status")[1]["queue"]["active"] == 0


def test_queue_full_gives_429(tmp_path):
    with running_server(tmp_path, {"max_batch": 1, "max_queue": 1}) as base:
        body = {"prompt": "The", "max_tokens": 120, "temperature": 0}
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda _: http("POST", base + "/v1/completions", body), range(6)))
        statuses = sorted(status for status, _ in results)
        assert statuses.count(200) >= 1 and 429 in statuses, statuses
        rejected = next(answer for status, answer in results if status == 429)
        assert rejected["error"]["type"] == "rate_limit_error"
        assert http("POST", base + "/v1/completions", {"prompt": "x", "max_tokens": 2})[0] == 200


def test_echo_best_of_and_fields_that_cannot_be_honoured(client, server):
    """Every field that would change the output works or is a 400 naming it."""
    echoed = client.completions.create(model="m", prompt="The cat", max_tokens=4, temperature=0, echo=True)
    plain = client.completions.create(model="m", prompt="The cat", max_tokens=4, temperature=0)
    assert echoed.choices[0].text == "The cat" + plain.choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="m", prompt="The cat", max_tokens=4, temperature=0, echo=True, stream=True) if c.choices)
    assert streamed == echoed.choices[0].text

    kwargs = dict(model="m", prompt="Once", max_tokens=8, temperature=1.0, seed=7, logprobs=1)
    every = client.completions.create(n=3, **kwargs).choices
    totals = [sum(c.logprobs.token_logprobs) for c in every]
    best = client.completions.create(n=1, best_of=3, **kwargs)
    assert len(best.choices) == 1 and best.choices[0].index == 0
    assert best.choices[0].text == every[totals.index(max(totals))].text
    assert best.usage.completion_tokens == sum(len(c.logprobs.tokens) for c in every)

    assert http("POST", server + "/v1/completions", {"prompt": "x", "max_tokens": 2, "half_life": 100})[0] == 200
    # min_p = 1 keeps only the likeliest token: any temperature and seed answer greedily
    greedy = client.completions.create(model="m", prompt="Once", max_tokens=12, temperature=0).choices[0].text
    for seed in (1, 2):
        hot = client.completions.create(model="m", prompt="Once", max_tokens=12, temperature=2.0, top_p=1.0,
                                        seed=seed, extra_body={"min_p": 1.0})
        assert hot.choices[0].text == greedy
    refused = [("/v1/completions", {"prompt": "x", "suffix": "y"}, "suffix"),
               ("/v1/completions", {"prompt": "x", "min_p": 1.5}, "min_p"),
               ("/v1/completions", {"prompt": "x", "min_p": 0.1, "sampler": {"type": "Typical"}}, "min_p"),
               ("/v1/completions", {"prompt": "x", "half_life": 100, "penalty_decay": 0.99}, "half_life"),
               ("/v1/completions", {"prompt": "x", "best_of": 2, "stream": True}, "best_of"),
               ("/v1/completions", {"prompt": "x", "echo": True, "logprobs": 1}, "echo"),
               ("/v1/embeddings", {"input": "x", "dimensions": 8}, "dimensions")]
    for path, body, param in refused:
        status, answer = http("POST", server + path, body)
        assert status == 400 and answer["error"]["param"] == param, (body, answer)
    width = len(http("POST", server + "/v1/embeddings", {"input": "x"})[1]["data"][0]["embedding"])
    assert http("POST", server + "/v1/embeddings", {"input": "x", "dimensions": width})[0] == 200


def test_tokenize_and_detokenize_in_llama_cpp_shapes(server):
    for path in ("/tokenize", "/v1/tokenize"):
        status, answer = http("POST", server + path, {"content": "Hi é"})
        assert status == 200 and answer == {"tokens": list("Hi é".encode())}
    status, answer = http("POST", server + "/tokenize", {"content": "é!", "with_pieces": True})
    assert answer["tokens"] == [{"id": 0xC3, "piece": [0xC3]}, {"id": 0xA9, "piece": [0xA9]}, {"id": 33, "piece": "!"}]
    status, answer = http("POST", server + "/detokenize", {"tokens": list("Hi é".encode())})
    assert status == 200 and answer == {"content": "Hi é"}
    status, answer = http("POST", server + "/detokenize", {"tokens": [300]})
    assert status == 400 and answer["error"]["param"] == "tokens"
    for path, body in (("/tokenize", {"content": 5}), ("/tokenize", {}), ("/detokenize", {"tokens": "x"})):
        status, answer = http("POST", server + path, body)
        assert status == 400 and set(answer["error"]) == {"message", "type", "param", "code"}, (path, answer)


def test_limits_are_400s_naming_the_limit(server):
    deep = '{"prompt": "x", "sampler": ' + '{"type": "Nucleus", "x": ' * 3000 + "{}" + "}" * 3001
    cases = [({"prompt": "x", "max_tokens": 10**12}, "max_tokens", "at most 16384"),
             ({"prompt": "x", "stop": ["a"] * 17}, "stop", "at most 16"),
             ({"prompt": "x", "stop": ["a" * 2000]}, "stop", "1024 characters"),
             ({"prompt": "x", "presence_penalty": 1e308}, None, "presence_penalty"),
             ({"prompt": "x", "top_k": 10**9}, None, "top_k"),
             (deep, None, "nested too deeply")]
    for body, param, words in cases:
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        status, answer = http("POST", server + "/v1/completions", raw, {"Content-Type": "application/json"})
        assert status == 400 and words in answer["error"]["message"], (raw[:100], answer)
        if param:
            assert answer["error"]["param"] == param


def test_waiting_past_queue_timeout_gives_503(tmp_path):
    with running_server(tmp_path, {"max_batch": 1, "queue_timeout": 1}) as base:
        host, port = base.removeprefix("http://").split(":")
        holder = http_client.HTTPConnection(host, int(port), timeout=30)  # holds the only slot
        holder.request("POST", "/v1/completions", json.dumps({"prompt": "The", "max_tokens": 5000, "stream": True}),
                       {"Content-Type": "application/json"})
        assert holder.getresponse().status == 200
        started = time.time()
        request = urllib.request.Request(base + "/v1/completions", json.dumps({"prompt": "x", "max_tokens": 2}).encode(),
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        answer = json.loads(refused.value.read())
        assert refused.value.code == 503 and answer["error"]["code"] == "queue_timeout", answer
        assert refused.value.headers["Retry-After"] == "1"
        assert 0.9 < time.time() - started < 10
        holder.close()


def test_sigterm_lets_running_streams_finish(tmp_path):
    """SIGTERM: /ready fails, the stream already running ends with [DONE], the process exits 0."""
    import signal

    with running_server(tmp_path) as base:
        process = base.process
        host, port = base.removeprefix("http://").split(":")
        connection = http_client.HTTPConnection(host, int(port), timeout=60)
        body = json.dumps({"prompt": "The", "max_tokens": 200, "stream": True, "temperature": 0})
        connection.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200
        first = response.readline()
        assert first.startswith(b"data: ")
        process.send_signal(signal.SIGTERM)
        rest = response.read()
        assert rest.rstrip().endswith(b"data: [DONE]")
        chunks = [json.loads(line[6:]) for line in (first + rest).split(b"\n")
                  if line.startswith(b"data: {")]
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        connection.close()
        started = time.time()
        assert process.wait(timeout=30) == 0
        assert time.time() - started < 10  # no wait for drain_seconds once nothing runs
    log = next(tmp_path.glob("server-*.log")).read_text()
    assert "draining 1 running request" in log and "stopped" in log
    assert "XDG_RUNTIME_DIR" not in log  # no driver noise at start
    assert re.search(r"stream cmpl-\w+ done after \d+ms: 3 prompt \+ 200 generated tokens", log)


def test_api_keys_required_when_configured(tmp_path):
    with running_server(tmp_path, listen_options={"api_keys": ["sekrit"]}) as base:
        assert http("GET", base + "/v1/models")[0] == 401
        status, answer = http("GET", base + "/v1/models", headers={"Authorization": "Bearer sekrit"})
        assert status == 200 and answer["data"]
        assert http("GET", base + "/health")[0] == 200
        assert http("GET", base + "/v1/models", headers={"Authorization": "Bearer s\u00e9krit"})[0] == 401
        assert http("POST", base + "/tokenize", {"content": "x"})[0] == 401
        assert http("GET", base + "/ready")[0] == 401 and http("GET", base + "/api-docs")[0] == 401


def test_a_model_that_fails_to_load_ends_the_server(tmp_path):
    """Loud by default: the reason on stderr and exit code 1 (`--keep-serving` keeps it up)."""
    import subprocess
    import sys

    config = tmp_path / "config.toml"
    config.write_text(f'[model]\npath = "{tmp_path}"\nname = "missing.st"\n[listen]\nport = 0\n')
    done = subprocess.run([sys.executable, "-m", "ai00_trio", "--config", str(config)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1 and "missing.st" in done.stderr


def test_tls_without_its_certificate_is_a_clear_error(tmp_path):
    import subprocess
    import sys

    config = tmp_path / "config.toml"
    config.write_text(f'[listen]\ntls = true\ncert = "{tmp_path}/none.pem"\nkey = "{tmp_path}/none.key"\n')
    done = subprocess.run([sys.executable, "-m", "ai00_trio", "--config", str(config)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "none.pem" in done.stderr and "Traceback" not in done.stderr


def test_no_model_gives_503(tmp_path):
    with running_server(tmp_path, {"name": "missing.st"}, wait_ready=False, args=("--keep-serving",)) as base:
        time.sleep(1)
        status, answer = http("POST", base + "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]})
        assert status == 503 and answer["error"]["code"] == "model_not_loaded"
        assert "missing.st" in answer["error"]["message"]
        assert http("GET", base + "/health")[0] == 200
        assert http("GET", base + "/ready")[0] == 503


NAME_AGE_JOB = r'''
<start> ::= "{\"name\": \"" <word> "\", \"age\": " <number> ", \"job\": \"" <word> "\"}"
<word> ::= <letter> | <letter> <letter> | <letter> <letter> <letter> | <letter> <letter> <letter> <letter>
<letter> ::= "a" | "b" | "c" | "d" | "e" | "h" | "i" | "l" | "n" | "o" | "r" | "s" | "t" | " "
<number> ::= <digit> | <nonzero> <digit>
<nonzero> ::= "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9"
<digit> ::= "0" | <nonzero>
'''


def test_bnf_schema_constrains_output(server):
    for extra in ({"temperature": 0}, {"temperature": 1.0, "seed": 3}):
        status, answer = http("POST", server + "/api/oai/chat/completions",
                              {"messages": [{"role": "user", "content": "Describe a person as JSON."}],
                               "max_tokens": 120, "bnf_schema": NAME_AGE_JOB, **extra})
        assert status == 200, answer
        choice = answer["choices"][0]
        document = json.loads(choice["message"]["content"])
        assert set(document) == {"name", "age", "job"} and isinstance(document["age"], int)
        assert choice["finish_reason"] == "stop"


def test_json_schema_response_format_is_valid(client):
    jsonschema = pytest.importorskip("jsonschema")
    schema = {"type": "object",
              "properties": {"pet": {"enum": ["cat", "dog"]}, "ok": {"type": "boolean"},
                             "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}},
              "required": ["pet", "ok", "tags"]}
    response = client.chat.completions.create(
        model="tiny-rwkv-7v0-834K", max_tokens=200, temperature=1.0, seed=5,
        messages=[{"role": "user", "content": "A pet as JSON"}],
        response_format={"type": "json_schema", "json_schema": {"name": "pet", "schema": schema}})
    document = json.loads(response.choices[0].message.content)
    jsonschema.validate(document, schema)
    obj = client.chat.completions.create(model="tiny-rwkv-7v0-834K", max_tokens=300, temperature=0,
                                         messages=[{"role": "user", "content": "{}"}],
                                         response_format={"type": "json_object"})
    assert obj.choices[0].message.content.startswith("{")


def test_bad_grammar_is_a_400_with_position(server):
    status, answer = http("POST", server + "/v1/chat/completions",
                          {"messages": [{"role": "user", "content": "x"}], "bnf_schema": "<start> ::= \"a\" |\n  <missing"})
    assert status == 400 and answer["error"]["param"] == "bnf_schema"
    assert "line" in answer["error"]["message"]


def test_identical_concurrent_prompts_compute_once(server):
    prompt = "Once upon a time there was a little cat who lived in a big house by the sea. " * 3
    before = http("GET", server + "/api/status")[1]["prefix_cache"]
    body = {"prompt": prompt, "max_tokens": 4, "temperature": 0}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: http("POST", server + "/v1/completions", body), range(4)))
    texts = {answer["choices"][0]["text"] for status, answer in answers if status == 200}
    assert len(texts) == 1 and all(status == 200 for status, _ in answers)
    after = http("GET", server + "/api/status")[1]["prefix_cache"]
    assert after["hits"] - before["hits"] >= 3   # one request computed the prompt, three reused it
    assert after["in_flight"] == 0


def test_tls(tmp_path):
    import shutil
    import ssl
    import subprocess
    import urllib.request

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    with running_server(tmp_path, listen_options={"tls": True, "cert": str(cert), "key": str(key)},
                        wait_ready=False, scheme="https") as base:
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        with urllib.request.urlopen(base + "/health", context=context, timeout=10) as response:
            assert response.status == 200


def test_states_parked_in_host_memory_serve_later_turns(tmp_path, engine):
    """With no GPU budget the prefix cache keeps its states in host memory (the GPU's own flat
    layout); a later request that extends a cached prompt resumes from there unchanged."""
    with running_server(tmp_path, extra_sections="[cache]\ngpu_bytes = 0\nhost_bytes = 100000000\n") as base:
        body = {"prompt": "Once upon a time there was a cat who", "max_tokens": 12, "temperature": 0}
        status, first = http("POST", base + "/v1/completions", body)
        assert status == 200
        cache = http("GET", base + "/api/status")[1]["prefix_cache"]
        assert cache["gpu_bytes"] == 0 and cache["host_bytes"] > 0
        longer = {**body, "prompt": body["prompt"] + first["choices"][0]["text"] + " and"}
        status, answer = http("POST", base + "/v1/completions", longer)
        after = http("GET", base + "/api/status")[1]["prefix_cache"]
        assert status == 200 and after["hit_tokens"] > cache["hit_tokens"]
        assert answer["choices"][0]["text"] == greedy_alone(engine, longer["prompt"], 12, stop="\n\n")
