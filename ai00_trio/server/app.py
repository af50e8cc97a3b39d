"""HTTP routes (quart-trio): thin handlers that decode a request, hand it to the actors and
encode the answer. Every route is served under /v1/, /api/oai/ and /api/oai/v1/."""
from __future__ import annotations

import math
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

import msgspec
import trio
from quart import Response, g, request, send_from_directory
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import Map, Rule

from ..config import Config
from ..grammar import compile_grammar, grammar_from_response_format
from . import schemas as s
from .actors import ActorGraph
from .messages import Done, EmbedJob, Failed, TextJob, Token
from .ai00_routes import add_ai00_routes
from .admin_routes import register_admin_routes
from .lora_routes import register_lora_routes
from .admin_schemas import ReloadRequest
from .browsers import register_browser_policy
from .model_routes import register_model_routes
from .changes import ChangeFeed
from .engine_service import LoadedModel
from .event_batches import event_batches
from .errors import ApiError, bad_request, not_found, overloaded, unauthorized
from .failure_errors import api_error
from .failures import Failure
from .field_log import UnknownFields, route_key
from .grammar_compile import compile_in_time
from .lane_figures import lane_figures, total_figures
from .lifecycle import Lifecycle, lease, no_model_error, release_leases
from .metrics import ROUTE_KEY, ServerMetrics
from .model_registry import ModelRegistry
from .openapi import ROUTES, served_document, swagger_page
from .response_store import ResponseStore
from .responses import register_responses
from .retrieval_routes import embedding_list, register_retrieval_routes, serve_embeddings
from .retrieval_service import RetrievalService
from .sampling_glue import sampler_factory
from .text import ChatTrim, chat_prompt, stop_list
from .tools import ReplyParser, ToolPlan, tool_plan

API_PREFIXES = ("/v1", "/api/oai", "/api/oai/v1")
DEFAULT_MAX_TOKENS = 256
TOKENIZER_ROUTES = ("/tokenize", "/detokenize")  # llama.cpp's, served at the root as it does
ROOT_API_ROUTES = (*TOKENIZER_ROUTES, "/rerank")


@dataclass
class ServerState:
    """Filled in as the server comes up: the model once loaded, then the actor graph."""
    config: Config
    loaded: LoadedModel | None = None
    graph: ActorGraph | None = None
    reload: ReloadRequest | None = None  # what the loaded model was loaded from
    changes: ChangeFeed = field(default_factory=ChangeFeed)  # notified after each change of the above
    load_error: str | None = None
    status: str = "loading"  # loading (the first load, or a reload building) | loaded | unloaded | failed
    lifecycle: Lifecycle | None = None  # loads, reloads and unloads (set when the server starts)
    models: ModelRegistry | None = None  # every model by name, [model] and the others (set by create_app)
    load_seconds: float | None = None  # how long the model took to load
    started: float = field(default_factory=time.time)
    draining: bool = False  # shutting down: running requests finish, new ones get 503
    exit_code: int = 0
    responses: ResponseStore = field(init=False)  # /v1/responses kept for GET and previous_response_id
    unknown_fields: UnknownFields = field(default_factory=UnknownFields)  # the request fields named in the log
    metrics: ServerMetrics = field(init=False)

    def __post_init__(self) -> None:
        self.responses = ResponseStore(self.config.responses.max_stored)
        self.metrics = ServerMetrics(self)


def json_response(value, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status=status, content_type="application/json")


