"""The OpenAPI document, generated from the wire Structs, and the Swagger UI page."""
from __future__ import annotations

from functools import lru_cache

import msgspec

from .. import __version__
from . import schemas as s
from .admin_schemas import EVENT_STREAMS, OPENAPI_ROUTES
from .errors import ErrorResponse

ROUTES = [
    ("/v1/chat/completions", "post", s.ChatCompletionRequest, s.ChatCompletion, "Chat completion (SSE with stream=true)"),
    ("/v1/completions", "post", s.CompletionRequest, s.Completion, "Text completion (SSE with stream=true)"),
    ("/v1/embeddings", "post", s.EmbeddingRequest, s.EmbeddingList, "Embeddings: the normalized final hidden state"),
    ("/v1/models", "get", None, s.ModelList, "The served model"),
    ("/v1/models/{model_id}", "get", None, s.ModelCard, "One model (any name is the served model, unless strict_names)"),
    ("/tokenize", "post", s.TokenizeRequest, s.TokenizeResponse, "Token ids of a text (llama.cpp's shape)"),
    ("/detokenize", "post", s.DetokenizeRequest, s.DetokenizeResponse, "The text of token ids (llama.cpp's shape)"),
    ("/api/states", "get", None, s.StateList, "Initial (state-tuned) states"),
    *OPENAPI_ROUTES,
]


@lru_cache(maxsize=1)
def openapi_document() -> dict:
    types = [t for _, _, req, res, _ in ROUTES for t in (req, res) if t is not None] + [ErrorResponse]
    refs, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    ref_of = dict(zip(types, refs))
    paths: dict = {}
    error = {"description": "OpenAI-style error", "content": {"application/json": {"schema": ref_of[ErrorResponse]}}}
    for path, method, req, res, summary in ROUTES:
        media = "text/event-stream" if path in EVENT_STREAMS else "application/json"
        operation: dict = {
            "summary": summary,
            "responses": {"200": {"description": "OK", "content": {media: {"schema": ref_of[res]}}},
                          "400": error, "429": error, "503": error},
        }
        if path.startswith("/admin/"):  # admin key or exchanged token; 403 also for paths outside the models folder
            operation["security"] = [{"bearer": []}]
            operation["responses"].update({"401": error, "403": error})
        if "{model_id}" in path:
            operation["parameters"] = [{"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}]
        if req is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref_of[req]}}}
        paths[path] = {method: operation}
    return {
        "openapi": "3.0.3",
        "info": {"title": "ai00-trio", "version": __version__,
                 "description": "OpenAI-compatible RWKV server. Routes are also served under /api/oai/ and /api/oai/v1/."},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def swagger_page() -> str:
    return """<!doctype html>
<html><head><meta charset="utf-8"><title>ai00-trio API</title>
<link rel="stylesheet" href="/vendor/swagger-ui/swagger-ui.css"></head>
<body><div id="swagger"></div>
<script src="/vendor/swagger-ui/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/api-docs/openapi.json", dom_id: "#swagger"});</script>
</body></html>"""
