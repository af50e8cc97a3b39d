"""Starting the server: hypercorn on trio, the model loading in the background, then the actors."""
from __future__ import annotations

import signal
import sys

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve

from ..config import Config
from .app import ServerState, create_app
from .fault_injection import FaultPlan
from .lifecycle import Lifecycle

# connections waiting to be accepted: hypercorn's 100 resets some of a burst of a few hundred
# clients (the kernel caps it at net.core.somaxconn)
BACKLOG = 2048


async def _load_and_start(state: ServerState, lifecycle: Lifecycle, nursery: trio.Nursery,
                          keep_serving: bool) -> None:
    try:
        await lifecycle.start()
    except Exception as error:
        state.load_error = f"{type(error).__name__}: {error}"
        state.status = "failed"
        state.changes.notify()
        print(f"[ai00-trio] model failed to load: {state.load_error}", file=sys.stderr, flush=True)
        if not keep_serving:  # else the server answers 503 with this message (or loads one on request)
            state.exit_code = 1
            nursery.cancel_scope.cancel()


def hypercorn_config(config: Config) -> HyperConfig:
    hyper = HyperConfig()
    listen = config.listen
    host = f"[{listen.ip}]" if ":" in listen.ip else listen.ip
    hyper.bind = [f"{host}:{listen.port}"]
    hyper.accesslog = None  # the app logs one line per request itself (see app.py)
    hyper.backlog = BACKLOG
    if listen.tls:
        hyper.certfile, hyper.keyfile = listen.cert, listen.key
    hyper.graceful_timeout = listen.drain_seconds  # what serve() waits for running requests after the trigger
    return hyper


async def _until_stop_signal(state: ServerState) -> None:
    """Returns at SIGTERM or SIGINT: hypercorn then stops accepting connections and lets the
    running requests finish (up to drain_seconds); requests on open connections get 503."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            state.draining = True
            state.changes.notify()
            active = state.graph.active if state.graph else 0
            print(f"[ai00-trio] {signal.Signals(signum).name}: draining {active} running request(s), "
                  f"up to {state.config.listen.drain_seconds:g} s", file=sys.stderr, flush=True)
            return


async def run_server(config: Config, keep_serving: bool = False, faults: FaultPlan | None = None,
                     task_status=trio.TASK_STATUS_IGNORED) -> int:
    """Serves until SIGTERM/SIGINT (then drains); the exit code: 1 if the model failed to load
    (unless `keep_serving`), else 0. `faults`: the faults to inject (tests of recovery)."""
    state = ServerState(config)
    app = create_app(state)
    async with trio.open_nursery() as nursery:
        state.lifecycle = Lifecycle(state, nursery, faults)
        nursery.start_soon(_load_and_start, state, state.lifecycle, nursery, keep_serving)
        scheme = "https" if config.listen.tls else "http"
        print(f"[ai00-trio] listening on {scheme}://{config.listen.ip}:{config.listen.port}", file=sys.stderr, flush=True)
        task_status.started(state)
        await serve(app, hypercorn_config(config), shutdown_trigger=lambda: _until_stop_signal(state))
        print("[ai00-trio] stopped", file=sys.stderr, flush=True)
        nursery.cancel_scope.cancel()
    return state.exit_code
