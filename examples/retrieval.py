"""Search a folder of text files with an ai00-trio server: embed every paragraph with the OpenAI
SDK's embeddings call, find the paragraphs nearest the query, and rerank the best 20 with
/v1/rerank (the server's [embedding] and [rerank] models).

    python examples/retrieval.py NOTES_FOLDER "how do I rotate the keys?" --base-url http://127.0.0.1:65530/v1

Prints the reranked paragraphs, best first (`--json` for a machine-readable list).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
import openai

BATCH = 64          # paragraphs per embeddings call
CANDIDATES = 20     # nearest paragraphs handed to the reranker


@dataclass
class Passage:
    file: str
    text: str


@dataclass
class Hit:
    file: str
    text: str
    similarity: float       # cosine of the query's embedding and the paragraph's
    relevance_score: float  # the reranker's score of (query, paragraph), in (0, 1)


def read_passages(folder: Path) -> list[Passage]:
    """Every non-empty paragraph (text between blank lines) of every .txt file under `folder`."""
    passages = []
    for path in sorted(folder.rglob("*.txt")):
        for paragraph in path.read_text(encoding="utf-8", errors="replace").split("\n\n"):
            if paragraph.strip():
                passages.append(Passage(str(path.relative_to(folder)), paragraph.strip()))
    return passages


def embed(client: openai.OpenAI, model: str, texts: list[str]) -> np.ndarray:
    vectors = []
    for start in range(0, len(texts), BATCH):
        result = client.embeddings.create(model=model, input=texts[start:start + BATCH])
        vectors += [item.embedding for item in sorted(result.data, key=lambda item: item.index)]
    return np.asarray(vectors, np.float32)  # unit vectors: a dot product is the cosine


def search(client: openai.OpenAI, base_url: str, api_key: str, passages: list[Passage], index: np.ndarray,
           query: str, model: str, top_n: int) -> list[Hit]:
    similarity = index @ embed(client, model, [query])[0]
    nearest = np.argsort(-similarity)[:CANDIDATES]
    answer = httpx.post(base_url.rstrip("/") + "/rerank", timeout=120, headers={"Authorization": f"Bearer {api_key}"},
                        json={"query": query, "documents": [passages[i].text for i in nearest], "top_n": top_n})
    answer.raise_for_status()
    hits = []
    for result in answer.json()["results"]:
        passage = passages[nearest[result["index"]]]
        hits.append(Hit(passage.file, passage.text, float(similarity[nearest[result["index"]]]),
                        result["relevance_score"]))
    return hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("query")
    parser.add_argument("--base-url", default="http://127.0.0.1:65530/v1")
    parser.add_argument("--api-key", default="none", help="one of the server's [listen] api_keys, if it has any")
    parser.add_argument("--model", default="embedding", help="the embedding model's name (any name reaches it)")
    parser.add_argument("--top", type=int, default=5, help="paragraphs to show")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key)
    passages = read_passages(args.folder)
    if not passages:
        raise SystemExit(f"no paragraphs in the .txt files of {args.folder}")
    index = embed(client, args.model, [p.text for p in passages])
    hits = search(client, args.base_url, args.api_key, passages, index, args.query, args.model, args.top)
    if args.json:
        print(json.dumps({"passages": len(passages), "hits": [asdict(hit) for hit in hits]}))
        return
    print(f"{len(passages)} paragraphs indexed; the best {len(hits)} for {args.query!r}:")
    for rank, hit in enumerate(hits, 1):
        snippet = " ".join(hit.text.split())[:120]
        print(f"{rank:2d}. {hit.relevance_score:.3f} (cosine {hit.similarity:.3f}) {hit.file}: {snippet}")


if __name__ == "__main__":
    main()
