"""Function tools on the Responses API: the flat tool shape, function_call items, results
given back as function_call_output items (with previous_response_id: the stored token ids),
the streamed events; through a real server and the official SDK (the tiny model writes
gibberish: the grammar alone makes its calls valid)."""
from __future__ import annotations

import json

import msgspec
import openai
import pytest
import trio

from ai00_trio.server.errors import ApiError
from ai00_trio.server.response_schemas import ResponseRequest
from ai00_trio.server.responses import _messages, _tool_plan
from ai00_trio.server.text import chat_prompt
from server_helpers import http, running_server

jsonschema = pytest.importorskip("jsonschema")

WEATHER = {"type": "object",
           "properties": {"city": {"enum": ["Paris", "Tokyo", "Lima"]}, "celsius": {"type": "boolean"}},
           "required": ["city", "celsius"], "additionalProperties": False}
TIME = {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"]}
TOOLS = [{"type": "function", "name": "get_weather", "description": "Current weather in a city",
          "parameters": WEATHER, "strict": True},
         {"type": "function", "name": "get_time", "parameters": TIME}]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}


def request(**fields) -> ResponseRequest:
    return msgspec.json.decode(json.dumps({"input": "Weather?", "tools": TOOLS, **fields}), type=ResponseRequest)


# --- CPU -----------------------------------------------------------------------------------
def test_function_call_items_render_as_chat_tool_turns():
    body = request(input=[
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Looking."}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city": "Paris", "celsius": true}'},
        {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": '{"zone":"CET"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": '{"temp": 21}'},
        {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "14:00"}]},
        {"type": "function_call_output", "call_id": "call_0", "output": "sunny"}])
    plan = trio.run(_tool_plan, body)
    prompt, _, continued = chat_prompt(_messages(body, {"call_0": "get_weather"}), None, None, plan.prompt)
    turns = prompt.split("\n\n")
    assert turns[0].startswith("System: You can call these tools")
    assert turns[1:] == [
        "User: Weather in Paris?",
        'Assistant: Looking.\n<tool_call>{"name":"get_weather","arguments":{"city":"Paris","celsius":true}}</tool_call>'
        '\n<tool_call>{"name":"get_time","arguments":{"zone":"CET"}}</tool_call>',
        'Observation: <tool_response name="get_weather">{"temp": 21}</tool_response>',
        'Observation: <tool_response name="get_time">14:00</tool_response>',
        # a call made in an earlier, stored response: named from the stored chain
        'Observation: <tool_response name="get_weather">sunny</tool_response>',
        "Assistant:"]
    assert not continued


def test_tool_choice_shapes():
    assert trio.run(_tool_plan, request(tool_choice="none")) is None
    assert trio.run(_tool_plan, request(tools=[])) is None
    named = trio.run(_tool_plan, request(tool_choice={"type": "function", "name": "get_time"}))
    assert named.prompt.endswith("Answer now by calling get_time.")
    assert trio.run(_tool_plan, request(tool_choice="required")).prompt.endswith("Answer now by calling tools.")


@pytest.mark.parametrize("fields, param", [
    ({"tools": [{"type": "web_search_preview"}]}, "tools[0].type"),
    ({"tools": [{"type": "function", "function": {"name": "chat_shaped"}}]}, "tools[0].name"),
    ({"tools": [{"type": "function", "name": "bad name"}]}, "tools[0].name"),
    ({"tools": [{"type": "function", "name": "f", "parameters": {"type": "array"}}]}, "tools[0].parameters"),
    ({"tools": [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {
        "a": {"$ref": "#/missing"}}}}]}, "tools[0].parameters"),
    ({"tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
    ({"tool_choice": {"type": "allowed_tools", "tools": []}}, "tool_choice"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [], "tool_choice": "required"}, "tool_choice"),
    ({"text": {"format": {"type": "json_object"}}}, "text.format"),
])
def test_bad_tools_are_400s(fields, param):
    with pytest.raises(ApiError) as caught:
        trio.run(_tool_plan, request(**fields))
    assert caught.value.status == 400 and caught.value.body.error.param == param


@pytest.mark.parametrize("item, param", [
    ({"type": "function_call", "name": "f", "arguments": "{}"}, "input[0].call_id"),
    ({"type": "function_call", "call_id": "c", "name": "f"}, "input[0].arguments"),
    ({"type": "function_call_output", "call_id": "c"}, "input[0].output"),
    ({"type": "item_reference", "id": "x"}, "input[0].type"),
])
def test_bad_input_items_are_400s(item, param):
    with pytest.raises(ApiError) as caught:
        _messages(request(input=[item]), {})
    assert caught.value.status == 400 and caught.value.body.error.param == param


# --- through a server (GPU) ----------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("responses-tools")) as base:
        yield base


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=300)


def check_calls(output, names=tuple(SCHEMAS)) -> list:
    calls = [item for item in output if item.type == "function_call"]
    assert calls
    for call in calls:
        assert call.id.startswith("fc_") and call.call_id.startswith("call_") and call.status == "completed"
        assert call.name in names
        jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])
    assert len({c.call_id for c in calls}) == len({c.id for c in calls}) == len(calls)
    return calls


