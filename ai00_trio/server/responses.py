"""OpenAI's Responses API: POST /responses (streamed or not), GET and DELETE /responses/{id}.

A stored response keeps the token ids of its whole conversation: every input and answer,
chained through `previous_response_id`. A response that continues it generates from those ids
followed by the new turn's tokens, and the generation that wrote the answer left the state after
its last token in the prefix cache (`TextJob.cache_answer`): the history is never prefilled
again, and `usage.input_tokens_details.cached_tokens` counts it.

Function tools work as on chat completions (tools.py): the answer is a message and/or
`function_call` items; the client sends each call's result back as a `function_call_output`
input item, usually with `previous_response_id`.
"""
from __future__ import annotations

import itertools
import math
import secrets
import sys
import time
from array import array
from dataclasses import dataclass
from typing import AsyncIterator, Callable

import msgspec
import trio
from quart import Response, request

from ..config import Config
from ..grammar import compile_grammar, grammar_from_response_format
from ..sampling import sampler_from_openai
from .messages import Done, Failed, TextJob, Token
from .engine_service import LoadedModel
from .event_batches import event_batches
from .grammar_compile import compile_in_time
from .errors import ApiError, bad_request, overloaded
from .failure_errors import api_error
from .response_schemas import (ArgumentsDeltaEvent, ArgumentsDoneEvent, ContentPartEvent, DeletedResponse,
                               ErrorEvent, FunctionCallItem, IncompleteDetails, InputItem, InputPart,
                               InputTokensDetails, OutputItem, OutputItemEvent, OutputMessage, OutputText,
                               OutputTokensDetails, ResponseError, ResponseEvent, ResponseObject, ResponseRequest,
                               ResponseUsage, TextDeltaEvent, TextDoneEvent)
from .response_store import ResponseStore, StoredResponse
from .sampling_glue import sampler_factory
from .schemas import (ChatMessage, ChatTemplate, Delta, FunctionCall, FunctionDefinition, StateChoice, ToolCall,
                      decode_request)
from .text import ChatTrim, chat_prompt, stop_list
from .tools import ReplyParser, ToolPlan, plan_tools

DEFAULT_MAX_OUTPUT_TOKENS = 256
SEP = ChatTemplate().sep
INPUT_ROLES = ("user", "assistant", "system", "developer")
TEXT_PARTS = ("input_text", "output_text", "text")
TOOL_CHOICES = ("none", "auto", "required")
MAX_METADATA, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512


@dataclass(frozen=True)
class Turn:
    """What one request generates from."""
    prompt_ids: list[int]        # the stored conversation's tokens, then the new turn's
    model_text: list[str]        # the conversation's assistant turns
    continued: bool              # the input ends with the beginning of the answer
    state_id: StateChoice
    tools: ToolPlan | None       # the functions the model may call now
    tool_prompt: str | None      # the tool list the conversation's prompt holds last


@dataclass(frozen=True)
class Draft:
    """The response being written: its ids and the request's settings it echoes."""
    body: ResponseRequest
    model: str
    max_output_tokens: int
    id: str
    message_id: str
    created_at: int

    def response(self, status: str, output: list[OutputItem], usage: ResponseUsage | None,
                 error: ResponseError | None = None) -> ResponseObject:
        body = self.body
        fmt = body.text.format if body.text is not None and body.text.format is not None else {"type": "text"}
        defaults = sampler_from_openai()  # what a request that gives no sampling fields runs with
        return ResponseObject(
            id=self.id, created_at=self.created_at, status=status, model=self.model, output=output, usage=usage,
            error=error,
            incomplete_details=IncompleteDetails("max_output_tokens") if status == "incomplete" else None,
            instructions=body.instructions, max_output_tokens=body.max_output_tokens,
            previous_response_id=body.previous_response_id,
            temperature=defaults.temperature if body.temperature is None else body.temperature,
            top_p=defaults.top_p if body.top_p is None else body.top_p,
            metadata=dict(body.metadata or {}), store=body.store, user=body.user, text={"format": fmt},
            tools=body.tools or [], tool_choice=body.tool_choice or "auto",
            parallel_tool_calls=body.parallel_tool_calls, truncation=body.truncation or "disabled")

    def message(self, status: str, text: str) -> OutputMessage:
        return OutputMessage(id=self.message_id, status=status, content=[OutputText(text=text)])


