"""OpenAI's Responses API: POST /responses (streamed or not), GET and DELETE /responses/{id}.

A stored response keeps the token ids of its whole conversation: every input and answer,
chained through `previous_response_id`. A response that continues it generates from those ids
followed by the new turn's tokens, and the generation that wrote the answer left the state after
its last token in the prefix cache (`TextJob.cache_answer`): the history is never prefilled
again, and `usage.input_tokens_details.cached_tokens` counts it.
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
from ..grammar import GrammarError, compile_grammar, grammar_from_response_format
from ..sampling import sampler_from_openai
from .actors import Done, Failed, TextJob, Token
from .engine_service import LoadedModel
from .errors import ApiError, bad_request, overloaded
from .response_schemas import (ContentPartEvent, DeletedResponse, ErrorEvent, IncompleteDetails, InputItem,
                               InputTokensDetails, OutputItemEvent, OutputMessage, OutputText, OutputTokensDetails,
                               ResponseError, ResponseEvent, ResponseObject, ResponseRequest, ResponseUsage,
                               TextDeltaEvent, TextDoneEvent)
from .response_store import ResponseStore, StoredResponse
from .sampling_glue import sampler_factory
from .schemas import ChatMessage, ChatTemplate, StateChoice, decode_request
from .text import ChatTrim, chat_prompt, stop_list

DEFAULT_MAX_OUTPUT_TOKENS = 256
SEP = ChatTemplate().sep
INPUT_ROLES = ("user", "assistant", "system", "developer")
TEXT_PARTS = ("input_text", "output_text", "text")
MAX_METADATA, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512


@dataclass(frozen=True)
class Turn:
    """What one request generates from."""
    prompt_ids: list[int]        # the stored conversation's tokens, then the new turn's
    model_text: list[str]        # the conversation's assistant turns
    continued: bool              # the input ends with the beginning of the answer
    state_id: StateChoice


@dataclass(frozen=True)
class Draft:
    """The response being written: its ids and the request's settings it echoes."""
    body: ResponseRequest
    model: str
    max_output_tokens: int
    id: str
    message_id: str
    created_at: int

    def response(self, status: str, text: str | None, usage: ResponseUsage | None,
                 error: ResponseError | None = None) -> ResponseObject:
        body = self.body
        # a message is in_progress, completed or incomplete: a failed response's is incomplete
        output = [] if text is None else [self.message("incomplete" if status == "failed" else status, text)]
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
            tool_choice=body.tool_choice if isinstance(body.tool_choice, str) else "auto",
            truncation=body.truncation or "disabled")

    def message(self, status: str, text: str) -> OutputMessage:
        return OutputMessage(id=self.message_id, status=status, content=[OutputText(text=text)])


class Answer:
    """A generation's events, taken in: the answer's text (trimmed as chat's is, so a stream
    carries what the whole answer holds), its token ids, and how it ended."""

    def __init__(self, continued: bool) -> None:
        self._trim = ChatTrim(leading=not continued)  # a continued message keeps its leading space
        self._parts: list[str] = []
        self.tokens: list[int] = []
        self.done: Done | None = None

    def take(self, event: Token | Done | Failed) -> str:
        """The text to send for `event`."""
        if isinstance(event, Failed):
            raise event.error
        if isinstance(event, Done):
            self.done = event
            return ""
        if event.token >= 0:
            self.tokens.append(event.token)
        piece = self._trim.feed(event.text)
        self._parts.append(piece)
        return piece

    @property
    def text(self) -> str:
        return "".join(self._parts)


def register_responses(route: Callable, store: ResponseStore, ready: Callable, check_model: Callable,
                       config: Config) -> None:
    """Adds the routes through the app's `route` (every API prefix)."""

    @route("/responses", ["POST"])
    async def create_response():
        loaded, graph = ready()
        body = decode_request(await request.get_data(), ResponseRequest)
        check_model(body.model, loaded)
        _refuse_unsupported(body)
        turn = await _turn(body, store, loaded)
        draft = Draft(body, loaded.name, _max_output_tokens(body, config.model.max_tokens_cap),
                      "resp_" + secrets.token_hex(24), "msg_" + secrets.token_hex(24), int(time.time()))
        factory = sampler_factory(body, loaded.model.info.n_vocab, 0, 0)
        grammar = await _grammar(body)
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
                raise first.error
            if body.stream:
                stream = _stream(recv, first, draft, turn, store, loaded)
                recv = None  # the stream closes it
                return Response(stream, content_type="text/event-stream", headers={"Cache-Control": "no-cache"})
            answer = Answer(turn.continued)
            async for batch in _batches(recv, first):
                for event in batch:
                    answer.take(event)
            return _json(_finish(answer, draft, turn, store, loaded))
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