def error_response(error: ApiError) -> Response:
    response = json_response(error.body, error.status)
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def create_app(state: ServerState) -> QuartTrio:
    app = QuartTrio(__name__, static_folder=None)
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["BODY_TIMEOUT"] = 60
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024 * 1024
    config = state.config
    web_root = Path(config.web.path).resolve() if config.web else None
    app.asgi_app = state.metrics.wrap(app.asgi_app)

    def ready() -> tuple[LoadedModel, ActorGraph]:
        if state.draining or state.loaded is None or state.graph is None:
            raise no_model_error(state)
        lease(state.graph)  # a reload retires this graph only after the request is done with it
        return state.loaded, state.graph

    @app.teardown_request
    async def end_leases(_error):
        release_leases()

    names = config.model.aliases
    retrieval = RetrievalService(config)
    registry = state.models = ModelRegistry(state, retrieval)

    def check_model(name: str | None, loaded: LoadedModel) -> None:
        """With `strict_names`, only the model's name, path and aliases; else any name is served
        by the one chat model (as AI00 and llama.cpp do: SDK code hard-codes model names). With
        several chat models, an unknown name could mean any of them: 404."""
        if not name or name in (loaded.name, loaded.path, *names):
            return
        kind = registry.retrieval_kind(name)
        if kind is not None:
            route = "/v1/embeddings" if kind == "embedding" else "/v1/rerank"
            raise bad_request(f"{name!r} is the {kind} model: call it at {route}", param="model",
                              code="model_kind_mismatch")
        if config.model.strict_names or registry.chats:
            served = ", ".join(repr(n) for n in (loaded.name, *registry.chats))
            raise not_found(f"the model {name!r} does not exist; this server serves {served}", param="model")

    def chat_model(name: str | None) -> tuple[LoadedModel, ActorGraph]:
        """The chat model `name` calls for, leased for this request: a [[models]] one by its name
        or alias, else [model] (subject to `check_model`)."""
        chat = registry.chat(name)
        if chat is not None:
            return registry.serving(chat)
        loaded, graph = ready()
        check_model(name, loaded)
        return loaded, graph

    @app.before_request
    async def note_route():
        """The matched rule, not the path, labels the request's metrics (a bounded set)."""
        g.request_started = time.perf_counter()
        if request.url_rule is not None:
            request.scope[ROUTE_KEY] = request.url_rule.rule

    register_browser_policy(app, config.listen.cors_origins, error_response)

    @app.before_request
    async def authenticate():
        keys = config.listen.api_keys
        path = request.path
        # the token exchange is checked by its own app keys: AI00 clients send no API key there
        if keys and (path.startswith(("/v1", "/api", "/ready", "/metrics")) or path in ROOT_API_ROUTES) \
                and path != "/api/auth/exchange":
            header = request.headers.get("Authorization", "")
            given = (header[7:] if header.lower().startswith("bearer ") else "").encode("utf-8", "surrogateescape")
            if not any(secrets.compare_digest(given, key.encode()) for key in keys):
                return error_response(unauthorized())
        return None

    # each POST route's request Struct, by its path without the API prefix
    request_types = {route_key(path): kind for path, method, kind, _, _ in ROUTES if method == "post" and kind}

    @app.before_request
    async def name_unknown_fields():
        rule = request.url_rule
        kind = request_types.get(route_key(rule.rule)) if rule is not None and request.method == "POST" else None
        if kind is not None:
            state.unknown_fields.check(request.path, await request.get_data(), kind)

    @app.after_request
    async def settle_the_body(response: Response) -> Response:
        """A kept-alive connection whose request body arrives after its answer stalls in hypercorn:
        the next request on it is never read. So a success waits for its body (every handler that
        uses the body has it already; an OPTIONS or GET that carries one does not), and an error,
        which may be answered before a huge or never-ending body, closes the connection."""
        if not (request.content_length or request.headers.get("Transfer-Encoding")):
            return response
        if response.status_code < 400:
            try:
                await request.get_data()
                return response
            except HTTPException:  # too large or too slow: Quart's own limits
                pass
        response.headers["Connection"] = "close"
        return response

    @app.after_request
    async def log_request(response: Response) -> Response:
        elapsed = time.perf_counter() - g.get("request_started", time.perf_counter())
        client = request.remote_addr or "-"
        print(f"[ai00-trio] {client} {request.method} {request.path} {response.status_code} {elapsed * 1000:.1f}ms",
              file=sys.stderr, flush=True)
        return response

    @app.errorhandler(ApiError)
    async def on_api_error(error: ApiError):
        return error_response(error)

    @app.errorhandler(Failure)
    async def on_failure(failure: Failure):  # an actor's failure that a route let through (Scheduler.run_alone)
        return error_response(api_error(failure))

    @app.errorhandler(404)
    async def on_not_found(_error):
        return no_route()

    api_routes: list[Map] = []  # the routes but the web UI's catch-all, built on first use

    def no_route() -> Response:
        """404, or 405 where a route has the path with other methods (the web UI's catch-all GET
        matches every path, so Quart alone says 405 for any unknown POST and 404 for GETs)."""
        if not api_routes:
            api_routes.append(Map([Rule(r.rule, endpoint=r.endpoint, methods=r.methods)
                                   for r in app.url_map.iter_rules() if r.endpoint != "static_file"]))
        try:
            api_routes[0].bind("").match(request.path, method=request.method)
        except MethodNotAllowed as error:
            allowed = sorted(set(error.valid_methods or ()) - {"HEAD", "OPTIONS"})
            response = error_response(ApiError(405, f"method {request.method} not allowed on {request.path}; "
                                               f"use {', '.join(allowed)}", "invalid_request_error"))
            response.headers["Allow"] = ", ".join(allowed)
            return response
        except HTTPException:
            pass
        return error_response(ApiError(404, f"no route {request.method} {request.path}", "invalid_request_error"))

    @app.errorhandler(405)
    async def on_bad_method(_error):
        return no_route()

    @app.errorhandler(413)
    async def on_too_large(_error):
        return error_response(ApiError(413, "request body too large", "invalid_request_error"))

    @app.errorhandler(Exception)
    async def on_unexpected(error: Exception):
        if isinstance(error, HTTPException):  # Quart's own: 408 for a body that stops arriving, ...
            return error_response(ApiError(error.code or 500, error.description or error.name, "invalid_request_error"))
        if isinstance(error, RecursionError):
            return error_response(bad_request("request JSON is nested too deeply"))
        app.logger.exception("unexpected error")
        return error_response(ApiError(500, f"internal error: {type(error).__name__}", "server_error"))

    def route(path: str, methods: list[str]):
        def register(handler):
            for prefix in API_PREFIXES:
                app.add_url_rule(prefix + path, f"{handler.__name__}{prefix}", handler, methods=methods)
            return handler
        return register

    # --- liveness, status, docs ----------------------------------------------------------
    @app.get("/health")
    async def health():
        return json_response({"status": "ok"})

    @app.get("/ready")
    async def ready_route():
        loaded, _ = ready()  # 503 while loading, after a failed load and while draining
        return json_response({"status": "ready", "model": loaded.name})

    @app.get("/api/status")
    async def status():
        loaded, graph = ready()
        info, model = loaded.model.info, loaded.model
        return json_response({
            "model": {"name": loaded.name, "path": loaded.path, "version": info.version,
                      "subversion": info.subversion, "n_layer": info.n_layer, "n_embd": info.n_embd,
                      "n_head": info.n_head, "n_vocab": info.n_vocab, "precision": model.precision,
                      "quant": f"{model.quant_type} ({model.quant_layers} layers)" if model.quant_layers else "none",
                      "parameters": model.parameters, "weight_bytes": model.weight_bytes},
            "adapter": {"name": model.ctx.info.name, "backend": model.ctx.info.backend},
            **total_figures(graph.lanes),
            "executors": [{"index": i, "adapter": {"name": lane.loaded.model.ctx.info.name,
                                                   "backend": lane.loaded.model.ctx.info.backend},
                           **lane_figures(lane)} for i, lane in enumerate(graph.lanes)],
            "responses": {"stored": len(state.responses), "max_stored": state.responses.capacity},
            "retiring": state.lifecycle.retiring_figures() if state.lifecycle else [],
            "device": state.lifecycle.recovery.figures() if state.lifecycle else None,
        })

    @app.get("/metrics")
    async def metrics():
        return Response(state.metrics.render(), content_type=state.metrics.content_type)

    @app.get("/api/states")
    async def states():
        loaded, _ = ready()
        return json_response(s.StateList([s.StateCard(e.id, e.name, e.default) for e in loaded.states.values()]))

    document = served_document(config)

    @app.get("/api-docs/openapi.json")
    async def openapi():
        return json_response(document)

    @app.get("/api-docs")
    async def api_docs():
        return Response(swagger_page(), content_type="text/html")

    # --- OpenAI routes -------------------------------------------------------------------
    @route("/models", ["GET"])
    async def models():
        loaded, _ = ready()
        own = [s.ModelCard(name, loaded.created) for name in (loaded.name, *names)]
        return json_response(s.ModelList(own + registry.cards()))

    @route("/models/<path:model_id>", ["GET"])
    async def model_card(model_id: str):
        loaded, _ = ready()
        card = next((card for card in registry.cards() if card.id == model_id), None)
        if card is None:
            check_model(model_id, loaded)
            card = s.ModelCard(model_id if model_id in names else loaded.name, loaded.created)
        return json_response(card)

    @route("/chat/completions", ["POST"])
    async def chat_completions():
        body = s.decode_request(await request.get_data(), s.ChatCompletionRequest)
        loaded, graph = chat_model(body.model)
        tools = await tool_plan(body)
        prompt, assistant_turns, continued = chat_prompt(body.messages, body.names, body.template,
                                                         tools.prompt if tools else None)
        stops = stop_list(body.stop, config.model.stop)
        top_n = (body.top_logprobs or 0) if body.logprobs else 0
        return await _serve_completion(loaded, graph, body, prompt, stops, assistant_turns, chat=True, top_n=top_n,
                                       want_logprobs=body.logprobs, max_tokens_cap=config.model.max_tokens_cap,
                                       continued=continued, tools=tools,
                                       compile_seconds=config.model.grammar_compile_seconds,
                                       flush_s=config.listen.stream_flush_ms / 1000)

    @route("/completions", ["POST"])
    async def completions():
        body = s.decode_request(await request.get_data(), s.CompletionRequest)
        loaded, graph = chat_model(body.model)
        prompt = body.prompt if isinstance(body.prompt, str) else "".join(body.prompt)
        stops = stop_list(body.stop, [])
        top_n = body.logprobs or 0
        if body.suffix:
            raise bad_request("suffix (text to insert before) is not supported: RWKV models continue text",
                              param="suffix")
        if body.echo and body.logprobs is not None:
            raise bad_request("echo with logprobs is not supported (prompt tokens are not scored)", param="echo")
        return await _serve_completion(loaded, graph, body, prompt, stops, [], chat=False, top_n=top_n,
                                       want_logprobs=body.logprobs is not None,
                                       max_tokens_cap=config.model.max_tokens_cap,
                                       echo=prompt if body.echo else "", best_of=body.best_of,
                                       compile_seconds=config.model.grammar_compile_seconds,
                                       flush_s=config.listen.stream_flush_ms / 1000)

    register_responses(route, state.responses, chat_model, config)

    @app.before_serving
    async def load_other_models():
        app.nursery.start_soon(retrieval.load)
        await registry.start(app.nursery)

    register_retrieval_routes(app, route, retrieval, config.model.max_prompt_tokens)

    @route("/embeddings", ["POST"])
    async def embeddings():
        body = s.decode_request(await request.get_data(), s.EmbeddingRequest)
        # the [embedding] model answers unless a chat model is named (its last hidden state)
        if retrieval.configured and not (registry.chat(body.model) or body.model in registry.main_names()):
            inputs = _embedding_inputs(body.input, config.model.max_embed_inputs)
            return await serve_embeddings(retrieval, body, inputs, config.model.max_prompt_tokens)
        loaded, graph = chat_model(body.model)
        width = loaded.model.info.n_embd
        if body.dimensions is not None and body.dimensions != width:
            raise bad_request(f"dimensions: this model's embeddings have {width} dimensions, and cannot be "
                              "shortened", param="dimensions")
        inputs = _embedding_inputs(body.input, config.model.max_embed_inputs)
        reply_send, reply_recv = trio.open_memory_channel(1)
        job = EmbedJob(inputs, reply_send)
        _enqueue(graph, job)
        try:
            result = await reply_recv.receive()
        finally:
            job.left.set()  # a client gone: the steps not run yet are skipped
        if isinstance(result, Failed):
            raise api_error(result.error)
        return json_response(embedding_list(result.vectors, body.encoding_format, loaded.name, result.tokens))

    add_ai00_routes(route, ready, config.model.max_prompt_tokens, embeddings)

    # --- llama.cpp's tokenizer routes -----------------------------------------------------
    async def tokenize():
        loaded, _ = ready()
        body = s.decode_request(await request.get_data(), s.TokenizeRequest)
        tokenizer = loaded.tokenizer
        ids = await loaded.encode(body.content)
        if not body.with_pieces:
            return json_response(s.TokenizeResponse(ids))
        pieces = []
        for token in ids:
            raw = tokenizer.token_bytes(token)
            try:
                pieces.append(s.TokenPiece(token, raw.decode("utf-8")))
            except UnicodeDecodeError:
                pieces.append(s.TokenPiece(token, list(raw)))
        return json_response(s.TokenizeResponse(pieces))

    async def detokenize():
        loaded, _ = ready()
        body = s.decode_request(await request.get_data(), s.DetokenizeRequest)
        n_vocab = loaded.model.info.n_vocab
        if any(not 0 <= t < n_vocab for t in body.tokens):
            raise bad_request(f"token ids must be in 0..{n_vocab - 1}", param="tokens")
        text = loaded.tokenizer.decode(body.tokens).decode("utf-8", errors="replace")
        return json_response(s.DetokenizeResponse(text))

    for path, handler in (("/tokenize", tokenize), ("/detokenize", detokenize)):
        app.add_url_rule(path, handler.__name__, handler, methods=["POST"])
        for prefix in API_PREFIXES:
            app.add_url_rule(prefix + path, f"{handler.__name__}{prefix}", handler, methods=["POST"])

    register_admin_routes(app, state)
    register_model_routes(app, state)
    register_lora_routes(app, state)

    # --- web UI --------------------------------------------------------------------------
    if web_root is not None:
        @app.get("/")
        async def index():
            return await send_from_directory(web_root, "index.html")

        @app.get("/<path:path>")
        async def static_file(path: str):
            return await send_from_directory(web_root, path)

    return app