class Answer:
    """A generation's events, taken in: the answer's text (trimmed as chat's is, so a stream
    carries what the whole answer holds), its tool calls when it was offered tools, its token
    ids, and how it ended."""

    def __init__(self, continued: bool, tools: bool) -> None:
        self._trim = ChatTrim(leading=not continued)  # a continued message keeps its leading space
        self._parser = ReplyParser(continued) if tools else None
        self._parts: list[str] = []
        self._raw: list[str] = []
        self.call_item_ids: list[str] = []  # fc_... of each call, in order
        self.tokens: list[int] = []
        self.done: Done | None = None

    def take(self, event: Token | Done | Failed) -> list[Delta]:
        """What `event` adds to the answer: content, a call's start, pieces of its arguments."""
        if isinstance(event, Failed):
            raise api_error(event.error)
        if isinstance(event, Done):
            self.done = event
            deltas = self._parser.close() if self._parser is not None else []
        else:
            if event.token >= 0:
                self.tokens.append(event.token)
            self._raw.append(event.text)
            if self._parser is not None:
                deltas = self._parser.feed(event.text)
            else:
                piece = self._trim.feed(event.text)
                deltas = [Delta(content=piece)] if piece else []
        for delta in deltas:
            if delta.content:
                self._parts.append(delta.content)
            elif delta.tool_calls and delta.tool_calls[0].id is not None:
                self.call_item_ids.append("fc_" + secrets.token_hex(24))
        return deltas

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def model_text(self) -> str:
        """The answer as the model wrote it, calls included (it seeds the repetition penalties)."""
        return "".join(self._raw).strip()

    def calls(self, status: str) -> list[FunctionCallItem]:
        """The calls so far; the last is `status` unless it is whole."""
        calls = self._parser.calls if self._parser is not None else []
        return [FunctionCallItem(id=item_id, call_id=call.id, name=call.name, arguments="".join(call.arguments),
                                 status="completed" if k < len(calls) - 1 or self._parser.complete else status)
                for k, (item_id, call) in enumerate(zip(self.call_item_ids, calls))]

    def output(self, draft: "Draft", status: str) -> list[OutputItem]:
        """The output items of a response that is `status`: the message (when it has text or
        there are no calls), then the calls."""
        item_status = "incomplete" if status == "failed" else status
        calls = self.calls(item_status)
        message = [draft.message("completed" if calls else item_status, self.text)] if self.text or not calls else []
        return [*message, *calls]


def register_responses(route: Callable, store: ResponseStore, chat_model: Callable, config: Config) -> None:
    """Adds the routes through the app's `route` (every API prefix); `chat_model(name)` gives
    the loaded model and actor graph that `model` calls for."""

    @route("/responses", ["POST"])
    async def create_response():
        body = decode_request(await request.get_data(), ResponseRequest)
        loaded, graph = chat_model(body.model)
        _refuse_unsupported(body)
        tools = await _tool_plan(body)
        turn = await _turn(body, store, loaded, tools)
        draft = Draft(body, loaded.name, _max_output_tokens(body, config.model.max_tokens_cap),
                      "resp_" + secrets.token_hex(24), "msg_" + secrets.token_hex(24), int(time.time()))
        factory = sampler_factory(body, loaded.model.info.n_vocab, 0, 0)
        grammar = tools.grammar if tools is not None else await _grammar(body, config.model.grammar_compile_seconds)
        send, recv = trio.open_memory_channel(math.inf)  # a generation never waits for its reader
        job = TextJob("", factory, draft.max_output_tokens, stop_list(body.stop, config.model.stop), send,
                      turn.state_id, turn.model_text, grammar, "input", prompt_ids=turn.prompt_ids,
                      cache_answer=body.store)
        try:
            graph.jobs.send_nowait(job)
        except trio.WouldBlock:
            raise overloaded() from None
        try:
            first = await recv.receive()  # an early failure is an HTTP error, not a stream
            if isinstance(first, Failed):
                raise api_error(first.error)
            # A load balancer in front of several servers learns from this header where the
            # response is stored, so it can send the turn that continues it to this server.
            stored_here = {"X-Response-Id": draft.id} if body.store else {}
            if body.stream:
                stream = _stream(recv, first, draft, turn, store, loaded, config.listen.stream_flush_ms / 1000)
                recv = None  # the stream closes it
                return Response(stream, content_type="text/event-stream",
                                headers={"Cache-Control": "no-cache", **stored_here})
            answer = Answer(turn.continued, tools is not None)
            async for batch in event_batches(recv, first):
                for event in batch:
                    answer.take(event)
            return _json(_finish(answer, draft, turn, store, loaded), stored_here)
        finally:
            if recv is not None:
                recv.close()  # a client gone or an error: the generation ends at its next token

    @route("/responses/<response_id>", ["GET"])
    async def get_response(response_id: str):
        return _json(_stored(store, response_id).response)

    @route("/responses/<response_id>", ["DELETE"])
    async def delete_response(response_id: str):
        _stored(store, response_id)
        store.delete(response_id)
        return _json(DeletedResponse(response_id))