def _json(value) -> Response:
    return Response(msgspec.json.encode(value), content_type="application/json")


def _stored(store: ResponseStore, response_id: str, param: str | None = None) -> StoredResponse:
    stored = store.get(response_id)
    if stored is None:
        raise ApiError(404, f"no stored response with id {response_id!r} (responses made with store=false "
                       "are not kept, and the oldest are dropped past [responses] max_stored)",
                       "invalid_request_error", param, "response_not_found")
    return stored


def _refuse_unsupported(body: ResponseRequest) -> None:
    if body.tools:
        raise bad_request("tools are not supported yet on /v1/responses", param="tools")
    if isinstance(body.tool_choice, dict) or body.tool_choice not in (None, "auto", "none"):
        raise bad_request("tool_choice needs tools, which are not supported yet on /v1/responses",
                          param="tool_choice")
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


def _messages(body: ResponseRequest) -> list[ChatMessage]:
    """`instructions` as a system message, then the input's messages."""
    messages = [ChatMessage("system", body.instructions)] if body.instructions else []
    items = body.input
    if isinstance(items, str):
        items = [InputItem(role="user", content=items)] if items else []
    if not items:
        raise bad_request("input is required: a string or a list of messages", param="input")
    for i, item in enumerate(items):
        if item.type != "message":
            raise bad_request(f"input[{i}]: items of type {item.type!r} are not supported, only messages",
                              param=f"input[{i}].type")
        if item.role not in INPUT_ROLES:
            raise bad_request(f"input[{i}].role must be one of {', '.join(INPUT_ROLES)}", param=f"input[{i}].role")
        content = item.content
        if isinstance(content, list):
            for part in content:
                if part.type not in TEXT_PARTS or part.text is None:
                    raise bad_request(f"input[{i}].content: only text parts are supported, got {part.type!r}",
                                      param=f"input[{i}].content")
            content = "".join(part.text for part in content)
        messages.append(ChatMessage(item.role, content or ""))
    return messages


async def _turn(body: ResponseRequest, store: ResponseStore, loaded: LoadedModel) -> Turn:
    """The prompt: the chat rendering of the input, after the stored conversation's tokens."""
    text, model_text, continued = chat_prompt(_messages(body), None, None)
    if body.previous_response_id is None:
        return Turn(await loaded.encode(text), model_text, continued, body.state)
    previous = _stored(store, body.previous_response_id, "previous_response_id")
    if body.state is not None and body.state != previous.state_id:
        raise bad_request("a continued conversation keeps the initial state it started from", param="state")
    text = text if previous.ends_turn else SEP + text
    return Turn(previous.tokens.tolist() + await loaded.encode(text), [*previous.model_text, *model_text],
                continued, previous.state_id)


async def _grammar(body: ResponseRequest):
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
    try:
        if body.bnf_schema is not None:
            return await trio.to_thread.run_sync(compile_grammar, body.bnf_schema)
        if fmt is not None:
            return await trio.to_thread.run_sync(grammar_from_response_format, fmt)
    except GrammarError as error:
        param = "bnf_schema" if body.bnf_schema is not None else param
        raise bad_request(f"invalid grammar: {error}", param=param, code="invalid_grammar") from None
    return None