def _embedding_inputs(value, limit: int) -> list[str | list[int]]:
    message = "input must be a non-empty string, a list of strings, token ids, or lists of token ids"
    if isinstance(value, str) or (value and all(isinstance(x, int) and not isinstance(x, bool) for x in value)):
        value = [value]
    if not value:
        raise bad_request(message, param="input")
    if len(value) > limit:
        raise bad_request(f"input has {len(value)} items; this server embeds at most {limit} per request "
                          "([model] max_embed_inputs)", param="input", code="too_many_inputs")
    for item in value:
        ok = isinstance(item, str) or (isinstance(item, list) and all(
            isinstance(x, int) and not isinstance(x, bool) for x in item))
        if not ok or len(item) == 0:
            raise bad_request(message, param="input")
    return list(value)


def _enqueue(graph: ActorGraph, job) -> None:
    try:
        graph.jobs.send_nowait(job)
    except trio.WouldBlock:
        raise overloaded() from None


def _max_tokens(body: s.SamplingFields, cap: int) -> int:
    value = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    if value is None:
        return min(DEFAULT_MAX_TOKENS, cap)
    if value > cap:
        raise bad_request(f"max_tokens is at most {cap} on this server ([model] max_tokens_cap)", param="max_tokens")
    return value


async def _serve_completion(loaded, graph, body, prompt: str, stops: list[str], assistant_turns: list[str],
                            chat: bool, top_n: int, want_logprobs: bool, max_tokens_cap: int,
                            echo: str = "", best_of: int | None = None, continued: bool = False,
                            tools: ToolPlan | None = None, compile_seconds: float = math.inf,
                            flush_s: float = 0.0) -> Response:
    candidates = body.n if best_of is None else best_of  # n, best_of and top_n are in range (schemas.py)
    if candidates < body.n:
        raise bad_request("best_of must be at least n", param="best_of")
    if candidates > body.n and body.stream:
        raise bad_request("best_of above n cannot be streamed", param="best_of")
    grammar = tools.grammar if tools else await _grammar(body, compile_seconds)
    max_tokens = _max_tokens(body, max_tokens_cap)
    streams = []
    try:
        for index in range(candidates):
            # top_logprobs only when asked for: without them the GPU can choose the tokens
            factory = sampler_factory(body, loaded.model.info.n_vocab, index, max(top_n, 1) if want_logprobs else 0)
            # unbounded: a generation never waits for its reader (choices are read one after
            # another, and choice n may need the slot of choice 0); at most max_tokens events
            send, recv = trio.open_memory_channel(math.inf)
            job = TextJob(prompt, factory, max_tokens, stops, send, body.state, assistant_turns, grammar,
                          "messages" if chat else "prompt")
            _enqueue(graph, job)
            streams.append(recv)
        completion_id = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
        created = int(time.time())
        # Wait for each choice's first event: an early failure is an HTTP error, not a stream.
        firsts = []
        for recv in streams:
            first = await recv.receive()
            if isinstance(first, Failed):
                raise api_error(first.error)
            firsts.append(first)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        if body.stream:
            response = Response(_sse(loaded, streams, firsts, completion_id, created, chat, want_logprobs,
                                     include_usage, echo, continued, tools is not None, flush_s),
                                content_type="text/event-stream",
                                headers={"Cache-Control": "no-cache"})
            streams = []  # the stream closes them
            return response
        return json_response(await _collect(loaded, streams, firsts, completion_id, created, chat, want_logprobs,
                                            body.n, echo, continued, tools is not None))
    finally:
        # a client gone (the handler cancelled) or an error: the generations see their channel
        # closed at their next token and free their slots
        for recv in streams:
            recv.close()