def _json(value, headers: dict[str, str] | None = None) -> Response:
    return Response(msgspec.json.encode(value), content_type="application/json", headers=headers)


def _stored(store: ResponseStore, response_id: str, param: str | None = None) -> StoredResponse:
    stored = store.get(response_id)
    if stored is None:
        raise ApiError(404, f"no stored response with id {response_id!r} (responses made with store=false "
                       "are not kept, and the oldest are dropped past [responses] max_stored)",
                       "invalid_request_error", param, "response_not_found")
    return stored


def _refuse_unsupported(body: ResponseRequest) -> None:
    if body.background:
        raise bad_request("background responses are not supported", param="background")
    if body.conversation is not None:
        raise bad_request("conversations are not supported; chain responses with previous_response_id",
                          param="conversation")
    if body.n != 1:
        raise bad_request("a response has one answer (n = 1)", param="n")
    if body.top_logprobs:
        raise bad_request("top_logprobs is not supported on /v1/responses; use chat completions",
                          param="top_logprobs")
    metadata = body.metadata or {}
    if len(metadata) > MAX_METADATA or any(len(k) > MAX_METADATA_KEY or len(v) > MAX_METADATA_VALUE
                                           for k, v in metadata.items()):
        raise bad_request(f"metadata holds at most {MAX_METADATA} pairs, keys of at most {MAX_METADATA_KEY} "
                          f"characters and values of at most {MAX_METADATA_VALUE}", param="metadata")


def _max_output_tokens(body: ResponseRequest, cap: int) -> int:
    value = next((v for v in (body.max_output_tokens, body.max_completion_tokens, body.max_tokens)
                  if v is not None), None)
    if value is None:
        return min(DEFAULT_MAX_OUTPUT_TOKENS, cap)
    if not 1 <= value <= cap:
        raise bad_request(f"max_output_tokens must be between 1 and {cap} on this server ([model] max_tokens_cap)",
                          param="max_output_tokens")
    return value


async def _tool_plan(body: ResponseRequest) -> ToolPlan | None:
    """The request's function tools and tool_choice (Responses' flat shapes) as a tool plan."""
    tools = body.tools or []
    for i, tool in enumerate(tools):
        if tool.type != "function":
            raise bad_request(f"tools[{i}].type: only function tools are served, not {tool.type!r}",
                              param=f"tools[{i}].type")
        if tool.name is None:
            raise bad_request(f"tools[{i}].name is required", param=f"tools[{i}].name")
    choice, named = body.tool_choice, None
    if isinstance(choice, dict):
        if choice.get("type") != "function" or not isinstance(choice.get("name"), str):
            raise bad_request('tool_choice must be "none", "auto", "required" or {"type": "function", "name": ...}',
                              param="tool_choice")
        choice, named = None, choice["name"]
    elif choice is not None and choice not in TOOL_CHOICES:
        raise bad_request(f"tool_choice must be one of {', '.join(TOOL_CHOICES)} or a named function",
                          param="tool_choice")
    functions = [FunctionDefinition(t.name, t.description, t.parameters, t.strict) for t in tools]
    return await plan_tools(functions, choice, named, body.parallel_tool_calls, _grammar_field(body),
                            lambda i: f"tools[{i}]")


