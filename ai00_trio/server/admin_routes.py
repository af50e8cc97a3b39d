"""AI00's management routes: the loaded model's description (`/api/models/info`, and pushed as
SSE at `/api/models/state`), the models folder (`/api/models/list`, `/admin/files/*`), the GPU
adapters, the admin token exchange, and `/admin/models/save`.

Every path a request names goes through `paths.resolve_inside` (the models folder); every
`/admin/` route goes through `AdminGuard` first.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, AsyncIterator

import msgspec
import trio
from quart import Response, request
from quart_trio import QuartTrio

from ..engine.formats import read_checkpoint
from ..engine.formats.ai00_layout import canonical_to_ai00
from ..engine.formats.safetensors_writer import write_safetensors
from ..engine.lora import merge_loras
from . import admin_schemas as a
from .admin_auth import AdminGuard
from .errors import ApiError, bad_request
from .lifecycle import no_model_error
from .model_files import list_folder
from .paths import PathRefused, relative_to_root, resolve_inside
from .schemas import decode_request

if TYPE_CHECKING:
    from .app import ServerState

HEARTBEAT_SECONDS = 15.0  # an SSE comment this often keeps proxies from closing a quiet stream


def _json(value, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status=status, content_type="application/json")


def current_info(state: ServerState) -> a.InfoResponse:
    """The loaded model's description, or the 503 that says why there is none."""
    if state.draining or state.lifecycle is None:
        raise no_model_error(state)
    return state.lifecycle.info()


def _state_event(state: ServerState) -> bytes:
    """One SSE event: the description as a plain message (what AI00 clients read), or, with no
    model, an `unavailable` event holding the error (which EventSource.onmessage ignores)."""
    try:
        return b"data: " + msgspec.json.encode(current_info(state)) + b"\n\n"
    except ApiError as error:
        return b"event: unavailable\ndata: " + msgspec.json.encode(error.body) + b"\n\n"


def _save_ai00(source: Path, loras: list[tuple[Path, float]], target: Path) -> int:
    """The weights the model was built from (its checkpoint with its LoRAs merged) as an AI00
    .st file; quantization is a load option, so it is applied again when the file is loaded."""
    write_safetensors(target, canonical_to_ai00(merge_loras(read_checkpoint(source), loras)), {"format": "pt"})
    return target.stat().st_size


def register_admin_routes(app: QuartTrio, state: ServerState) -> None:
    guard = AdminGuard(state.config.admin)
    root = state.config.model.path
    saving = trio.Lock()  # one save at a time: each holds a whole checkpoint in host memory

    @app.before_request
    async def admin_only():
        if request.path.startswith("/admin/"):
            guard.check(request.headers.get("Authorization", ""), request.args.get("admin_token"))

    @app.errorhandler(PathRefused)
    async def on_path_refused(error: PathRefused):
        body = ApiError(403, str(error), "invalid_request_error", error.param, "path_refused").body
        return _json(body, 403)

    # --- the loaded model ------------------------------------------------------------------
    @app.get("/api/models/info")
    async def models_info():
        return _json(current_info(state))

    @app.get("/api/models/state")
    async def models_state():
        async def events() -> AsyncIterator[bytes]:
            seen = -1
            while True:
                with trio.move_on_after(HEARTBEAT_SECONDS) as waiting:
                    seen = await state.changes.wait_past(seen)
                if waiting.cancelled_caught:
                    yield b": keep-alive\n\n"
                    continue
                yield _state_event(state)
                if state.draining:  # the stream ends, so a drain need not wait for it
                    return
        return Response(events(), content_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.get("/api/adapters")
    async def adapters():
        from ..gpu.context import list_adapters

        found = await trio.to_thread.run_sync(list_adapters)
        return _json([f"{adapter.name} ({adapter.backend})" for adapter in found])

    # --- the models folder -----------------------------------------------------------------
    async def listing(path: str, with_sha: bool) -> Response:
        real_root = resolve_inside(root, "")
        folder = resolve_inside(root, path, param="path")
        if not folder.is_dir():
            raise bad_request(f"{path!r} is not a folder", param="path")
        return _json(await trio.to_thread.run_sync(list_folder, real_root, folder, with_sha))

    @app.get("/api/models/list")
    async def models_list():
        return await listing("", True)

    @app.post("/admin/files/dir")
    async def files_dir():
        body = decode_request(await request.get_data(), a.FileInfoRequest)
        return await listing(body.path, body.is_sha)

    app.add_url_rule("/admin/files/ls", "files_ls", files_dir, methods=["POST"])

    @app.post("/admin/models/save")
    async def models_save():
        body = decode_request(await request.get_data(), a.SaveRequest)
        wanted = body.path or body.model_path
        if not wanted:
            raise bad_request("path is required: the file to write, inside the models folder", param="path")
        target = resolve_inside(root, wanted, must_exist=False, param="path")
        if target.is_dir():
            raise bad_request(f"{wanted!r} is a folder; name the file to write", param="path")
        reload = current_info(state).reload
        source = resolve_inside(root, reload.model_path)
        if target == source:
            raise bad_request(f"{wanted!r} is the loaded model's own file; choose another name", param="path")
        loras = [(resolve_inside(root, lora.path), lora.alpha) for lora in reload.lora]
        async with saving:
            size = await trio.to_thread.run_sync(_save_ai00, source, loras, target)
        return _json(a.SaveResponse(relative_to_root(root, target), size))

    # --- AI00's admin token exchange -------------------------------------------------------
    @app.post("/api/auth/exchange")
    async def auth_exchange():
        body = decode_request(await request.get_data(), a.ExchangeRequest)
        token = guard.exchange(body.app_id, body.app_secret)
        if token is not None:
            return _json(a.ExchangeResponse(token, 200, "SUCCESS"))
        message = ("NO-Match AppId and SecretKey" if guard.app_keys
                   else "token exchange is disabled: add [[admin.app_keys]] app_id and secret_key to the config")
        error = ApiError(403, message, "invalid_request_error", "app_secret", "invalid_app_key").body
        return _json(a.ExchangeResponse(None, 403, message, msgspec.to_builtins(error.error)), 403)
