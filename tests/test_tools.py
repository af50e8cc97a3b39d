"""OpenAI tool calling: the prompt format, the grammar that enforces calls, the parser that
reads them back, and the whole loop through a real server and the OpenAI SDK (the tiny model
writes gibberish: the grammar alone makes its calls valid)."""
from __future__ import annotations

import json

import msgspec
import openai
import pytest
import trio

from ai00_trio.grammar import GrammarRejected
from ai00_trio.server import schemas as s
from ai00_trio.server.errors import ApiError
from ai00_trio.server.text import chat_prompt
from ai00_trio.server.tools import ReplyParser, tool_plan
from server_helpers import http, running_server

jsonschema = pytest.importorskip("jsonschema")

WEATHER = {"type": "object",
           "properties": {"city": {"enum": ["Paris", "Tokyo", "Lima"]}, "celsius": {"type": "boolean"},
                          "note": {"type": "string", "maxLength": 6}},
           "required": ["city", "celsius"]}
TIME = {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "parameters": TIME}}]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
MODEL = "tiny-rwkv-7v0-834K"


def request(**fields) -> s.ChatCompletionRequest:
    body = {"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": TOOLS, **fields}
    return msgspec.json.decode(json.dumps(body), type=s.ChatCompletionRequest)


def plan(**fields):
    return trio.run(tool_plan, request(**fields))


# --- prompt format (CPU) -------------------------------------------------------------------
def test_prompt_renders_tools_calls_and_results():
    messages = msgspec.convert([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris", "celsius": true}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": '{"zone":"CET"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "call_2", "content": "14:00"},
    ], list[s.ChatMessage])
    prompt, assistant_turns, continued = chat_prompt(messages, None, None, plan().prompt)
    turns = prompt.split("\n\n")
    assert turns[0].startswith("System: Be brief.\nYou can call these tools")
    assert '{"name":"get_weather","description":"Current weather in a city","parameters":' \
           + json.dumps(WEATHER, separators=(",", ":")) + "}" in turns[0]
    assert turns[1:] == [
        "User: Weather in Paris?",
        'Assistant: <tool_call>{"name":"get_weather","arguments":{"city":"Paris","celsius":true}}</tool_call>\n'
        '<tool_call>{"name":"get_time","arguments":{"zone":"CET"}}</tool_call>',
        'Observation: <tool_response name="get_weather">{"temp": 21}</tool_response>',
        'Observation: <tool_response name="get_time">14:00</tool_response>',
        "Assistant:"]
    assert assistant_turns == [turns[2][len("Assistant: "):]] and not continued


def test_prompt_without_system_turn_gets_one_and_none_hides_tools():
    messages = [s.ChatMessage("user", "Hi")]
    prompt, _, _ = chat_prompt(messages, None, None, plan(tool_choice={"type": "function",
                                                                        "function": {"name": "get_time"}}).prompt)
    system, user, prefix = prompt.split("\n\n")
    assert system.startswith("System: You can call these tools") and system.endswith("Answer now by calling get_time.")
    assert (user, prefix) == ("User: Hi", "Assistant:")
    assert plan(tool_choice="none") is None  # the model is told about tools only when it may call them


def test_tool_result_with_unknown_call_uses_its_name_field():
    messages = [s.ChatMessage("tool", "42", name="lookup"), s.ChatMessage("tool", "43")]
    prompt, _, _ = chat_prompt(messages, None, None)
    assert prompt.split("\n\n")[:2] == ['Observation: <tool_response name="lookup">42</tool_response>',
                                        "Observation: <tool_response>43</tool_response>"]


# --- grammar and parser (CPU) --------------------------------------------------------------
def accepts(grammar, text: str) -> bool:
    try:
        return grammar.start().advance(text.encode()).is_complete()
    except GrammarRejected:
        return False


CALL = '<tool_call>{"name":"get_weather","arguments":{"city":"Lima","celsius":false}}</tool_call>'
TIME_CALL = '<tool_call>{"name":"get_time","arguments":{"zone":"UTC"}}</tool_call>'


def test_grammar_per_tool_choice():
    auto, required = plan().grammar, plan(tool_choice="required").grammar
    named = plan(tool_choice={"type": "function", "function": {"name": "get_time"}}).grammar
    single = plan(tool_choice="required", parallel_tool_calls=False).grammar
    bad_args = '<tool_call>{"name":"get_weather","arguments":{"city":"Rome","celsius":false}}</tool_call>'
    cases = {
        "plain text": (True, False, False, False),
        "Let me look.\n" + CALL: (True, False, False, False),
        " " + CALL: (True, True, False, True),
        CALL + "\n" + TIME_CALL + "\n\n": (True, True, False, False),
        TIME_CALL + "\n" + TIME_CALL: (True, True, True, False),
        "text with <tool_call> inside": (False, False, False, False),
        bad_args: (False, False, False, False),
        "": (True, False, False, False),
    }
    for text, expected in cases.items():
        assert tuple(accepts(g, text) for g in (auto, required, named, single)) == expected, text