def _grammar_field(body: ResponseRequest) -> str | None:
    """The output grammar the request gives besides tools, if any."""
    fmt = body.text.format if body.text is not None else None
    for name, value in (("bnf_schema", body.bnf_schema), ("text.format", fmt), ("response_format", body.response_format)):
        if value is not None and value != {"type": "text"}:
            return name
    return None


def _part_text(value: str | list[InputPart] | None, param: str) -> str:
    if not isinstance(value, list):
        return value or ""
    for part in value:
        if part.type not in TEXT_PARTS or part.text is None:
            raise bad_request(f"{param}: only text parts are supported, got {part.type!r}", param=param)
    return "".join(part.text for part in value)


def _required(item: InputItem, index: int, *names: str) -> None:
    for name in names:
        if not isinstance(getattr(item, name), str if name != "output" else (str, list)):
            raise bad_request(f"input[{index}]: a {item.type} item needs {name}", param=f"input[{index}].{name}")


def _messages(body: ResponseRequest, call_names: dict[str, str]) -> list[ChatMessage]:
    """`instructions` as a system message, then the input's items as chat messages: function
    calls join the assistant turn they follow, their results are tool messages (named after
    the function, from `call_names` for calls made in earlier responses)."""
    messages = [ChatMessage("system", body.instructions)] if body.instructions else []
    first = len(messages)
    items = body.input
    if isinstance(items, str):
        items = [InputItem(role="user", content=items)] if items else []
    if not items:
        raise bad_request("input is required: a string or a list of messages", param="input")
    for i, item in enumerate(items):
        if item.type == "function_call":
            _required(item, i, "call_id", "name", "arguments")
            call = ToolCall(item.call_id, FunctionCall(item.name, item.arguments))
            if len(messages) > first and messages[-1].role == "assistant":
                messages[-1].tool_calls = [*(messages[-1].tool_calls or []), call]
            else:
                messages.append(ChatMessage("assistant", None, tool_calls=[call]))
            continue
        if item.type == "function_call_output":
            _required(item, i, "call_id", "output")
            messages.append(ChatMessage("tool", _part_text(item.output, f"input[{i}].output"),
                                        name=call_names.get(item.call_id), tool_call_id=item.call_id))
            continue
        if item.type != "message":
            raise bad_request(f"input[{i}]: items of type {item.type!r} are not supported, only messages, "
                              "function_call and function_call_output", param=f"input[{i}].type")
        if item.role not in INPUT_ROLES:
            raise bad_request(f"input[{i}].role must be one of {', '.join(INPUT_ROLES)}", param=f"input[{i}].role")
        messages.append(ChatMessage(item.role, _part_text(item.content, f"input[{i}].content")))
    return messages


def _chain_call_names(store: ResponseStore, stored: StoredResponse | None) -> dict[str, str]:
    """call_id -> function name of the calls made in a stored conversation (as far back as it is kept)."""
    names: dict[str, str] = {}
    seen: set[str] = set()
    while stored is not None and stored.response.id not in seen:
        seen.add(stored.response.id)
        names.update((item.call_id, item.name) for item in stored.response.output
                     if isinstance(item, FunctionCallItem))
        parent = stored.response.previous_response_id
        stored = store.get(parent) if parent else None
    return names


async def _turn(body: ResponseRequest, store: ResponseStore, loaded: LoadedModel, tools: ToolPlan | None) -> Turn:
    """The prompt: the chat rendering of the input, after the stored conversation's tokens. The
    tool list joins the prompt unless the stored conversation holds it already."""
    previous = None
    if body.previous_response_id is not None:
        previous = _stored(store, body.previous_response_id, "previous_response_id")
        if body.state is not None and body.state != previous.state_id:
            raise bad_request("a continued conversation keeps the initial state it started from", param="state")
    known = previous.tool_prompt if previous is not None else None
    tool_prompt = tools.prompt if tools is not None else None
    shown = tool_prompt if tool_prompt != known else None
    text, model_text, continued = chat_prompt(_messages(body, _chain_call_names(store, previous)), None, None, shown)
    if previous is None:
        return Turn(await loaded.encode(text), model_text, continued, body.state, tools, tool_prompt)
    text = text if previous.ends_turn else SEP + text
    return Turn(previous.tokens.tolist() + await loaded.encode(text), [*previous.model_text, *model_text],
                continued, previous.state_id, tools, tool_prompt or known)


