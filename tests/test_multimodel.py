"""Several models in one server: a second chat model ([[models]]), an embedding model and a
reranker beside [model]; requests routed by `model`; /v1/models with kinds; loads and unloads
by name; the GPU budget; and the [model] chat model unaffected by the others."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

from ai00_trio.engine import load_model
from ai00_trio.engine.formats.safetensors_writer import write_safetensors
from retrieval_reference import random_embedding_checkpoint, random_reranker_checkpoint
from server_helpers import ROOT, http, running_server
from test_reload import ADMIN, ADMIN_SECTION, V5, V7, complete, greedy, text_of

pytestmark = pytest.mark.gpu
PROMPT, TOKENS = "The cat", 12


def models_folder(tmp) -> str:
    folder = tmp / "models"
    folder.mkdir()
    for source in (V7, V5):
        shutil.copy(source, folder / source.name)
    write_safetensors(folder / "emb.st", random_embedding_checkpoint(64, 2))
    write_safetensors(folder / "rer.st", random_reranker_checkpoint(64, 2))
    return str(folder)


def wait_for(url: str, model: str, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while model not in [m["id"] for m in http("GET", url + "/v1/models")[1]["data"]]:
        assert time.time() < deadline, f"{model} did not load"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multi")
    folder = models_folder(tmp)
    sections = (f'[[models]]\nname = "second"\npath = "{V5.name}"\naliases = ["other"]\nmax_batch = 2\n'
                f'[embedding]\npath = "{folder}/emb.st"\nprecision = "fp32"\n'
                f'[rerank]\npath = "{folder}/rer.st"\nprecision = "fp32"\n{ADMIN_SECTION}')
    with running_server(tmp, {"path": folder}, extra_sections=sections) as url:
        for model in ("second", "emb", "rer"):
            wait_for(url, model)
        yield url


def test_models_listed_with_their_kinds(multi):
    status, body = http("GET", multi + "/v1/models")
    assert status == 200
    kinds = {card["id"]: card["kind"] for card in body["data"]}
    assert kinds == {V7.stem: "chat", "second": "chat", "other": "chat", "emb": "embedding", "rer": "rerank"}
    assert all(card["owned_by"] == "ai00-trio" and card["object"] == "model" for card in body["data"])
    status, card = http("GET", multi + "/v1/models/emb")
    assert status == 200 and card["kind"] == "embedding"


def test_requests_go_to_the_model_they_name(multi):
    second = load_model(V5, precision="fp16")
    for name in ("second", "other"):
        status, answer = complete(multi, PROMPT, TOKENS, model=name)
        assert status == 200 and answer["model"] == "second"
        assert text_of(answer) == greedy(second, PROMPT, TOKENS)
    status, answer = complete(multi, PROMPT, TOKENS, model=V7.stem)
    assert status == 200 and answer["model"] == V7.stem
    assert text_of(answer) == greedy(load_model(V7, precision="fp16"), PROMPT, TOKENS)
    # embeddings: the embedding model by default, a chat model's hidden state when one is named
    status, default = http("POST", multi + "/v1/embeddings", {"input": "hi", "model": "text-embedding-3-small"})
    assert status == 200 and default["model"] == "emb" and default["usage"]["prompt_tokens"] == 2  # "hi", EOS
    status, hidden = http("POST", multi + "/v1/embeddings", {"input": "hi", "model": "second"})
    assert status == 200 and hidden["model"] == "second" and hidden["usage"]["prompt_tokens"] == 2  # bytes
    assert default["data"][0]["embedding"] != hidden["data"][0]["embedding"]


def test_unknown_and_wrong_kind_names(multi):
    # with two chat models an unknown name could mean either
    status, body = complete(multi, PROMPT, 2, model="gpt-4o")
    assert status == 404 and body["error"]["code"] == "model_not_found" and "'second'" in body["error"]["message"]
    status, body = http("POST", multi + "/v1/chat/completions",
                        {"model": "emb", "messages": [{"role": "user", "content": "hi"}]})
    assert status == 400 and body["error"]["code"] == "model_kind_mismatch" and "/v1/embeddings" in \
        body["error"]["message"]


def test_unload_and_load_by_name(multi):
    status, _ = http("POST", multi + "/admin/models/unload", {"name": "second"}, headers=ADMIN)
    assert status == 200
    status, body = complete(multi, PROMPT, 2, model="second")
    assert status == 503 and "unloaded" in body["error"]["message"]
    assert "second" not in [m["id"] for m in http("GET", multi + "/v1/models")[1]["data"]]
    assert complete(multi, PROMPT, 2)[0] == 200  # [model] serves on
    status, info = http("POST", multi + "/admin/models/load",
                        {"name": "second", "model_path": V5.name, "max_batch": 2}, headers=ADMIN)
    assert status == 200 and info["reload"]["model_path"] == V5.name, info
    assert complete(multi, PROMPT, 2, model="other")[1]["model"] == "second"
    # the reranker: unloaded by name (503), loaded again by name
    assert http("GET", multi + "/admin/models/unload?name=rer", headers=ADMIN)[0] == 200
    assert http("POST", multi + "/v1/rerank", {"query": "q", "documents": ["a"]})[0] == 503
    status, body = http("POST", multi + "/admin/models/load", {"name": "rer", "model_path": "rer.st",
                                                                "precision": "fp32"}, headers=ADMIN)
    assert status == 200 and body == {"name": "rer", "kind": "rerank", "model_path": "rer.st", "status": "loaded"}
    assert http("POST", multi + "/v1/rerank", {"query": "q", "documents": ["a", "b"]})[0] == 200
    status, body = http("POST", multi + "/admin/models/load", {"name": "emb", "kind": "chat",
                                                                "model_path": "emb.st"}, headers=ADMIN)
    assert status == 400 and body["error"]["param"] == "kind"
    assert http("POST", multi + "/admin/models/unload", {"name": "nope"}, headers=ADMIN)[0] == 404


def test_chat_model_unaffected_by_the_others(multi, tmp_path):
    messages = [{"role": "user", "content": "Tell me a story"}]
    request = {"messages": messages, "temperature": 0, "max_tokens": 16}
    status, together = http("POST", multi + "/v1/chat/completions", request)
    assert status == 200
    with running_server(tmp_path) as alone:
        status, single = http("POST", alone + "/v1/chat/completions", request)
    assert status == 200
    assert together["choices"][0]["message"] == single["choices"][0]["message"]
    assert together["usage"] == single["usage"]


def test_a_load_that_does_not_fit_is_refused(tmp_path):
    folder = models_folder(tmp_path)
    sections = f"[adapter]\nmemory_bytes = 4096\n{ADMIN_SECTION}"
    with running_server(tmp_path, {"path": folder}, extra_sections=sections) as url:
        for body in ({"name": "big", "model_path": V5.name}, {"model_path": V5.name}):
            status, answer = http("POST", url + "/admin/models/load", body, headers=ADMIN)
            assert status == 400 and answer["error"]["code"] == "insufficient_gpu_memory", answer
            assert "needs about" in answer["error"]["message"] and "MiB of weights" in answer["error"]["message"]
        assert [m["id"] for m in http("GET", url + "/v1/models")[1]["data"]] == [V7.stem]
        assert complete(url, PROMPT, 2)[0] == 200  # the serving model is kept


def test_retrieval_example(multi, tmp_path):
    notes = tmp_path / "notes"
    (notes / "deep").mkdir(parents=True)
    (notes / "keys.txt").write_text("Rotate the API keys every month.\n\nKeys live in the vault.\n")
    (notes / "food.txt").write_text("Apples are red.\n\nBread is baked at dawn.\n")
    (notes / "deep" / "ops.txt").write_text("Restart the server after an upgrade.\n")
    query = "how often are keys rotated?"
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "retrieval.py"), str(notes), query, "--base-url",
                          multi + "/v1", "--top", "3", "--json"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert answer["passages"] == 5 and len(answer["hits"]) == 3
    texts = [hit["text"] for hit in answer["hits"]]
    status, direct = http("POST", multi + "/v1/rerank", {"query": query, "documents": texts})
    assert status == 200
    # the example's order and scores are the reranker's, on the paragraphs it found
    assert [r["index"] for r in direct["results"]] == [0, 1, 2]
    for hit, result in zip(answer["hits"], direct["results"]):
        assert abs(hit["relevance_score"] - result["relevance_score"]) < 1e-6
        assert (notes / hit["file"]).read_text().count(hit["text"]) == 1