def results(calls) -> list[dict]:
    return [{"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'} for call in calls]


def token_count(server: str, text: str) -> int:
    status, body = http("POST", server + "/tokenize", {"content": text})
    assert status == 200
    return len(body["tokens"])


@pytest.mark.gpu
def test_tool_call_loop_with_previous_response_id(client, server):
    first = client.responses.create(model="m", input="Weather in Paris?", tools=TOOLS, tool_choice="required",
                                    max_output_tokens=400, temperature=1.0, extra_body={"seed": 11})
    assert first.status == "completed" and first.output_text == ""
    calls = check_calls(first.output)
    assert first.tools[0].name == "get_weather" and first.tool_choice == "required"
    # the results, continued from the stored conversation: its tokens are not prefilled again,
    # the tool list (the same) is not repeated, and each result is named after its function
    second = client.responses.create(model="m", previous_response_id=first.id, input=results(calls), tools=TOOLS,
                                     tool_choice="required", max_output_tokens=400, temperature=1.0,
                                     extra_body={"seed": 5})
    history = first.usage.input_tokens + first.usage.output_tokens
    assert second.usage.input_tokens_details.cached_tokens == history
    raw = http("GET", server + f"/v1/responses/{first.id}")[1]
    assert raw["output"][0]["type"] == "function_call"
    observations = "\n\n".join(f'Observation: <tool_response name="{c.name}">{{"temp": 21}}</tool_response>'
                               for c in calls)
    new_turn = observations + "\n\nAssistant:"
    # the stored answer may end with the turn separator; the new turn starts one otherwise
    expected = {history + token_count(server, new_turn), history + token_count(server, "\n\n" + new_turn)}
    assert second.usage.input_tokens in expected
    check_calls(second.output)
    # the final answer: text, the calls of both earlier turns in the history
    final = client.responses.create(model="m", previous_response_id=second.id, input=results(check_calls(second.output)),
                                    tools=TOOLS, max_output_tokens=24, temperature=0)
    assert [item.type for item in final.output] == ["message"] and final.output_text
    assert final.usage.input_tokens_details.cached_tokens == second.usage.input_tokens + second.usage.output_tokens


@pytest.mark.gpu
def test_streamed_calls_have_openai_events(client):
    kwargs = dict(model="m", input="Time and weather?", tools=TOOLS, tool_choice="required", max_output_tokens=400,
                  temperature=1.0, extra_body={"seed": 11})
    whole = client.responses.create(**kwargs)
    events = list(client.responses.create(stream=True, **kwargs))
    types = [e.type for e in events]
    assert types[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert types[-1] == "response.completed" and [e.sequence_number for e in events] == list(range(len(events)))
    assert "response.output_text.delta" not in types and "response.content_part.added" not in types
    done = events[-1].response
    calls = check_calls(done.output)
    assert [(c.name, c.arguments) for c in calls] == [(c.name, c.arguments) for c in check_calls(whole.output)]
    for index, call in enumerate(calls):
        added = [e for e in events if e.type == "response.output_item.added" and e.output_index == index]
        assert added[0].item.type == "function_call" and added[0].item.id == call.id
        assert added[0].item.arguments == "" and added[0].item.status == "in_progress"
        deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta" and e.item_id == call.id]
        assert "".join(deltas) == call.arguments
        [args_done] = [e for e in events if e.type == "response.function_call_arguments.done" and e.item_id == call.id]
        assert args_done.arguments == call.arguments and args_done.output_index == index
        [item_done] = [e for e in events if e.type == "response.output_item.done" and e.output_index == index]
        assert item_done.item == call
        if index:  # the call before is done before this one is added
            previous_done = [e for e in events if e.type == "response.output_item.done"
                             and e.output_index == index - 1][0]
            assert previous_done.sequence_number < added[0].sequence_number
    with client.responses.stream(**kwargs) as stream:
        list(stream)
        final = stream.get_final_response()
    assert [(c.name, c.arguments) for c in check_calls(final.output)] == [(c.name, c.arguments) for c in calls]


@pytest.mark.gpu
def test_named_function_and_one_call_only(client):
    for seed in (1, 2):
        reply = client.responses.create(model="m", input="Weather?", tools=TOOLS, max_output_tokens=400,
                                        temperature=1.0, parallel_tool_calls=False, extra_body={"seed": seed},
                                        tool_choice={"type": "function", "name": "get_time"})
        assert len(check_calls(reply.output, names=("get_time",))) == 1 and reply.parallel_tool_calls is False


@pytest.mark.gpu
def test_tool_choice_none_answers_text_and_errors_over_http(client, server):
    plain = client.responses.create(model="m", input="Weather?", max_output_tokens=16, temperature=0)
    none = client.responses.create(model="m", input="Weather?", tools=TOOLS, tool_choice="none",
                                   max_output_tokens=16, temperature=0)
    assert none.output_text == plain.output_text and [i.type for i in none.output] == ["message"]
    status, body = http("POST", server + "/v1/responses", {"input": "x", "tools": [{"type": "file_search"}]})
    assert status == 400 and body["error"]["param"] == "tools[0].type"