async def _grammar(body: ResponseRequest, seconds: float):
    """The output grammar: `bnf_schema`, or `text.format` (or chat's `response_format`)."""
    fmt = body.text.format if body.text is not None else None
    param = "text.format"
    if fmt is not None and body.response_format is not None:
        raise bad_request("give either text.format or response_format, not both", param="text.format")
    if fmt is None:
        fmt, param = body.response_format, "response_format"
    elif fmt.get("type") == "json_schema":  # chat's shape nests the schema's fields
        fmt = {"type": "json_schema", "json_schema": {k: v for k, v in fmt.items() if k != "type"}}
    if body.bnf_schema is not None and fmt not in (None, {"type": "text"}):
        raise bad_request(f"give either bnf_schema or {param}, not both", param="bnf_schema")
    if body.bnf_schema is not None:
        return await compile_in_time(compile_grammar, body.bnf_schema, "bnf_schema", seconds)
    if fmt is not None:
        return await compile_in_time(grammar_from_response_format, fmt, param, seconds)
    return None


def _finish(answer: Answer, draft: Draft, turn: Turn, store: ResponseStore, loaded: LoadedModel) -> ResponseObject:
    """The finished response, stored (with its conversation's tokens) unless store=false."""
    done = answer.done
    if done is None:
        raise ApiError(500, "the generation ended without finishing", "server_error")
    status = "incomplete" if done.finish_reason == "length" else "completed"
    usage = ResponseUsage(done.prompt_tokens, InputTokensDetails(done.cached_tokens,
                                                                 done.prompt_tokens - done.cached_tokens),
                          done.completion_tokens, OutputTokensDetails(), done.prompt_tokens + done.completion_tokens)
    response = draft.response(status, answer.output(draft, status), usage)
    if draft.body.store:
        tokens = array("i", turn.prompt_ids)
        tokens.extend(answer.tokens)
        ends_turn = loaded.tokenizer.decode(answer.tokens).endswith(SEP.encode())
        store.put(StoredResponse(response, tokens, (*turn.model_text, answer.model_text), turn.state_id, ends_turn,
                                 turn.tool_prompt))
    return response


def _sse(event) -> bytes:
    return b"event: " + event.type.encode() + b"\ndata: " + msgspec.json.encode(event) + b"\n\n"


