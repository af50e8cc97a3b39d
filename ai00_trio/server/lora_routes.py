"""LoRA hot-swap while serving: `POST /admin/loras/load` and `/admin/loras/unload`.

The file is read in a worker thread; the merge runs on the GPU executor (`engine/hotswap.py`)
through `Scheduler.run_alone`: running requests finish on the weights they started with, new
ones wait in the queue and are served with the change, and the prefix cache is emptied, so it
never serves a state computed with another set of LoRAs. The applied LoRAs join the `lora`
list of the reload request in `/api/models/info` (and so what `/admin/models/save` merges).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import trio
from quart import Response, request
from quart_trio import QuartTrio

from ..engine.formats import ModelFormatError
from ..engine.hotswap import HotSwapError, LoraHandle
from ..engine.lora import read_lora
from . import lora_schemas as ls
from .admin_routes import current_info
from .admin_schemas import LoraSpec
from .errors import ApiError, bad_request, not_found, unavailable
from .paths import relative_to_root, resolve_inside
from .schemas import decode_request

if TYPE_CHECKING:
    from .app import ServerState


def _json(value) -> Response:
    return Response(msgspec.json.encode(value), content_type="application/json")


def register_lora_routes(app: QuartTrio, state: ServerState) -> None:
    root = state.config.model.path
    changing = trio.Lock()  # one change at a time

    def applied() -> list[LoraHandle]:
        return state.loaded.model.loras if state.loaded is not None else []

    def listing() -> ls.LoraList:
        return ls.LoraList([ls.AppliedLora(h.id, h.origin, h.alpha) for h in applied()])

    async def change(work) -> None:
        """Run `work(model)` on each executor's copy of the model, on that executor with nothing
        else running there; a refusal (the first copy's: the copies are alike) is a 400."""
        current_info(state)  # 503 while loading, draining or without a model
        loaded, graph = state.loaded, state.graph
        if graph is None:
            raise unavailable("the model is still loading, retry shortly")
        before = {h.origin for h in loaded.model.loras}

        def guarded(model):
            try:
                return work(model)
            except (HotSwapError, ModelFormatError) as error:
                return error

        try:
            for lane in graph.lanes:
                outcome = await lane.scheduler.run_alone(functools.partial(guarded, lane.loaded.model))
                if isinstance(outcome, Exception):
                    break
        finally:  # the reload request lists what the model carries
            state.lifecycle.record_loras(loaded, before, [LoraSpec(h.origin, h.alpha) for h in loaded.model.loras])
        if isinstance(outcome, Exception):
            raise bad_request(str(outcome), param="path", code="lora_refused")

    @app.get("/admin/loras")
    async def loras_list():
        return _json(listing())

    @app.post("/admin/loras/load")
    async def loras_load():
        body = decode_request(await request.get_data(), ls.LoraLoadRequest)
        path = resolve_inside(root, body.path, param="path")
        if not path.is_file():
            raise bad_request(f"{body.path!r} is not a file", param="path")
        name = relative_to_root(root, path)
        reload = current_info(state).reload
        if any(resolve_inside(root, spec.path, must_exist=False) == path for spec in reload.lora):
            raise bad_request(f"the LoRA {name!r} is applied already; unload it first", param="path",
                              code="lora_applied")
        async with changing:
            try:
                tensors = await trio.to_thread.run_sync(read_lora, path)
            except (ModelFormatError, OSError, ValueError) as error:
                raise bad_request(f"{name}: cannot read the LoRA: {error}", param="path") from None
            await change(lambda model: model.apply_lora(tensors, body.alpha, origin=name))
        return _json(listing())

    @app.post("/admin/loras/unload")
    async def loras_unload():
        body = decode_request(await request.get_data(), ls.LoraUnloadRequest)
        if (body.path is None) == (body.id is None):
            raise bad_request("give either path or id of an applied LoRA", param="path")
        async with changing:
            handle = _find(root, applied(), body)
            if handle is None:
                raise _unknown(root, state, body)
            # each executor's copy has a handle of its own for the same LoRA
            await change(lambda model: model.remove_lora(next(h for h in model.loras if h.origin == handle.origin)))
        return _json(listing())


def _find(root: str | Path, handles: list[LoraHandle], body: ls.LoraUnloadRequest) -> LoraHandle | None:
    for handle in handles:
        if body.id is not None and handle.id == body.id:
            return handle
        if body.path is not None and resolve_inside(root, body.path, must_exist=False, param="path") \
                == resolve_inside(root, handle.origin, must_exist=False):
            return handle
    return None


def _unknown(root: str | Path, state: ServerState, body: ls.LoraUnloadRequest) -> ApiError:
    """404 for a LoRA not applied; 400 for one merged at load, which only a reload can take out."""
    if body.path is not None and state.reload is not None:
        wanted = resolve_inside(root, body.path, must_exist=False, param="path")
        if any(resolve_inside(root, spec.path, must_exist=False) == wanted for spec in state.reload.lora):
            return bad_request(f"the LoRA {body.path!r} was merged when the model was loaded; reload the model "
                               "without it (POST /admin/models/load)", param="path", code="lora_merged_at_load")
    shown = repr(body.path) if body.path is not None else f"with id {body.id}"
    return not_found(f"no LoRA {shown} is applied", param="path" if body.path is not None else "id")
