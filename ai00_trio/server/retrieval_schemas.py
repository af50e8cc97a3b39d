"""Wire formats of POST /v1/rerank and /rerank: the shape llama.cpp, Jina and Cohere clients send."""
from __future__ import annotations

from typing import Any

from msgspec import Struct


class RerankRequest(Struct, kw_only=True):
    query: str
    documents: list[Any]            # strings, or objects with a "text" string (Jina, Cohere v1)
    model: str | None = None
    top_n: int | None = None        # the best n; default all
    return_documents: bool = False


class RerankDocument(Struct):
    text: str


class RerankResult(Struct, omit_defaults=True):
    index: int
    relevance_score: float          # σ(the reranker's logit), in (0, 1)
    document: RerankDocument | None = None


class RerankUsage(Struct):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(Struct):
    model: str
    results: list[RerankResult]
    usage: RerankUsage
    object: str = "list"
