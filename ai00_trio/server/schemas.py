"""Wire formats of the HTTP API (OpenAI shapes plus AI00's extensions), as msgspec Structs.

Requests accept unknown fields (OpenAI SDKs send more than we use); types are checked.
These Structs are also the source of the OpenAPI document.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

# fixed limits, checked as a request is decoded and stated in the OpenAPI document (the
# configured ones, max_tokens_cap and max_embed_inputs, are checked later and patched into it)
MAX_CHOICES = 16               # n and best_of
MAX_TOP_LOGPROBS = 20
MAX_STOPS, MAX_STOP_CHARS = 16, 1024
MAX_LOGIT_BIAS = 1024          # logit_bias entries
MAX_GRAMMAR_CHARS = 1 << 18    # bnf_schema text (a 20,000-way alternative fits)

Count = Annotated[int, Meta(ge=1)]
Choices = Annotated[int, Meta(ge=1, le=MAX_CHOICES)]
TopLogprobs = Annotated[int, Meta(ge=0, le=MAX_TOP_LOGPROBS)]
Fraction = Annotated[float, Meta(ge=0, le=1)]
Penalty = Annotated[float, Meta(ge=-100, le=100)]  # 100 already rules a token out
StopText = Annotated[str, Meta(max_length=MAX_STOP_CHARS)]
Bias = Annotated[dict[str, float], Meta(max_length=MAX_LOGIT_BIAS)]


# --- requests ------------------------------------------------------------------------------
class ContentPart(Struct):
    type: str
    text: str | None = None


class FunctionCall(Struct):
    name: str
    arguments: str                                    # JSON text, as OpenAI sends it


class ToolCall(Struct):
    id: str
    function: FunctionCall
    type: str = "function"


class ChatMessage(Struct):
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None          # an assistant's earlier calls
    tool_call_id: str | None = None                   # a tool message: the call it answers


class FunctionDefinition(Struct):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None          # JSON schema of the arguments object
    strict: bool | None = None                        # accepted: the arguments always follow the schema


class Tool(Struct):
    function: FunctionDefinition
    type: str = "function"


class NamedFunction(Struct):
    name: str


class NamedToolChoice(Struct):
    function: NamedFunction
    type: str = "function"


class ChatTemplate(Struct):
    """AI00's prompt template: records joined by `sep`, then `sep` + `prefix`."""
    record: str = "{role}: {content}"
    prefix: str = "{assistant}:"
    sep: str = "\n\n"


class StreamOptions(Struct):
    include_usage: bool = False


class StateRef(Struct, kw_only=True, frozen=True):
    """AI00's object forms of `state`: an attached state by `id` or `name`, a state file by
    `path` (inside the models folder), or an inline state tensor (`data` with its `shape`, as
    /api/oai/states returns it)."""
    id: str | None = None
    name: str | None = None
    path: str | None = None
    data: list[float] | None = None
    shape: list[int] | None = None


StateChoice = str | StateRef | None  # a state id or name; None (or AI00's nil UUID): the default


