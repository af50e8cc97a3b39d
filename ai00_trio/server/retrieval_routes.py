"""POST /v1/rerank and /rerank, and /v1/embeddings answered by the `[embedding]` model."""
from __future__ import annotations

import base64

import msgspec
import numpy as np
from quart import Response, request

from . import schemas as s
from .errors import bad_request
from .retrieval_schemas import RerankDocument, RerankRequest, RerankResponse, RerankResult, RerankUsage
from .retrieval_service import RetrievalService

MAX_DOCUMENTS = 1000


def _json(value) -> Response:
    return Response(msgspec.json.encode(value), status=200, content_type="application/json")


def _document_text(item, index: int) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and isinstance(item.get("text"), str):
        return item["text"]
    raise bad_request(f"documents[{index}] must be a string or an object with a \"text\" string", param="documents")


async def serve_embeddings(service: RetrievalService, body: s.EmbeddingRequest, inputs: list, max_tokens: int) -> Response:
    """The /v1/embeddings answer from the embedding model (unit vectors of its width)."""
    model = service.embedding
    width = model.info.n_embd if model is not None else None
    if body.dimensions is not None and width is not None and body.dimensions != width:
        raise bad_request(f"dimensions: this model's embeddings have {width} dimensions, and cannot be "
                          "shortened", param="dimensions")
    vectors, count = await service.embed(inputs, body.task, max_tokens)
    return _json(embedding_list(vectors, body.encoding_format, service.embed_name, count))


def embedding_list(vectors, encoding_format: str, model: str, tokens: int) -> s.EmbeddingList:
    """OpenAI's answer to /v1/embeddings: each vector as floats, or as base64 of little-endian f32."""
    data = []
    for i, vector in enumerate(vectors):
        if encoding_format == "base64":
            value = base64.b64encode(np.asarray(vector, "<f4").tobytes()).decode()
        else:
            value = [float(v) for v in vector]
        data.append(s.Embedding(i, value))
    return s.EmbeddingList(data, model, s.Usage(tokens, 0, tokens))


def register_retrieval_routes(app, route, service: RetrievalService, max_tokens: int) -> None:
    """`route` is app.py's decorator (every API prefix); /rerank is also served at the root,
    as llama.cpp does."""

    async def rerank():
        body = s.decode_request(await request.get_data(), RerankRequest)
        if not body.documents or len(body.documents) > MAX_DOCUMENTS:
            raise bad_request(f"documents must hold 1..{MAX_DOCUMENTS} documents", param="documents")
        if body.top_n is not None and body.top_n < 1:
            raise bad_request("top_n must be at least 1", param="top_n")
        if not body.query:
            raise bad_request("query must be a non-empty string", param="query")
        texts = [_document_text(item, i) for i, item in enumerate(body.documents)]
        scores, count = await service.rerank(body.query, texts, max_tokens)
        order = sorted(range(len(texts)), key=lambda i: -float(scores[i]))[:body.top_n]
        results = [RerankResult(i, float(scores[i]), RerankDocument(texts[i]) if body.return_documents else None)
                   for i in order]
        return _json(RerankResponse(service.rerank_name, results, RerankUsage(count, count)))

    route("/rerank", ["POST"])(rerank)
    app.add_url_rule("/rerank", "rerank", rerank, methods=["POST"])
