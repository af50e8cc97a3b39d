"""The OpenAPI document, generated from the wire Structs, and the Swagger UI page."""
from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

import msgspec

from .. import __version__
from ..config import Config
from . import ai00_schemas as a
from . import response_schemas as r
from . import schemas as s
from .admin_schemas import EVENT_STREAMS, OPENAPI_ROUTES
from .errors import ErrorResponse
from .lora_schemas import OPENAPI_ROUTES as LORA_ROUTES

ROUTES = [
    ("/health", "get", None, s.Health, "Liveness: the process answers (never needs an API key)"),
    ("/ready", "get", None, s.Ready, "Readiness: 503 while the model loads, after a failed load and while draining"),
    ("/api/status", "get", None, dict[str, Any],
     "Model, adapter, queue, tokens per second, prefix cache and stored responses"),
    ("/metrics", "get", None, str, "Prometheus text: requests, latencies, tokens, slots, queue, cache, GPU bytes"),
    ("/v1/chat/completions", "post", s.ChatCompletionRequest, s.ChatCompletion, "Chat completion (SSE with stream=true)"),
    ("/v1/completions", "post", s.CompletionRequest, s.Completion, "Text completion (SSE with stream=true)"),
    ("/v1/responses", "post", r.ResponseRequest, r.ResponseObject,
     "OpenAI's Responses API (stream=true: SSE events response.created ... response.completed); "
     "previous_response_id continues a stored response from its cached state"),
    ("/v1/responses/{response_id}", "get", None, r.ResponseObject, "A stored response"),
    ("/v1/responses/{response_id}", "delete", None, r.DeletedResponse, "Delete a stored response"),
    ("/v1/embeddings", "post", s.EmbeddingRequest, s.EmbeddingList, "Embeddings: the normalized final hidden state"),
    ("/v1/models", "get", None, s.ModelList, "The served model"),
    ("/v1/models/{model_id}", "get", None, s.ModelCard, "One model (any name is the served model, unless strict_names)"),
    ("/tokenize", "post", s.TokenizeRequest, s.TokenizeResponse, "Token ids of a text (llama.cpp's shape)"),
    ("/detokenize", "post", s.DetokenizeRequest, s.DetokenizeResponse, "The text of token ids (llama.cpp's shape)"),
    ("/api/states", "get", None, s.StateList, "Initial (state-tuned) states"),
    ("/api/oai/chooses", "post", a.ChooseRequest, a.ChooseResponse,
     "AI00: rank choices as continuations of the input by perplexity (mean -ln p per token)"),
    ("/api/oai/states", "post", a.StateRequest, a.StateResponse, "AI00: the RNN state after the input"),
    *OPENAPI_ROUTES,
    *LORA_ROUTES,
]
TEXT = {"/metrics": "text/plain"}  # routes whose 200 is not JSON
# 404s besides the routes with path parameters: a model not served (with strict_names), a LoRA not applied
NOT_FOUND = {"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings", "/admin/loras/unload"}
STREAMED = {"/v1/chat/completions": s.ChatCompletionChunk, "/v1/completions": s.Completion}  # what each `data:` event of a stream holds


@lru_cache(maxsize=1)
def openapi_document() -> dict:
    types = [t for _, _, req, res, _ in ROUTES for t in (req, res) if t is not None] + [ErrorResponse, *STREAMED.values()]
    refs, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    ref_of = dict(zip(types, refs))
    paths: dict = {}
    error = {"description": "OpenAI-style error", "content": {"application/json": {"schema": ref_of[ErrorResponse]}}}
    for path, method, req, res, summary in ROUTES:
        media = "text/event-stream" if path in EVENT_STREAMS else TEXT.get(path, "application/json")
        operation: dict = {
            "summary": summary,
            "responses": {"200": {"description": "OK", "content": {media: {"schema": _body(media, ref_of[res])}}}},
        }
        if path != "/health":  # every other route needs a key once [listen] api_keys are set
            operation["responses"].update({"400": error, "401": error, "429": error, "503": error})
        if req is not None:
            operation["responses"]["415"] = error
        if path in STREAMED:
            operation["responses"]["200"]["content"]["text/event-stream"] = {
                "schema": _body("text/event-stream", ref_of[STREAMED[path]])}
        if path == "/v1/responses":  # stream=true: response.created ... response.completed events
            operation["responses"]["200"]["content"]["text/event-stream"] = {
                "schema": _body("text/event-stream", {"type": "object"})}
        names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
        if path in NOT_FOUND:
            operation["responses"]["404"] = error
        if names:
            operation["parameters"] = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                                       for name in names]
            operation["responses"]["404"] = error
        if path.startswith("/admin/"):  # admin key or exchanged token; 403 also for paths outside the models folder
            operation["security"] = [{"bearer": []}]
            operation["responses"].update({"401": error, "403": error})
        if path == "/api/auth/exchange":  # no such app key, or no app keys configured
            operation["responses"]["403"] = {"description": "refused",
                                             "content": {"application/json": {"schema": ref_of[res]}}}
        if req is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref_of[req]}}}
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",  # msgspec writes JSON Schema 2020-12 (null types, numeric exclusive bounds)
        "info": {"title": "ai00-trio", "version": __version__,
                 "description": "OpenAI-compatible RWKV server. Routes are also served under /api/oai/ and /api/oai/v1/."},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def served_document(config: Config) -> dict:
    """The document with this server's configured limits in it, so clients and fuzzers see
    the same ranges the routes enforce."""
    document = copy.deepcopy(openapi_document())
    schemas = document["components"]["schemas"]
    cap = config.model.max_tokens_cap
    for name in ("ChatCompletionRequest", "CompletionRequest", "ResponseRequest"):
        for field in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
            if field in schemas[name]["properties"]:
                _limit(schemas[name]["properties"][field], "integer", minimum=1, maximum=cap)
    _limit(schemas["EmbeddingRequest"]["properties"]["input"], "array", minItems=1,
           maxItems=config.model.max_embed_inputs)
    return document


def _limit(schema: dict, kind: str, **bounds: int) -> None:
    """Bounds on the `kind` branch of a (possibly nullable) property's schema."""
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == kind:
            branch.update(bounds)


def _body(media: str, schema: dict) -> dict:
    """An SSE stream's schema is one event's: its `data` is JSON text holding `schema`, or the
    closing `[DONE]`."""
    if media != "text/event-stream":
        return schema
    return {"type": "object", "required": ["data"],
            "properties": {"event": {"type": "string"},
                           "data": {"type": "string", "anyOf": [
                               {"const": "[DONE]"},
                               {"contentMediaType": "application/json", "contentSchema": schema}]}}}


def swagger_page() -> str:
    return """<!doctype html>
<html><head><meta charset="utf-8"><title>ai00-trio API</title>
<link rel="stylesheet" href="/vendor/swagger-ui/swagger-ui.css"></head>
<body><div id="swagger"></div>
<script src="/vendor/swagger-ui/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/api-docs/openapi.json", dom_id: "#swagger"});</script>
</body></html>"""