def test_arguments_are_an_object_whatever_the_schema_leaves_out():
    tools = [{"type": "function", "function": {"name": "anything", "parameters": {}}},
             {"type": "function", "function": {"name": "nothing"}}]
    grammar = plan(tools=tools, tool_choice="required").grammar
    assert accepts(grammar, '<tool_call>{"name":"anything","arguments":{"a":[1,"x"]}}</tool_call>')
    assert accepts(grammar, '<tool_call>{"name":"nothing","arguments":{}}</tool_call>')
    assert not accepts(grammar, '<tool_call>{"name":"anything","arguments":5}</tool_call>')
    assert not accepts(grammar, '<tool_call>{"name":"nothing","arguments":{"a":1}}</tool_call>')


def test_parser_splits_content_and_calls_the_same_in_any_pieces():
    text = ' Sure.\n<tool_call>{"name":"get_weather","arguments":{"city":"Paris","celsius":true,' \
           '"note":"}</tool_call>"}}</tool_call>\n' + TIME_CALL + "\n\n"
    whole = ReplyParser()
    whole.feed(text)
    whole.close()
    message, finish = whole.message("stop")
    assert message.content == "Sure." and finish == "tool_calls"
    assert [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls] == [
        ("get_weather", {"city": "Paris", "celsius": True, "note": "}</tool_call>"}), ("get_time", {"zone": "UTC"})]
    assert all(c.id.startswith("call_") and c.type == "function" for c in message.tool_calls)
    for size in (1, 3, 7):
        parser = ReplyParser()
        deltas = [d for i in range(0, len(text), size) for d in parser.feed(text[i:i + size])] + parser.close()
        content = "".join(d.content for d in deltas if d.content)
        starts = [c for d in deltas for c in d.tool_calls or () if c.id]
        arguments: dict[int, str] = {}
        for d in deltas:
            for c in d.tool_calls or ():
                arguments[c.index] = arguments.get(c.index, "") + (c.function.arguments or "")
        assert content == "Sure."
        assert [(c.index, c.type, c.function.name, c.function.arguments) for c in starts] == [
            (0, "function", "get_weather", ""), (1, "function", "get_time", "")]
        assert [arguments[0], arguments[1]] == [c.function.arguments for c in message.tool_calls]


def test_parser_holds_back_a_partial_tag_and_reports_a_cut_call():
    parser = ReplyParser()
    assert [d.content for d in parser.feed("Hi <tool_")] == ["Hi"]
    assert [d.content for d in parser.close()] == [" <tool_"]
    cut = ReplyParser()
    cut.feed('<tool_call>{"name":"get_time","arguments":{"zone":"U')
    cut.close()
    message, finish = cut.message("length")
    assert finish == "length" and message.content is None
    assert message.tool_calls[0].function.arguments == '{"zone":"U'


@pytest.mark.parametrize("fields, param", [
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools[0].function.name"),
    ({"tools": [{"type": "retrieval", "function": {"name": "x"}}]}, "tools[0].type"),
    ({"tools": TOOLS + [TOOLS[0]]}, "tools[2].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "x", "parameters": {"type": "string"}}}]},
     "tools[0].function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "x", "parameters": {
        "type": "object", "properties": {"a": {"type": "widget"}}}}}]}, "tools[0].function.parameters"),
    ({"tools": [], "tool_choice": "required"}, "tool_choice"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
])
def test_bad_tools_are_400s(fields, param):
    with pytest.raises(ApiError) as raised:
        plan(**fields)
    assert raised.value.status == 400 and raised.value.body.error.param == param


def test_openapi_documents_tools():
    from ai00_trio.server.openapi import openapi_document

    document = openapi_document()
    schemas = document["components"]["schemas"]
    assert {"tools", "tool_choice", "parallel_tool_calls"} <= set(schemas["ChatCompletionRequest"]["properties"])
    assert {"tool_calls", "tool_call_id"} <= set(schemas["ChatMessage"]["properties"])
    assert "tool_calls" in schemas["AssistantMessage"]["properties"]
    assert set(schemas["ToolCallDelta"]["properties"]) == {"index", "id", "type", "function"}
    stream = document["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]["text/event-stream"]
    events = stream["schema"]["properties"]["data"]["anyOf"]
    assert events == [{"const": "[DONE]"}, {"contentMediaType": "application/json",
                                            "contentSchema": {"$ref": "#/components/schemas/ChatCompletionChunk"}}]


# --- through a server (GPU) ----------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("tools")) as base:
        yield base


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=300)


def check_calls(tool_calls, names=tuple(SCHEMAS)) -> None:
    assert tool_calls
    for call in tool_calls:
        assert call.type == "function" and call.id.startswith("call_") and call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    assert len({call.id for call in tool_calls}) == len(tool_calls)


