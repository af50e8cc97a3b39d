"""Starting the server: hypercorn on trio, the model loading in the background, then the actors."""
from __future__ import annotations

import sys

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve

from ..config import Config
from .actors import run_actor_graph
from .app import ServerState, create_app
from .engine_service import load_service


async def _load_and_start(state: ServerState, nursery: trio.Nursery) -> None:
    config = state.config
    try:
        state.loaded = await trio.to_thread.run_sync(load_service, config)
    except Exception as error:  # the server keeps answering: 503 with this message
        state.load_error = f"{type(error).__name__}: {error}"
        print(f"[ai00-trio] model failed to load: {state.load_error}", file=sys.stderr, flush=True)
        return
    model = config.model
    state.graph = await nursery.start(run_actor_graph, state.loaded, model, config.cache)


def hypercorn_config(config: Config) -> HyperConfig:
    hyper = HyperConfig()
    listen = config.listen
    host = f"[{listen.ip}]" if ":" in listen.ip else listen.ip
    hyper.bind = [f"{host}:{listen.port}"]
    hyper.accesslog = None  # the app logs one line per request itself (see app.py)
    if listen.tls:
        hyper.certfile, hyper.keyfile = listen.cert, listen.key
    return hyper


async def run_server(config: Config, task_status=trio.TASK_STATUS_IGNORED) -> None:
    state = ServerState(config)
    app = create_app(state)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_load_and_start, state, nursery)
        scheme = "https" if config.listen.tls else "http"
        print(f"[ai00-trio] listening on {scheme}://{config.listen.ip}:{config.listen.port}", file=sys.stderr, flush=True)
        task_status.started(state)
        await serve(app, hypercorn_config(config))
        nursery.cancel_scope.cancel()
