"""Wire formats of OpenAI's Responses API (`/v1/responses`), as msgspec Structs.

The request takes the sampling fields of chat completions (AI00's extensions included); the
response object echoes the settings it ran with, as OpenAI's does.
"""
from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Struct

from .schemas import SamplingFields


# --- requests ------------------------------------------------------------------------------
class InputPart(Struct):
    type: str                  # input_text (output_text in an earlier answer given back)
    text: str | None = None


class InputItem(Struct, kw_only=True):
    """An item of `input`: a message, an earlier function call given back, or a call's result;
    other item types (references, reasoning) are refused."""
    type: str = "message"
    role: str | None = None
    content: str | list[InputPart] | None = None
    call_id: str | None = None                        # function_call, function_call_output
    name: str | None = None                           # function_call
    arguments: str | None = None                      # function_call: JSON text
    output: str | list[InputPart] | None = None       # function_call_output


class FunctionTool(Struct, kw_only=True):
    """A tool of the Responses API: flat, unlike chat's {"type", "function": {...}}; only
    function tools are served (the hosted ones, web_search and the like, are refused)."""
    type: str
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None                        # accepted: the arguments always follow the schema


class TextOptions(Struct, kw_only=True):
    format: dict[str, Any] | None = None   # {"type": "text" | "json_object" | "json_schema", ...}
    verbosity: str | None = None


class ResponseRequest(SamplingFields, kw_only=True):
    input: str | list[InputItem] | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    store: bool = True
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None
    text: TextOptions | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: str | dict[str, Any] | None = None   # none, auto, required, {"type": "function", "name"}
    parallel_tool_calls: bool = True
    reasoning: dict[str, Any] | None = None
    truncation: str | None = None
    background: bool | None = None
    conversation: str | dict[str, Any] | None = None
    include: list[str] | None = None
    service_tier: str | None = None


# --- the response object -------------------------------------------------------------------
class OutputText(Struct, kw_only=True):
    text: str
    type: str = "output_text"
    annotations: list[Any] = msgspec.field(default_factory=list)
    logprobs: list[Any] = msgspec.field(default_factory=list)


class OutputMessage(Struct, kw_only=True, tag_field="type", tag="message"):
    id: str
    status: str                # in_progress, completed, incomplete
    content: list[OutputText]
    role: str = "assistant"


class FunctionCallItem(Struct, kw_only=True, tag_field="type", tag="function_call"):
    """A tool call the model made: the client runs it and sends back a function_call_output
    with its call_id."""
    id: str                    # fc_...
    call_id: str               # call_...
    name: str
    arguments: str             # JSON text that follows the function's parameters schema
    status: str                # in_progress, completed, incomplete (cut off by max_output_tokens)


OutputItem = OutputMessage | FunctionCallItem


class InputTokensDetails(Struct):
    cached_tokens: int         # prompt tokens whose state came from the prefix cache
    cache_write_tokens: int    # prompt tokens prefilled now (their state is cached for later requests)


class OutputTokensDetails(Struct):
    reasoning_tokens: int = 0


class ResponseUsage(Struct):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class IncompleteDetails(Struct):
    reason: str                # max_output_tokens


class ResponseError(Struct):
    code: str
    message: str


class ResponseObject(Struct, kw_only=True):
    id: str
    created_at: int
    status: str                # in_progress, completed, incomplete, failed
    model: str
    output: list[OutputItem]
    usage: ResponseUsage | None
    object: str = "response"
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    previous_response_id: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_logprobs: int = 0
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    store: bool = True
    user: str | None = None
    text: dict[str, Any] = msgspec.field(default_factory=lambda: {"format": {"type": "text"}})
    tools: list[FunctionTool] = msgspec.field(default_factory=list)
    tool_choice: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool = True
    truncation: str = "disabled"
    reasoning: dict[str, Any] = msgspec.field(default_factory=lambda: {"effort": None, "summary": None})
    service_tier: str = "default"
    background: bool = False


class DeletedResponse(Struct):
    id: str
    object: str = "response"
    deleted: bool = True


# --- stream events (each SSE `event:` line names its `type`) --------------------------------
class ResponseEvent(Struct, kw_only=True):
    """response.created, response.in_progress, response.completed, response.incomplete, response.failed."""
    type: str
    sequence_number: int
    response: ResponseObject


class OutputItemEvent(Struct, kw_only=True):
    """response.output_item.added, response.output_item.done."""
    type: str
    sequence_number: int
    output_index: int
    item: OutputItem


class ContentPartEvent(Struct, kw_only=True):
    """response.content_part.added, response.content_part.done."""
    type: str
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    part: OutputText


class TextDeltaEvent(Struct, kw_only=True):
    type: str                  # response.output_text.delta
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[Any] = msgspec.field(default_factory=list)


class TextDoneEvent(Struct, kw_only=True):
    type: str                  # response.output_text.done
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[Any] = msgspec.field(default_factory=list)


class ArgumentsDeltaEvent(Struct, kw_only=True):
    type: str                  # response.function_call_arguments.delta
    sequence_number: int
    item_id: str
    output_index: int
    delta: str


class ArgumentsDoneEvent(Struct, kw_only=True):
    type: str                  # response.function_call_arguments.done
    sequence_number: int
    item_id: str
    output_index: int
    name: str
    arguments: str


class ErrorEvent(Struct, kw_only=True):
    type: str                  # error
    sequence_number: int
    message: str
    code: str | None = None
    param: str | None = None