async def _batches(recv: trio.MemoryReceiveChannel, first) -> AsyncIterator[list]:
    """The generation's events, every one already waiting at a time (a decode that runs ahead
    of its reader leaves several: one write for them all)."""
    batch = [first]
    while True:
        while True:
            try:
                batch.append(recv.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        yield batch
        if isinstance(batch[-1], (Done, Failed)):
            return
        try:
            batch = [await recv.receive()]
        except trio.EndOfChannel:
            return


def _finish(answer: Answer, draft: Draft, turn: Turn, store: ResponseStore, loaded: LoadedModel) -> ResponseObject:
    """The finished response, stored (with its conversation's tokens) unless store=false."""
    done = answer.done
    if done is None:
        raise ApiError(500, "the generation ended without finishing", "server_error")
    status = "incomplete" if done.finish_reason == "length" else "completed"
    usage = ResponseUsage(done.prompt_tokens, InputTokensDetails(done.cached_tokens,
                                                                 done.prompt_tokens - done.cached_tokens),
                          done.completion_tokens, OutputTokensDetails(), done.prompt_tokens + done.completion_tokens)
    response = draft.response(status, answer.text, usage)
    if draft.body.store:
        tokens = array("i", turn.prompt_ids)
        tokens.extend(answer.tokens)
        ends_turn = loaded.tokenizer.decode(answer.tokens).endswith(SEP.encode())
        store.put(StoredResponse(response, tokens, (*turn.model_text, answer.text), turn.state_id, ends_turn))
    return response


def _sse(event) -> bytes:
    return b"event: " + event.type.encode() + b"\ndata: " + msgspec.json.encode(event) + b"\n\n"


async def _stream(recv: trio.MemoryReceiveChannel, first, draft: Draft, turn: Turn, store: ResponseStore,
                  loaded: LoadedModel) -> AsyncIterator[bytes]:
    """OpenAI's event sequence for one message with one text part; a failure after the first
    token is an `error` event, then `response.failed`."""
    numbers = itertools.count()
    ids = {"item_id": draft.message_id, "output_index": 0, "content_index": 0}
    answer = Answer(turn.continued)
    started, finished = time.perf_counter(), False
    try:
        draft_response = draft.response("in_progress", None, None)
        yield b"".join(_sse(e) for e in (
            ResponseEvent(type="response.created", sequence_number=next(numbers), response=draft_response),
            ResponseEvent(type="response.in_progress", sequence_number=next(numbers), response=draft_response),
            OutputItemEvent(type="response.output_item.added", sequence_number=next(numbers), output_index=0,
                            item=OutputMessage(id=draft.message_id, status="in_progress", content=[])),
            ContentPartEvent(type="response.content_part.added", sequence_number=next(numbers),
                             part=OutputText(text=""), **ids)))
        async for batch in _batches(recv, first):
            chunks = []
            for event in batch:
                try:
                    piece = answer.take(event)
                except ApiError as error:
                    body = error.body.error
                    chunks.append(_sse(ErrorEvent(type="error", sequence_number=next(numbers), message=body.message,
                                                  code=body.code, param=body.param)))
                    failed = draft.response("failed", answer.text, None,
                                            ResponseError(body.code or body.type, body.message))
                    chunks.append(_sse(ResponseEvent(type="response.failed", sequence_number=next(numbers),
                                                     response=failed)))
                    yield b"".join(chunks)
                    return
                if piece:
                    chunks.append(_sse(TextDeltaEvent(type="response.output_text.delta", sequence_number=next(numbers),
                                                      delta=piece, **ids)))
            if chunks:
                yield b"".join(chunks)
        response = _finish(answer, draft, turn, store, loaded)
        message = response.output[0]
        yield b"".join(_sse(e) for e in (
            TextDoneEvent(type="response.output_text.done", sequence_number=next(numbers), text=answer.text, **ids),
            ContentPartEvent(type="response.content_part.done", sequence_number=next(numbers),
                             part=message.content[0], **ids),
            OutputItemEvent(type="response.output_item.done", sequence_number=next(numbers), output_index=0,
                            item=message),
            ResponseEvent(type=f"response.{response.status}", sequence_number=next(numbers), response=response)))
        finished = True
    finally:
        await recv.aclose()
        done = answer.done
        # the access line was written at the headers; this one tells how the stream went
        print(f"[ai00-trio] stream {draft.id} {'done' if finished else 'cut short'} after "
              f"{(time.perf_counter() - started) * 1000:.0f}ms: {done.prompt_tokens if done else '?'} prompt "
              f"({done.cached_tokens if done else '?'} cached) + {len(answer.tokens)} generated tokens",
              file=sys.stderr, flush=True)
