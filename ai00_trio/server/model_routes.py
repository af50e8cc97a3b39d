"""The admin routes that change what is served: `/admin/models/load` and `unload` (AI00's, with
a model `name` for another than the [model] chat model: `model_registry.py`),
`/admin/states/load` and `unload`. Thin: `lifecycle.py` does the work. `AdminGuard` (in
admin_routes.py) has checked the caller before any of these run."""
from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from quart import Response, request
from quart_trio import QuartTrio

from . import admin_schemas as a
from .errors import bad_request
from .lifecycle import Lifecycle, no_model_error
from .model_registry import ModelRegistry
from .schemas import decode_request

if TYPE_CHECKING:
    from .app import ServerState


def _json(value) -> Response:
    return Response(msgspec.json.encode(value), content_type="application/json")


def register_model_routes(app: QuartTrio, state: ServerState) -> None:
    def lifecycle() -> Lifecycle:
        if state.draining or state.lifecycle is None:
            raise no_model_error(state)
        return state.lifecycle

    def registry() -> ModelRegistry:
        if state.draining or state.models is None:
            raise no_model_error(state)
        return state.models

    @app.post("/admin/models/load")
    async def models_load():
        body = decode_request(await request.get_data(), a.ModelLoadRequest)
        return _json(await registry().load(body))

    @app.route("/admin/models/unload", methods=["GET", "POST"])
    async def models_unload():
        raw = await request.get_data()
        name = request.args.get("name")
        if raw.strip():  # AI00 sends no body: the [model] chat model
            name = decode_request(raw, a.ModelUnloadRequest).name or name
        await registry().unload(name)
        return _json(a.UnloadResponse())

    @app.post("/admin/states/load")
    async def states_load():
        body = decode_request(await request.get_data(), a.StateSpec)
        return _json(await lifecycle().attach_state(body))

    @app.post("/admin/states/unload")
    async def states_unload():
        body = decode_request(await request.get_data(), a.StateUnloadRequest)
        key = body.id or body.name
        if not key:
            raise bad_request("give the state's id or name", param="id")
        return _json(lifecycle().detach_state(key))