def answer_tool(messages: list, message) -> list:
    """The conversation after the assistant's calls (the SDK's message object, as SDK users
    append it) and each call's result."""
    return [*messages, message,
            *({"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'} for call in message.tool_calls)]


def test_tool_call_loop(client):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, tool_choice="required",
                                           max_tokens=400, temperature=1.0, seed=11)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    check_calls(choice.message.tool_calls)
    final = client.chat.completions.create(model=MODEL, messages=answer_tool(messages, choice.message), tools=TOOLS,
                                           max_tokens=30, temperature=1.0, seed=3)
    assert final.choices[0].finish_reason in ("stop", "length") and final.choices[0].message.tool_calls is None
    assert final.choices[0].message.content
    assert final.usage.prompt_tokens > first.usage.prompt_tokens  # the calls and results are in the prompt


def test_tool_call_loop_streamed(client):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    with client.chat.completions.stream(model=MODEL, messages=messages, tools=TOOLS, tool_choice="required",
                                        max_tokens=400, temperature=1.0, seed=11) as stream:
        done = [event for event in stream if event.type == "tool_calls.function.arguments.done"]
        streamed = stream.get_final_completion()
    message = streamed.choices[0].message
    assert streamed.choices[0].finish_reason == "tool_calls"
    check_calls(message.tool_calls)
    assert [(e.name, e.arguments) for e in done] == [(c.function.name, c.function.arguments)
                                                     for c in message.tool_calls]
    same = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, tool_choice="required",
                                          max_tokens=400, temperature=1.0, seed=11)
    assert [(c.function.name, c.function.arguments) for c in same.choices[0].message.tool_calls] == \
           [(c.function.name, c.function.arguments) for c in message.tool_calls]
    final = client.chat.completions.create(model=MODEL, messages=answer_tool(messages, message), tools=TOOLS,
                                           max_tokens=30, temperature=1.0, seed=3, stream=True)
    chunks = list(final)
    assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_stream_chunks_have_openai_shape(server):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Time?"}], "tools": TOOLS, "stream": True,
            "tool_choice": {"type": "function", "function": {"name": "get_time"}}, "max_tokens": 100, "seed": 1}
    status, raw = http("POST", server + "/api/oai/chat/completions", body, timeout=300)
    assert status == 200
    events = [json.loads(line[6:]) for line in raw.split("\n") if line.startswith("data: {")]
    assert raw.rstrip().endswith("data: [DONE]")
    deltas = [e["choices"][0]["delta"] for e in events]
    calls = [c for d in deltas for c in d.get("tool_calls", [])]
    assert deltas[0] == {"role": "assistant"}
    first = calls[0]
    assert first["index"] == 0 and first["id"].startswith("call_") and first["type"] == "function"
    assert first["function"] == {"name": "get_time", "arguments": ""}
    assert all(set(c) == {"index", "function"} and set(c["function"]) == {"arguments"} for c in calls[1:])
    assert all(c["index"] == 0 for c in calls)  # exactly the named function, once (parallel allows more)
    jsonschema.validate(json.loads("".join(c["function"]["arguments"] for c in calls)), TIME)
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert all(e["choices"][0]["finish_reason"] is None for e in events[:-1])


def test_named_tool_choice_calls_that_function(client):
    for seed in (1, 2):
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS, max_tokens=400, seed=seed,
            temperature=1.0, tool_choice={"type": "function", "function": {"name": "get_weather"}})
        check_calls(reply.choices[0].message.tool_calls, names=("get_weather",))


def test_parallel_tool_calls_false_gives_one_call(client):
    for seed in range(3):
        reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Both?"}],
                                               tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
                                               max_tokens=400, temperature=1.0, seed=seed)
        check_calls(reply.choices[0].message.tool_calls)
        assert len(reply.choices[0].message.tool_calls) == 1


def test_tool_choice_none_gives_text(client):
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Weather?"}],
                                           tools=TOOLS, tool_choice="none", max_tokens=20, temperature=0)
    choice = reply.choices[0]
    assert choice.message.tool_calls is None and choice.message.content and choice.finish_reason == "length"
    plain = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Weather?"}],
                                           max_tokens=20, temperature=0)
    assert choice.message.content == plain.choices[0].message.content  # tools are not in the prompt


def test_tool_errors_over_http(server):
    base = {"messages": [{"role": "user", "content": "x"}], "tools": TOOLS}
    for prefix in ("/v1", "/api/oai", "/api/oai/v1"):
        status, answer = http("POST", server + prefix + "/chat/completions",
                              {**base, "tool_choice": {"type": "function", "function": {"name": "nope"}}})
        assert status == 400 and answer["error"]["param"] == "tool_choice", answer
    for fields, param in (({"tool_choice": "sometimes"}, "tool_choice"),
                          ({"tools": [{"type": "function", "function": {"description": "no name"}}]},
                           "tools[0].function"),
                          ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
                              "type": "object", "properties": {"a": {"$ref": "#/missing"}}}}}]},
                           "tools[0].function.parameters")):
        status, answer = http("POST", server + "/v1/chat/completions", {**base, **fields})
        assert status == 400 and answer["error"]["param"] == param, answer
        assert answer["error"]["type"] == "invalid_request_error"
    assert "(f)" in answer["error"]["message"]  # the schema error names the tool
