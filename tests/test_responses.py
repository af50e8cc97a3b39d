"""OpenAI's Responses API end to end: a real server, the official SDK's `client.responses`."""
from __future__ import annotations

import http.client as http_client
import json

import openai
import pytest

from server_helpers import http, running_server
from test_server import greedy_alone, wait_until_no_slot_is_held

pytestmark = pytest.mark.gpu  # every test here runs a server process on the GPU adapter


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("responses"), extra_sections="[responses]\nmax_stored = 4\n") as base:
        yield base


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def engine(load_tiny):
    return load_tiny("v7", "fp16")


def cache_stats(server: str) -> dict:
    return http("GET", server + "/api/status")[1]["prefix_cache"]


def raw_answer(server: str, prompt: str, max_tokens: int) -> str:
    """The untrimmed greedy text a chat turn ends with, through /v1/completions."""
    status, body = http("POST", server + "/v1/completions", {"prompt": prompt, "max_tokens": max_tokens,
                                                            "temperature": 0, "stop": ["\n\n"]})
    assert status == 200
    return body["choices"][0]["text"]


def test_create_matches_the_engine_and_has_openai_shape(client, engine):
    response = client.responses.create(model="tiny-rwkv-7v0-834K", input="Hi", instructions="Be brief.",
                                       temperature=0, max_output_tokens=24, metadata={"k": "v"})
    prompt = "System: Be brief.\n\nUser: Hi\n\nAssistant:"
    assert response.output_text == greedy_alone(engine, prompt, 24, stop="\n\n").strip()
    assert response.id.startswith("resp_") and response.object == "response"
    message = response.output[0]
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.content[0].type == "output_text" and message.content[0].annotations == []
    assert response.usage.input_tokens == len(prompt)
    assert response.usage.output_tokens == 24  # the tiny model's greedy answer never reaches "\n\n"
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert message.status == "incomplete"
    assert (response.instructions, response.temperature, response.max_output_tokens) == ("Be brief.", 0, 24)
    assert response.metadata == {"k": "v"} and response.store is True and response.previous_response_id is None
    assert response.tools == [] and response.model == "tiny-rwkv-7v0-834K"


def test_message_list_input_renders_as_chat(client, server):
    messages = [{"role": "developer", "content": "Answer in French."},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "The "},
                                                                 {"type": "input_text", "text": "cat"}]}]
    response = client.responses.create(model="m", input=messages, temperature=0, max_output_tokens=16)
    status, chat = http("POST", server + "/v1/chat/completions", {
        "messages": [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "The cat"}],
        "temperature": 0, "max_tokens": 16})
    assert status == 200 and response.output_text == chat["choices"][0]["message"]["content"]
    assert response.usage.input_tokens == chat["usage"]["prompt_tokens"]