class _StreamItems:
    """The output items' events as a stream opens and closes them: the message when its text
    begins (at once when no tools are offered), each call at its start; an item is done when
    the next begins or the answer ends."""

    def __init__(self, draft: Draft, answer: Answer) -> None:
        self.draft, self.answer = draft, answer
        self.numbers = itertools.count()
        self.count = 0          # output items opened
        self.calls = 0          # of them calls
        self.open: str | None = None  # "message", "call"

    def _ids(self) -> dict:
        return {"item_id": self.draft.message_id, "output_index": 0, "content_index": 0}

    def open_message(self) -> list:
        self.open, self.count = "message", self.count + 1
        return [OutputItemEvent(type="response.output_item.added", sequence_number=next(self.numbers), output_index=0,
                                item=OutputMessage(id=self.draft.message_id, status="in_progress", content=[])),
                ContentPartEvent(type="response.content_part.added", sequence_number=next(self.numbers),
                                 part=OutputText(text=""), **self._ids())]

    def close(self, status: str) -> list:
        """Events that finish the open item."""
        events: list = []
        if self.open == "message":
            text = self.answer.text
            message = self.draft.message(status, text)
            events = [TextDoneEvent(type="response.output_text.done", sequence_number=next(self.numbers), text=text,
                                    **self._ids()),
                      ContentPartEvent(type="response.content_part.done", sequence_number=next(self.numbers),
                                       part=message.content[0], **self._ids()),
                      OutputItemEvent(type="response.output_item.done", sequence_number=next(self.numbers),
                                      output_index=0, item=message)]
        elif self.open == "call":
            call = self.answer.calls(status)[self.calls - 1]
            events = [ArgumentsDoneEvent(type="response.function_call_arguments.done",
                                         sequence_number=next(self.numbers), item_id=call.id,
                                         output_index=self.count - 1, name=call.name, arguments=call.arguments),
                      OutputItemEvent(type="response.output_item.done", sequence_number=next(self.numbers),
                                      output_index=self.count - 1, item=call)]
        self.open = None
        return events

    def deltas(self, deltas: list[Delta]) -> list:
        events: list = []
        for delta in deltas:
            if delta.content:
                if self.open != "message":
                    events += self.open_message()
                events.append(TextDeltaEvent(type="response.output_text.delta", sequence_number=next(self.numbers),
                                             delta=delta.content, **self._ids()))
                continue
            call = delta.tool_calls[0]
            if call.id is not None:  # a call begins
                events += self.close("completed")
                self.open, self.count, self.calls = "call", self.count + 1, self.calls + 1
                item = FunctionCallItem(id=self.answer.call_item_ids[self.calls - 1], call_id=call.id, name=call.function.name,
                                        arguments="", status="in_progress")
                events.append(OutputItemEvent(type="response.output_item.added", sequence_number=next(self.numbers),
                                              output_index=self.count - 1, item=item))
            elif call.function.arguments:
                events.append(ArgumentsDeltaEvent(type="response.function_call_arguments.delta",
                                                  sequence_number=next(self.numbers),
                                                  item_id=self.answer.call_item_ids[self.calls - 1], output_index=self.count - 1,
                                                  delta=call.function.arguments))
        return events

    def finish(self, response: ResponseObject) -> list:
        """The last item's done events (an answer with no item at all has an empty message)."""
        events = [] if self.count else self.open_message()
        item_status = "incomplete" if response.status == "failed" else response.status
        return events + self.close(item_status)


async def _stream(recv: trio.MemoryReceiveChannel, first, draft: Draft, turn: Turn, store: ResponseStore,
                  loaded: LoadedModel, flush_s: float = 0.0) -> AsyncIterator[bytes]:
    """OpenAI's event sequence: the message (one text part) and the function calls as they come;
    a failure after the first token is an `error` event, then `response.failed`."""
    answer = Answer(turn.continued, turn.tools is not None)
    items = _StreamItems(draft, answer)
    numbers = items.numbers
    started, finished = time.perf_counter(), False
    try:
        draft_response = draft.response("in_progress", [], None)
        opening = [ResponseEvent(type="response.created", sequence_number=next(numbers), response=draft_response),
                   ResponseEvent(type="response.in_progress", sequence_number=next(numbers), response=draft_response)]
        if turn.tools is None:
            opening += items.open_message()
        yield b"".join(_sse(e) for e in opening)
        async for batch in event_batches(recv, first, flush_s):
            chunks = []
            for event in batch:
                try:
                    deltas = answer.take(event)
                except ApiError as error:
                    body = error.body.error
                    chunks.append(_sse(ErrorEvent(type="error", sequence_number=next(numbers), message=body.message,
                                                  code=body.code, param=body.param)))
                    failed = draft.response("failed", answer.output(draft, "failed"), None,
                                            ResponseError(body.code or body.type, body.message))
                    chunks.append(_sse(ResponseEvent(type="response.failed", sequence_number=next(numbers),
                                                     response=failed)))
                    yield b"".join(chunks)
                    return
                chunks.extend(_sse(e) for e in items.deltas(deltas))
            if chunks:
                yield b"".join(chunks)
        response = _finish(answer, draft, turn, store, loaded)
        closing = items.finish(response)
        closing.append(ResponseEvent(type=f"response.{response.status}", sequence_number=next(numbers),
                                     response=response))
        yield b"".join(_sse(e) for e in closing)
        finished = True
    finally:
        await recv.aclose()
        done = answer.done
        # the access line was written at the headers; this one tells how the stream went
        print(f"[ai00-trio] stream {draft.id} {'done' if finished else 'cut short'} after "
              f"{(time.perf_counter() - started) * 1000:.0f}ms: {done.prompt_tokens if done else '?'} prompt "
              f"({done.cached_tokens if done else '?'} cached) + {len(answer.tokens)} generated tokens",
              file=sys.stderr, flush=True)