async def _grammar(body: s.SamplingFields, seconds: float):
    """The request's output grammar (bnf_schema or response_format), compiled off the event loop."""
    if body.bnf_schema is not None and body.response_format not in (None, {"type": "text"}):
        raise bad_request("give either bnf_schema or response_format, not both", param="bnf_schema")
    if body.bnf_schema is not None:
        return await compile_in_time(compile_grammar, body.bnf_schema, "bnf_schema", seconds)
    if body.response_format is not None:
        return await compile_in_time(grammar_from_response_format, body.response_format, "response_format", seconds)
    return None


async def _events(recv, first) -> AsyncIterator:
    async for batch in event_batches(recv, first):
        for event in batch:
            yield event


def _token_text(loaded, token: int) -> tuple[str, list[int]]:
    raw = loaded.tokenizer.token_bytes(token) if token >= 0 else b""
    return raw.decode("utf-8", errors="replace"), list(raw)


def _chat_logprobs(loaded, event: Token) -> s.TokenLogprob:
    text, raw = _token_text(loaded, event.token)
    top = []
    for token, logprob in event.top:
        t_text, t_raw = _token_text(loaded, token)
        top.append(s.TopLogprob(t_text, logprob, t_raw))
    return s.TokenLogprob(text, event.logprob, raw, top)