def test_stream_events_parse_and_join_to_the_answer(client):
    kwargs = dict(model="m", input="Tell me a story", temperature=0, max_output_tokens=20)
    full = client.responses.create(**kwargs)
    events = list(client.responses.create(stream=True, **kwargs))
    types = [e.type for e in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    final = f"response.{full.status}"
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          final]
    assert set(types[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == full.output_text and events[-4].text == text
    assert events[0].response.status == "in_progress" and events[0].response.output == []
    done = events[-1].response
    assert done.output_text == text and done.usage.output_tokens == full.usage.output_tokens
    assert {e.item_id for e in events if hasattr(e, "item_id")} == {done.output[0].id}
    # a streamed response is stored too
    assert client.responses.retrieve(done.id).output_text == text


def test_the_sdk_stream_helper_gets_the_final_response(client):
    # an answer that ends at its stop string: the helper wants response.completed (the SDK
    # does not take response.incomplete, which OpenAI sends at max_output_tokens, as final)
    with client.responses.stream(model="m", input="Hi", temperature=0, max_output_tokens=40,
                                 extra_body={"stop": ["h"]}) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == "completed" and final.output_text == "".join(deltas) == "t"


def test_previous_response_id_reuses_the_stored_history(client, server, engine):
    """Three turns: each continues the last from its cached state (no prefill of the history),
    and each answer is the greedy answer to the whole conversation as one prompt."""
    turns = ["Once upon a time", "And then?", "What next?"]
    text, previous = "", None
    for turn in turns:
        prompt = text + f"User: {turn}\n\nAssistant:"
        before = cache_stats(server)
        response = client.responses.create(model="m", input=turn, previous_response_id=previous and previous.id,
                                           temperature=0, max_output_tokens=40)
        after = cache_stats(server)
        assert response.output_text == greedy_alone(engine, prompt, 40, stop="\n\n").strip()
        assert response.usage.input_tokens == len(prompt.encode())
        if previous is not None:
            history = previous.usage.input_tokens + previous.usage.output_tokens
            # the whole stored history came from the cache; only the new turn was prefilled
            assert response.usage.input_tokens_details.cached_tokens == history
            assert after["hit_tokens"] - before["hit_tokens"] == history
            assert response.previous_response_id == previous.id
        raw = raw_answer(server, prompt, 40)
        assert raw.strip() == response.output_text
        text = prompt + raw + "\n\n"
        previous = response


@pytest.mark.parametrize("stop", ["e t", "h"])
def test_an_answer_that_ended_at_a_stop_string_is_continued_from_the_cache(client, engine, stop):
    """The stored conversation holds the answer as generated, its stop string included. "e t"
    spans tokens, so the GPU's decode ran on past it: the state is recomputed once from the
    prompt's; "h" is one token, which ends the decode."""
    first = client.responses.create(model="m", input="Hi", temperature=0, max_output_tokens=40,
                                      extra_body={"stop": [stop]})
    assert first.status == "completed" and first.incomplete_details is None and first.usage.output_tokens < 40
    second = client.responses.create(model="m", input="And then?", previous_response_id=first.id, temperature=0,
                                     max_output_tokens=12, extra_body={"stop": [stop]})
    history = first.usage.input_tokens + first.usage.output_tokens
    assert second.usage.input_tokens_details.cached_tokens == history
    first_prompt = "User: Hi\n\nAssistant:"
    prompt = first_prompt + greedy_alone(engine, first_prompt, 40, stop) + stop + "\n\nUser: And then?\n\nAssistant:"
    assert second.usage.input_tokens == len(prompt)
    assert second.output_text == greedy_alone(engine, prompt, 12, stop).strip()


def test_continuing_equals_sending_the_whole_conversation(client):
    """When the answers render back as they were generated (one leading space, no blank lines),
    a continued response and one request with the whole conversation are the same prompt."""
    first = client.responses.create(model="m", input="Tell me a long story about a cat and a dog.",
                                    temperature=0, max_output_tokens=16)
    follow = client.responses.create(model="m", input="And then?", previous_response_id=first.id,
                                     temperature=0, max_output_tokens=16)
    whole = client.responses.create(model="m", temperature=0, max_output_tokens=16, input=[
        {"role": "user", "content": "Tell me a long story about a cat and a dog."},
        {"role": "assistant", "content": first.output_text}, {"role": "user", "content": "And then?"}])
    assert whole.output_text == follow.output_text
    # the same tokens: the whole conversation is the continued response's prompt, cached whole
    assert whole.usage.input_tokens == follow.usage.input_tokens
    assert whole.usage.input_tokens_details.cached_tokens == whole.usage.input_tokens


def test_new_instructions_join_the_continued_conversation(client, engine):
    first = client.responses.create(model="m", input="Hi", instructions="Be kind.", temperature=0,
                                    max_output_tokens=8)
    second = client.responses.create(model="m", input="More", instructions="Be brief.", temperature=0,
                                     max_output_tokens=8, previous_response_id=first.id)
    first_prompt = "System: Be kind.\n\nUser: Hi\n\nAssistant:"
    # the earlier instructions stay in the history; the new ones open the new turn
    prompt = first_prompt + greedy_alone(engine, first_prompt, 8) + "\n\nSystem: Be brief.\n\nUser: More\n\nAssistant:"
    assert second.usage.input_tokens == len(prompt) and second.instructions == "Be brief."
    assert second.output_text == greedy_alone(engine, prompt, 8).strip()


def test_a_stream_cut_short_frees_its_slot_and_is_not_stored(server):
    connection = http_client.HTTPConnection(*server.removeprefix("http://").split(":"), timeout=30)
    body = json.dumps({"input": "Hi", "max_output_tokens": 5000, "stream": True, "temperature": 0})
    connection.request("POST", "/v1/responses", body, {"Content-Type": "application/json"})
    reply = connection.getresponse()
    assert reply.status == 200 and reply.readline() == b"event: response.created\n"
    created = json.loads(reply.readline().removeprefix(b"data: "))
    connection.close()
    wait_until_no_slot_is_held(server, 30, "the cut-short stream kept its slot")
    assert http("GET", server + f"/v1/responses/{created['response']['id']}")[0] == 404


def test_retrieve_delete_and_unknown_ids(client, server):
    response = client.responses.create(model="m", input="Hello", temperature=0, max_output_tokens=8)
    got = client.responses.retrieve(response.id)
    assert got.id == response.id and got.output_text == response.output_text and got.usage == response.usage
    for prefix in ("/api/oai", "/api/oai/v1"):
        status, body = http("GET", server + f"{prefix}/responses/{response.id}")
        assert status == 200 and body["id"] == response.id
    status, body = http("DELETE", server + f"/v1/responses/{response.id}")
    assert status == 200 and body == {"id": response.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.retrieve(response.id)
    assert caught.value.body["code"] == "response_not_found"
    status, body = http("DELETE", server + f"/v1/responses/{response.id}")
    assert status == 404 and body["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="m", input="Hi", previous_response_id=response.id)
    assert caught.value.body["param"] == "previous_response_id"


def test_store_false_and_the_store_cap(client):
    unstored = client.responses.create(model="m", input="Hi", max_output_tokens=4, store=False)
    assert unstored.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    ids = [client.responses.create(model="m", input=f"Hi {i}", max_output_tokens=4).id for i in range(5)]
    with pytest.raises(openai.NotFoundError):  # max_stored = 4: the oldest went first
        client.responses.retrieve(ids[0])
    assert [client.responses.retrieve(i).id for i in ids[1:]] == ids[1:]


@pytest.mark.parametrize("fields, param", [
    ({"input": "Hi", "tools": [{"type": "web_search_preview"}]}, "tools[0].type"),
    ({"input": "Hi", "tool_choice": "required"}, "tool_choice"),
    ({"input": ""}, "input"),
    ({}, "input"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input[0].content"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ({"input": "Hi", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "Hi", "temperature": 9}, "temperature"),
    ({"input": "Hi", "background": True}, "background"),
    ({"input": "Hi", "metadata": {"k" * 65: "v"}}, "metadata"),
    ({"input": "Hi", "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "nope"}}}},
     "text.format"),
    ({"input": 5}, "input"),
])
def test_bad_requests_are_openai_shaped_400s(server, fields, param):
    status, body = http("POST", server + "/v1/responses", {"model": "m", **fields})
    assert status == 400, body
    assert body["error"]["param"] == param and body["error"]["type"] == "invalid_request_error"


def test_json_schema_text_format_constrains_the_answer(client):
    schema = {"type": "object", "properties": {"pet": {"enum": ["cat", "dog"]}}, "required": ["pet"],
              "additionalProperties": False}
    response = client.responses.create(model="m", input="JSON please", max_output_tokens=64, temperature=0,
                                       text={"format": {"type": "json_schema", "name": "x", "schema": schema}})
    assert json.loads(response.output_text)["pet"] in ("cat", "dog") and response.status == "completed"
    assert response.text.format.type == "json_schema"


def test_openapi_and_status_show_the_responses_api(server, client):
    spec = http("GET", server + "/api-docs/openapi.json")[1]
    assert set(spec["paths"]["/v1/responses"]) == {"post"}
    assert set(spec["paths"]["/v1/responses/{response_id}"]) == {"get", "delete"}
    fields = spec["components"]["schemas"]["ResponseRequest"]["properties"]
    assert {"input", "instructions", "previous_response_id", "max_output_tokens", "store"} <= set(fields)
    client.responses.create(model="m", input="Hi", max_output_tokens=2)
    stored = http("GET", server + "/api/status")[1]["responses"]
    assert stored["max_stored"] == 4 and 1 <= stored["stored"] <= 4