class SamplingFields(Struct, kw_only=True):
    """Fields shared by chat and text completions."""
    model: str | None = None
    max_tokens: Count | None = None                   # up to [model] max_tokens_cap
    max_completion_tokens: Count | None = None
    temperature: Annotated[float, Meta(ge=0, le=5)] | None = None
    top_p: Fraction | None = None
    top_k: Annotated[int, Meta(ge=0, le=1 << 20)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    penalty_decay: Annotated[float, Meta(ge=0)] | None = None
    logit_bias: Bias | None = None
    bias: Bias | None = None                          # AI00's name for logit_bias
    stop: StopText | Annotated[list[StopText], Meta(max_length=MAX_STOPS)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Choices = 1
    seed: int | None = None
    top_logprobs: TopLogprobs | None = None
    sampler: dict[str, Any] | None = None             # AI00: {"type": "Nucleus" | "Typical" | "Mirostat", ...}
    sampler_override: dict[str, Any] | None = None
    state: StateChoice = None                         # initial state: id, name or StateRef
    bnf_schema: Annotated[str, Meta(max_length=MAX_GRAMMAR_CHARS)] | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None
    min_p: Fraction | None = None                     # keep tokens with p >= min_p * max p (Nucleus)
    half_life: Annotated[float, Meta(gt=0)] | None = None  # AI00: tokens for a penalty to halve (sets penalty_decay)


class ChatCompletionRequest(SamplingFields, kw_only=True):
    messages: Annotated[list[ChatMessage], Meta(min_length=1)]
    logprobs: bool = False
    names: dict[str, str] | None = None
    template: ChatTemplate | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True


class CompletionRequest(SamplingFields, kw_only=True):
    prompt: str | list[str] = ""
    logprobs: TopLogprobs | None = None
    echo: bool = False
    best_of: Choices | None = None
    suffix: str | None = None


class TokenizeRequest(Struct, kw_only=True):
    """llama.cpp's /tokenize."""
    content: str
    add_special: bool = False     # RWKV World adds no special tokens: accepted, changes nothing
    with_pieces: bool = False


class TokenPiece(Struct):
    id: int
    piece: str | list[int]        # the token's text, or its bytes when they are not whole UTF-8


class TokenizeResponse(Struct):
    tokens: list[int | TokenPiece]  # ids, or ids with their pieces (with_pieces)


class DetokenizeRequest(Struct, kw_only=True):
    tokens: list[int]


class DetokenizeResponse(Struct):
    content: str


class EmbeddingRequest(Struct, kw_only=True):
    input: str | list[Any]   # a string, strings, token ids, or lists of token ids
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None
    dimensions: int | None = None                     # only the model's own width
    task: str | None = None  # an [embed] model's head: retrieval (default), similarity, classification


# --- responses -----------------------------------------------------------------------------
class Usage(Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TopLogprob(Struct):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(Struct):
    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(Struct):
    content: list[TokenLogprob]


class AssistantMessage(Struct, omit_defaults=True):
    role: str
    content: str | None                               # null when the answer is only tool calls
    tool_calls: list[ToolCall] | None = None


class ChatChoice(Struct):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(Struct):
    id: str
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    object: str = "chat.completion"
    system_fingerprint: str | None = None


class FunctionDelta(Struct, omit_defaults=True):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(Struct, omit_defaults=True):
    """A streamed call: its first chunk has id, type, name and arguments ""; later ones
    carry pieces of the arguments, all under the call's index."""
    index: int
    id: str | None = None
    type: str | None = None
    function: FunctionDelta | None = None


class Delta(Struct, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(Struct):
    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(Struct):
    id: str
    created: int
    model: str
    choices: list[ChatChunkChoice]
    object: str = "chat.completion.chunk"
    usage: Usage | None = None


class CompletionLogprobs(Struct):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(Struct):
    index: int
    text: str
    finish_reason: str | None
    logprobs: CompletionLogprobs | None = None


class Completion(Struct):
    id: str
    created: int
    model: str
    choices: list[CompletionChoice]
    object: str = "text_completion"
    usage: Usage | None = None


class ModelCard(Struct):
    id: str
    created: int
    owned_by: str = "ai00-trio"
    object: str = "model"
    kind: str = "chat"                   # chat | embedding | rerank: the routes that serve it


class ModelList(Struct):
    data: list[ModelCard]
    object: str = "list"


class Embedding(Struct):
    index: int
    embedding: list[float] | str
    object: str = "embedding"


class EmbeddingList(Struct):
    data: list[Embedding]
    model: str
    usage: Usage
    object: str = "list"


class Health(Struct):
    status: Literal["ok"]


class Ready(Struct):
    status: Literal["ready"]
    model: str


class StateCard(Struct):
    id: str
    name: str
    default: bool = False


class StateList(Struct):
    data: list[StateCard]
    object: str = "list"


def decode_request(body: bytes, kind: type[Struct]) -> Struct:
    """Decode and type-check a request body; errors name the offending field."""
    from .errors import bad_request

    try:
        return msgspec.json.decode(body, type=kind)
    except RecursionError:
        raise bad_request("request JSON is nested too deeply") from None
    except msgspec.ValidationError as error:
        message = str(error)
        param = message.split("`$.", 1)[1].split("`")[0] if "`$." in message else None
        if param is None and message.startswith("Object missing required field `"):
            param = message.split("`")[1]
        if param is not None and (limit := _LIMIT.match(message)):
            message = _limit_message(param, *limit.groups())
            param = re.sub(r"\[\d+\]$", "", param)  # a stop string's index: the field is `stop`
        raise bad_request(f"invalid request: {message}", param=param) from None
    except msgspec.DecodeError as error:
        raise bad_request(f"request body is not valid JSON: {error}") from None



_LIMIT = re.compile(r"Expected `(\w+)`( of length)? ([<>]=?) (\S+) - at `")
_UNITS = {"str": " characters", "array": " items", "object": " entries"}


def _limit_message(param: str, kind: str, length: str | None, op: str, bound: str) -> str:
    """msgspec's "Expected `int` <= 16 - at `$.n`" as "n must be at most 16"."""
    words = {"<=": "at most", ">=": "at least", "<": "below", ">": "above"}[op]
    if length:
        unit = _UNITS.get(kind, "")
        return f"{param} must have {words} {bound}{unit[:-1] if bound == '1' else unit}"
    return f"{param} must be {words} {bound}"
