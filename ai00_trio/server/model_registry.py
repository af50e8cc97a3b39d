"""Every model the server serves, found by the name a request gives in `model`: the `[model]`
chat model, the `[[models]]` chat models, the `[embedding]` model and its `[rerank]` reranker.

Each chat model has a deployment of its own (executor, slots, queue, prefix cache), swapped by
a `Lifecycle` of its own over a `ServerState` of its own, so loads, drains and leases work for
every chat model as they do for `[model]`. The retrieval models live in `RetrievalService`.
Each load checks the GPU budget first (`gpu_budget.py`).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec
import trio

from ..config import ChatModelEntry, Config, ConfigError, RetrievalModelConfig, normalize_precision
from ..gpu.context import buffer_bytes_in_use
from . import admin_schemas as a
from . import schemas as s
from .actors import ActorGraph
from .engine_service import LoadedModel, executor_adapters
from .errors import ApiError, bad_request, not_found, unavailable
from .gpu_budget import MemoryNeed, check_fits, estimate_need
from .lifecycle import Lifecycle, config_for, lease, no_model_error
from .paths import resolve_inside
from .retrieval_service import RetrievalService

if TYPE_CHECKING:
    from .app import ServerState

RETRIEVAL_KINDS = ("embedding", "rerank")


def _log(message: str) -> None:
    print(f"[ai00-trio] {message}", file=sys.stderr, flush=True)


@dataclass(eq=False)
class ChatModel:
    """A chat model beside `[model]`: `state` is its own (config, deployment, status)."""
    name: str
    state: ServerState

    @property
    def names(self) -> tuple[str, ...]:
        return self.name, *self.state.config.model.aliases


class ModelRegistry:
    def __init__(self, main: ServerState, retrieval: RetrievalService) -> None:
        self.main = main
        self.retrieval = retrieval
        self.chats: dict[str, ChatModel] = {}
        self._nursery: trio.Nursery | None = None
        for entry in main.config.models:
            self.chats[entry.name] = ChatModel(entry.name, self._new_state(self._entry_config(entry)))

    # --- building ----------------------------------------------------------------------------
    def _entry_config(self, entry: ChatModelEntry) -> Config:
        base = self.main.config
        model = msgspec.structs.replace(base.model, name=entry.path, precision=entry.precision,
                                        max_batch=entry.max_batch, token_chunk_size=entry.token_chunk_size,
                                        aliases=list(entry.aliases), quant=0, quant_type="None")
        return msgspec.structs.replace(base, model=model, lora=[], state=[], models=[])

    def _new_state(self, config: Config) -> ServerState:
        state = type(self.main)(config)
        state.metrics = self.main.metrics  # one /metrics for every model (labelled by model name)
        return state

    async def start(self, nursery: trio.Nursery) -> None:
        """Load the `[[models]]` chat models (each in the background); their graphs run in `nursery`."""
        self._nursery = nursery
        for chat in self.chats.values():
            chat.state.lifecycle = Lifecycle(chat.state, nursery)
            nursery.start_soon(self._first_load, chat)

    async def _first_load(self, chat: ChatModel) -> None:
        state = chat.state
        try:
            self.check_memory(self._chat_need(state.config), f"the model {chat.name!r}")
            await state.lifecycle.start()
            state.lifecycle.serve_as(chat.name)
        except Exception as error:  # noqa: BLE001 - told to its requests; the other models serve on
            message = error.body.error.message if isinstance(error, ApiError) else f"{type(error).__name__}: {error}"
            state.load_error, state.status = message, "failed"
            _log(f"the model {chat.name!r} failed to load: {message}")

    # --- memory ------------------------------------------------------------------------------
    def check_memory(self, need: MemoryNeed, what: str) -> None:
        budget = self.main.config.adapter.memory_bytes
        in_use = buffer_bytes_in_use()
        _log(f"{what} needs {need.describe()}; {in_use / 2**20:.1f} MiB of GPU buffers are in use"
             + (f" of a {budget / 2**20:.1f} MiB budget" if budget is not None else ""))
        check_fits(need, budget, in_use, what)

    def _chat_need(self, config: Config) -> MemoryNeed:
        model = config.model
        path = resolve_inside(model.path, model.name, param="model_path")
        need = estimate_need(path, model.precision, model.max_batch, config.cache.gpu_bytes)
        executors = len(executor_adapters(config.adapter))
        return MemoryNeed(need.weights * executors, need.slots * executors, need.cache * executors)

    # --- finding a model by name -------------------------------------------------------------
    def main_names(self) -> tuple[str, ...]:
        loaded, model = self.main.loaded, self.main.config.model
        own = (loaded.name, loaded.path) if loaded is not None else (model.file.stem, str(model.file))
        return *own, *model.aliases

    def chat(self, name: str | None) -> ChatModel | None:
        """The `[[models]]` chat model `name` calls for (by name or alias)."""
        if not name:
            return None
        return next((chat for chat in self.chats.values() if name in chat.names), None)

    def retrieval_kind(self, name: str | None) -> str | None:
        return next((kind for kind in RETRIEVAL_KINDS if name and name in self.retrieval.names(kind)), None)

    def serving(self, chat: ChatModel) -> tuple[LoadedModel, ActorGraph]:
        """The chat model's deployment, leased for this request (as `ready()` does for `[model]`)."""
        state = chat.state
        if self.main.draining:
            raise no_model_error(self.main)
        if state.loaded is None or state.graph is None:
            if state.status == "unloaded":
                raise unavailable(f"the model {chat.name!r} is unloaded; an admin can load it with "
                                  "POST /admin/models/load")
            raise no_model_error(state)
        lease(state.graph)
        return state.loaded, state.graph

    def cards(self) -> list[s.ModelCard]:
        """/v1/models beyond `[model]`: the loaded `[[models]]` chat models, the retrieval models."""
        cards = []
        for chat in self.chats.values():
            if chat.state.loaded is not None:
                cards += [s.ModelCard(name, chat.state.loaded.created) for name in chat.names]
        created = int(self.main.started)
        if self.retrieval.embedding is not None:
            cards.append(s.ModelCard(self.retrieval.embed_name, created, kind="embedding"))
        if self.retrieval.reranker is not None:
            cards.append(s.ModelCard(self.retrieval.rerank_name, created, kind="rerank"))
        return cards

    # --- loads and unloads -------------------------------------------------------------------
    def _is_main(self, name: str | None) -> bool:
        return not name or name in self.main_names()

    async def load(self, request: a.ModelLoadRequest) -> a.InfoResponse | a.RetrievalLoaded:
        """Load `request.model_path` as the model `request.name` (a new name adds a model)."""
        name, kind = request.name, request.kind
        found = "chat" if self._is_main(name) or self.chat(name) else self.retrieval_kind(name)
        if found is not None and kind is not None and kind != found:
            raise bad_request(f"{name!r} is the {found} model, not a {kind} model", param="kind")
        kind = found or kind or "chat"
        reload = msgspec.convert(msgspec.to_builtins(request), a.ReloadRequest)
        if kind in RETRIEVAL_KINDS:
            return await self._load_retrieval(kind, name, reload)
        config = config_for(self.main.config, reload)  # 403/400 for a bad path or option
        if self._is_main(name):
            self.check_memory(self._chat_need(config), "the model")
            if self.main.draining or self.main.lifecycle is None:
                raise no_model_error(self.main)
            return await self.main.lifecycle.load(reload)
        chat = self.chat(name)
        config = msgspec.structs.replace(config, model=msgspec.structs.replace(
            config.model, aliases=list(chat.state.config.model.aliases) if chat else []), models=[])
        self.check_memory(self._chat_need(config), f"the model {name!r}")
        if chat is None:
            if self._nursery is None:
                raise unavailable("the server is still starting")
            chat = ChatModel(name, self._new_state(config))
            chat.state.lifecycle = Lifecycle(chat.state, self._nursery)
            self.chats[name] = chat
        try:
            info = await chat.state.lifecycle.load(reload)
        except ApiError:
            if chat.state.loaded is None and name not in {e.name for e in self.main.config.models}:
                del self.chats[name]  # a model added by this load: nothing of it stays
            raise
        chat.state.lifecycle.serve_as(chat.name)
        _log(f"now serving the chat model {name!r} from {reload.model_path}")
        return info

    async def _load_retrieval(self, kind: str, name: str | None, request: a.ReloadRequest) -> a.RetrievalLoaded:
        root = self.main.config.model.path
        path = resolve_inside(root, request.model_path, param="model_path")
        current = self.retrieval.config.embedding if kind == "embedding" else self.retrieval.config.rerank
        try:
            precision = normalize_precision(request.precision)
        except ConfigError as error:
            raise bad_request(str(error).replace("model.precision", "precision"), param="precision") from None
        section = RetrievalModelConfig(path=str(path), name=name or (current.name if current else None),
                                       precision=precision, adapter=current.adapter if current else None,
                                       max_batch=request.max_batch, token_chunk_size=request.token_chunk_size)
        self.check_memory(estimate_need(path, precision, request.max_batch), f"the {kind} model")
        started = time.perf_counter()
        try:
            await self.retrieval.replace(kind, section)
        except Exception as error:
            raise bad_request(f"the {kind} model {request.model_path!r} failed to load: {type(error).__name__}: "
                              f"{error}", param="model_path", code="model_load_failed") from None
        _log(f"now serving the {kind} model {self.retrieval.names(kind)[0]!r} from {path} "
             f"(built in {time.perf_counter() - started:.1f}s)")
        return a.RetrievalLoaded(self.retrieval.names(kind)[0], kind, request.model_path)

    async def unload(self, name: str | None) -> None:
        if self._is_main(name):
            if self.main.draining or self.main.lifecycle is None:
                raise no_model_error(self.main)
            await self.main.lifecycle.unload()
            return
        chat = self.chat(name)
        if chat is not None:
            await chat.state.lifecycle.unload()
            return
        kind = self.retrieval_kind(name)
        if kind is None:
            raise not_found(f"no model is named {name!r}", param="model")
        await self.retrieval.unload(kind)
