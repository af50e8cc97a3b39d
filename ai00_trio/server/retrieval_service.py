"""The `[embedding]` and `[rerank]` models beside the chat model: loaded when the server starts, on
a GPU device of their own, each call run in a worker thread, one at a time."""
from __future__ import annotations

import sys
from pathlib import Path

import msgspec
import numpy as np
import trio

from ..config import Config, RetrievalModelConfig
from ..engine.retrieval import EmbeddingModel, Reranker, load_embedding_model, load_reranker
from ..engine.retrieval.embedding import with_eos
from ..engine.retrieval.reranker import PAIR_TEMPLATE
from ..tokenizer import load_tokenizer
from .errors import bad_request, not_found, unavailable


class RetrievalService:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.embedding: EmbeddingModel | None = None
        self.reranker: Reranker | None = None
        self.error: str | None = None
        self._tokenizer = None
        self._lock = trio.Lock()

    @property
    def configured(self) -> bool:
        return self.config.embedding is not None

    def names(self, kind: str) -> tuple[str, ...]:
        """What `model` may call the `kind` ("embedding" or "rerank") model: its name, then its file's name."""
        section = self.config.embedding if kind == "embedding" else self.config.rerank
        if section is None:
            return ()
        return section.name or Path(section.path).stem, Path(section.path).name

    @property
    def embed_name(self) -> str:
        return next(iter(self.names("embedding")), "")

    @property
    def rerank_name(self) -> str:
        return next(iter(self.names("rerank")), "")

    def _build(self, config: Config, kind: str) -> tuple[object, EmbeddingModel, Reranker | None]:
        """The models `config` names from `kind` on: the embedding model brings its reranker anew
        (which reads its states); the reranker alone is built over the loaded embedding model."""
        embed, rerank = config.embedding, config.rerank
        if kind == "rerank":
            return self._tokenizer, self.embedding, load_reranker(rerank.path, self.embedding, rerank.precision)
        tokenizer_kind = config.tokenizer.kind
        # EmbeddingRWKV reads the World vocabulary (its EOS is the 65536th id)
        tokenizer = load_tokenizer("world" if tokenizer_kind == "auto" else tokenizer_kind, config.tokenizer.path)
        model = load_embedding_model(embed.path, embed.precision, embed.adapter, max_batch=embed.max_batch,
                                     max_tokens=embed.token_chunk_size)
        reranker = load_reranker(rerank.path, model, rerank.precision) if rerank is not None else None
        return tokenizer, model, reranker

    async def load(self) -> None:
        """Load what the config names; a failure is kept and told to every request."""
        if not self.configured:
            return
        try:
            async with self._lock:
                self._tokenizer, self.embedding, self.reranker = \
                    await trio.to_thread.run_sync(self._build, self.config, "embedding")
        except Exception as error:  # noqa: BLE001 - any load failure is reported, the chat model serves on
            self.error = f"the [embedding]/[rerank] model failed to load: {error}"
            print(f"[ai00-trio] {self.error}", file=sys.stderr, flush=True)

    async def replace(self, kind: str, section: RetrievalModelConfig) -> None:
        """Load `section` as the `kind` model in place of the one served (which serves until the
        new one is ready); raises what the build raised, keeping the old one."""
        if kind == "rerank" and self.embedding is None:
            raise ValueError("the reranker reads the embedding model's states: load the embedding model first")
        config = msgspec.structs.replace(self.config, **{kind: section})
        if kind == "embedding":  # a device of its own: built while the old model serves
            built = await trio.to_thread.run_sync(self._build, config, kind)
        async with self._lock:  # no call runs on the models while they are swapped
            if kind == "rerank":  # uploaded to the embedding model's device, which one thread uses at a time
                built = await trio.to_thread.run_sync(self._build, config, kind)
            self._tokenizer, self.embedding, self.reranker = built
            self.config, self.error = config, None

    async def unload(self, kind: str) -> None:
        """Stop serving the `kind` model; unloading the embedding model takes its reranker too."""
        async with self._lock:
            self.reranker = None
            if kind == "embedding":
                self.embedding = None
            self.error = f"the {kind} model was unloaded; an admin can load it again with POST /admin/models/load"

    def _ready_embedding(self) -> EmbeddingModel:
        if self.embedding is None:
            raise unavailable(self.error or "the embedding model is still loading")
        return self.embedding

    def tokens(self, item: str | list[int], max_tokens: int, param: str) -> list[int]:
        ids = with_eos(self._tokenizer.encode(item) if isinstance(item, str) else item)
        if len(ids) > max_tokens:
            raise bad_request(f"an input of {len(ids)} tokens is longer than the {max_tokens} allowed", param=param)
        vocab = self._ready_embedding().info.n_vocab
        if any(not 0 <= t < vocab for t in ids):
            raise bad_request(f"token ids must be in 0..{vocab - 1}", param=param)
        return ids

    async def embed(self, inputs: list[str | list[int]], task: str | None, max_tokens: int) -> tuple[np.ndarray, int]:
        model = self._ready_embedding()
        try:
            model.head_key(task)
        except ValueError as error:
            raise bad_request(str(error), param="task") from None
        lists = [self.tokens(item, max_tokens, "input") for item in inputs]
        async with self._lock:
            vectors = await trio.to_thread.run_sync(model.embed, lists, task)
        return vectors, sum(map(len, lists))

    async def rerank(self, query: str, documents: list[str], max_tokens: int) -> tuple[np.ndarray, int]:
        if self.config.rerank is None:
            raise not_found("no reranker is configured: set [rerank] path (and [embedding] path) in the config")
        self._ready_embedding()
        if self.reranker is None:
            raise unavailable(self.error or "the reranker is still loading")
        reranker = self.reranker
        pairs = [self.tokens(PAIR_TEMPLATE.format(document=d, query=query), max_tokens, "documents")
                 for d in documents]
        async with self._lock:
            scores = await trio.to_thread.run_sync(reranker.scores, pairs)
        return scores, sum(map(len, pairs))