async def _collect(loaded, streams, firsts, completion_id, created, chat, want_logprobs, keep: int, echo: str,
                   continued: bool = False, tool_calls: bool = False):
    """The whole answer: `keep` choices, the most probable (total log-probability) of the
    candidates when there are more (best_of); completions start with `echo`."""
    choices, scores, prompt_tokens, completion_tokens = [], [], 0, 0
    for index, (recv, first) in enumerate(zip(streams, firsts)):
        parts, logprobs, finish = [echo], [], None
        async for event in _events(recv, first):
            if isinstance(event, Token):
                parts.append(event.text)
                if event.token >= 0:
                    logprobs.append(event)
            elif isinstance(event, Done):
                finish = event.finish_reason
                prompt_tokens = event.prompt_tokens
                completion_tokens += event.completion_tokens
            elif isinstance(event, Failed):
                raise api_error(event.error)
        text = "".join(parts)
        if chat:
            lp = s.ChoiceLogprobs([_chat_logprobs(loaded, e) for e in logprobs]) if want_logprobs else None
            if tool_calls:
                parser = ReplyParser(continued)
                parser.feed(text)
                parser.close()
                message, finish = parser.message(finish)
            else:
                text = text.rstrip() if continued else text.strip()  # a continuation keeps its leading space
                message = s.AssistantMessage("assistant", text)
            choices.append(s.ChatChoice(index, message, finish, lp))
        else:
            lp = None
            if want_logprobs:
                offsets, at = [], 0
                for e in logprobs:
                    offsets.append(at)
                    at += len(_token_text(loaded, e.token)[0])
                lp = s.CompletionLogprobs([_token_text(loaded, e.token)[0] for e in logprobs],
                                          [e.logprob for e in logprobs],
                                          [{_token_text(loaded, t)[0]: p for t, p in e.top} for e in logprobs],
                                          offsets)
            choices.append(s.CompletionChoice(index, text, finish, lp))
        scores.append(sum(e.logprob for e in logprobs))
    if len(choices) > keep:
        best = sorted(range(len(choices)), key=lambda i: -scores[i])[:keep]
        choices = [msgspec.structs.replace(choices[i], index=rank) for rank, i in enumerate(best)]
    usage = s.Usage(prompt_tokens, completion_tokens, prompt_tokens + completion_tokens)
    if chat:
        return s.ChatCompletion(completion_id, created, loaded.name, choices, usage=usage)
    return s.Completion(completion_id, created, loaded.name, choices, usage=usage)


