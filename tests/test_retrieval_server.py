"""A server with a chat model, an [embedding] model and a [rerank] model: /v1/embeddings (the SDK's
embeddings.create), /v1/rerank and /rerank, and their errors."""
from __future__ import annotations

import time

import numpy as np
import pytest

from ai00_trio.engine.formats.safetensors_writer import write_safetensors
from ai00_trio.tokenizer import load_tokenizer
from retrieval_reference import EOS, embed64, random_embedding_checkpoint, random_reranker_checkpoint, rerank64
from server_helpers import http, running_server

pytestmark = pytest.mark.gpu
TEMPLATE = "Instruct: Given a query, retrieve documents that answer the query\nDocument: {document}\nQuery: {query}"


@pytest.fixture(scope="module")
def retrieval_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("retrieval")
    emb, rer = random_embedding_checkpoint(64, 2), random_reranker_checkpoint(64, 2)
    write_safetensors(tmp / "emb.st", emb)
    write_safetensors(tmp / "rer.st", rer)
    sections = f'[embedding]\npath = "{tmp / "emb.st"}"\nprecision = "fp32"\n[rerank]\npath = "{tmp / "rer.st"}"\nprecision = "fp32"\n'
    with running_server(tmp, extra_sections=sections) as url:
        deadline = time.time() + 60
        while http("POST", url + "/v1/embeddings", {"input": "x"})[0] == 503 and time.time() < deadline:
            time.sleep(0.3)
        yield url, emb, rer


def world_tokens(text: str) -> list[int]:
    return list(load_tokenizer("world").encode(text)) + [EOS]


def test_sdk_embeddings_are_the_embedding_models(retrieval_server):
    import openai
    url, emb, _ = retrieval_server
    client = openai.OpenAI(base_url=url + "/v1", api_key="none")
    result = client.embeddings.create(model="emb", input=["hello world", "a second text"])
    assert len(result.data) == 2 and len(result.data[0].embedding) == 64
    assert result.usage.prompt_tokens == sum(len(world_tokens(t)) for t in ("hello world", "a second text"))
    want, _ = embed64(emb, world_tokens("hello world"))
    got = np.array(result.data[0].embedding)
    assert got @ want / np.linalg.norm(want) >= 0.999
    status, body = http("POST", url + "/v1/embeddings", {"input": "hello", "task": "poetry"})
    assert status == 400 and body["error"]["param"] == "task"


def test_rerank_sorted_and_scored(retrieval_server):
    url, emb, rer = retrieval_server
    docs = ["The EOS token ends a text.", "Apples are red.", "Large datasets."]
    status, body = http("POST", url + "/v1/rerank", {"query": "what ends a text?", "documents": docs,
                                                     "top_n": 2, "return_documents": True})
    assert status == 200, body
    want = [1 / (1 + np.exp(-rerank64(rer, embed64(emb, world_tokens(TEMPLATE.format(document=d, query="what ends a text?")))[1])))
            for d in docs]
    order = list(np.argsort(want)[::-1][:2])
    assert [r["index"] for r in body["results"]] == order
    for result in body["results"]:
        assert abs(result["relevance_score"] - want[result["index"]]) < 1e-3
        assert result["document"]["text"] == docs[result["index"]]
    status, root = http("POST", url + "/rerank", {"query": "q", "documents": [{"text": "a"}, "b"]})
    assert status == 200 and len(root["results"]) == 2 and "document" not in root["results"][0]
    assert root["usage"]["total_tokens"] > 0


@pytest.mark.parametrize("payload, param", [
    ({"query": "q", "documents": []}, "documents"),
    ({"query": "q", "documents": [3]}, "documents"),
    ({"query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
    ({"documents": ["a"]}, "query"),
])
def test_rerank_bad_input(retrieval_server, payload, param):
    status, body = http("POST", retrieval_server[0] + "/v1/rerank", payload)
    assert status == 400 and body["error"]["param"] == param


def test_no_reranker_configured(tmp_path):
    with running_server(tmp_path) as url:
        status, body = http("POST", url + "/v1/rerank", {"query": "q", "documents": ["a"]})
    assert status == 404 and "[rerank] path" in body["error"]["message"]