async def _sse(loaded, streams, firsts, completion_id, created, chat, want_logprobs, include_usage, echo: str = "",
               continued: bool = False, tool_calls: bool = False, flush_s: float = 0.0):
    """SSE chunks in OpenAI's format, choice after choice (all choices generate concurrently on
    the GPU; their events wait in their channels), then usage if asked, then [DONE]."""
    prompt_tokens = completion_tokens = 0
    started, finished = time.perf_counter(), False

    def chunk(index: int, delta_text: str | None, finish: str | None, role: bool = False,
              event: Token | None = None, delta: s.Delta | None = None) -> bytes:
        if chat:
            lp = None
            if want_logprobs and event is not None and event.token >= 0:
                lp = s.ChoiceLogprobs([_chat_logprobs(loaded, event)])
            if delta is None:
                delta = s.Delta(role="assistant") if role else s.Delta(content=delta_text)
            body = s.ChatCompletionChunk(completion_id, created, loaded.name,
                                         [s.ChatChunkChoice(index, delta, finish, lp)])
        else:
            body = s.Completion(completion_id, created, loaded.name,
                                [s.CompletionChoice(index, delta_text or "", finish)])
        return b"data: " + msgspec.json.encode(body) + b"\n\n"

    try:
        for index, (recv, first) in enumerate(zip(streams, firsts)):
            if chat:
                yield chunk(index, None, None, role=True)
            elif echo:
                yield chunk(index, echo, None)
            trim = ChatTrim(leading=not continued) if chat else None  # the text of the answer without streaming
            parser = ReplyParser(continued) if tool_calls else None
            async for batch in event_batches(recv, first, flush_s):
                parts = []
                for event in batch:
                    if isinstance(event, Token) and parser is not None:
                        deltas = parser.feed(event.text)
                        if not deltas and want_logprobs and event.token >= 0:
                            deltas = [s.Delta()]
                        parts.extend(chunk(index, None, None, event=event if k == 0 else None, delta=delta)
                                     for k, delta in enumerate(deltas))
                    elif isinstance(event, Token):
                        text = trim.feed(event.text) if trim else event.text
                        if text or (want_logprobs and event.token >= 0):
                            parts.append(chunk(index, text, None, event=event))
                    elif isinstance(event, Done):
                        prompt_tokens = event.prompt_tokens
                        completion_tokens += event.completion_tokens
                        finish = event.finish_reason
                        if parser is not None:
                            parts.extend(chunk(index, None, None, delta=delta) for delta in parser.close())
                            finish = parser.finish_reason(finish)
                        parts.append(chunk(index, None, finish))
                    elif isinstance(event, Failed):  # then the next choice, and [DONE]
                        parts.append(b"data: " + msgspec.json.encode(api_error(event.error).body) + b"\n\n")
                if parts:
                    yield b"".join(parts)
        if include_usage:
            usage = s.Usage(prompt_tokens, completion_tokens, prompt_tokens + completion_tokens)
            if chat:
                body = s.ChatCompletionChunk(completion_id, created, loaded.name, [], usage=usage)
            else:
                body = s.Completion(completion_id, created, loaded.name, [], usage=usage)
            yield b"data: " + msgspec.json.encode(body) + b"\n\n"
        yield b"data: [DONE]\n\n"
        finished = True
    finally:
        for recv in streams:
            await recv.aclose()
        # the access line was written at the headers; this one tells how the stream went
        print(f"[ai00-trio] stream {completion_id} {'done' if finished else 'cut short'} after "
              f"{(time.perf_counter() - started) * 1000:.0f}ms: {prompt_tokens} prompt + {completion_tokens} "
              "generated tokens", file=sys.stderr, flush=True)
