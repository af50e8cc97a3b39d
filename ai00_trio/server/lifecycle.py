"""The model's life at runtime: the first load, reloads, unloads, and states attached or dropped
while serving. This module owns the swap of `ServerState.loaded` / `graph` / `reload`.

A *deployment* is a loaded model with its actor graph (its own executor, scheduler, queue and
prefix cache). A reload builds the new one beside the old, which keeps serving: the model is
read and uploaded in a worker thread, on a wgpu device of its own, so the build never touches
the serving executor's device. Then, in one step of the event loop, new requests start going
to the new deployment. The old one is retired once it has drained: its running and queued
requests finish on it, and so do requests that took it (`ready()`) and have not sent their jobs
yet (`lease`). GPU memory holds both models from the build until the drain ends. A build that
fails leaves the old deployment serving untouched and answers the admin caller with the error.

A new deployment starts with an empty prefix cache of its own, so no state computed by another
model, state set or LoRA set can be served; within one deployment each initial state has its
own part of the cache (`engine/scoped_cache.py`).

A lost device (its executor says so, once) takes the serving deployment out at once: the
server is "recovering" (503 device_lost), and the same reload request (its states and LoRAs as
recorded) is deployed again on a new device, retried with backoff until it serves, unless an
admin loads or unloads a model meanwhile. The lost deployment is retired as a replaced one is.
"""
from __future__ import annotations

import itertools
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import msgspec
import trio
from quart import g

from ..config import AdapterConfig, Config, ConfigError, LoraConfig, StateConfig, normalize_precision
from . import admin_schemas as a
from .actors import ActorGraph, run_actor_graph
from .engine_service import LoadedModel, load_service, read_state_file
from .errors import ApiError, bad_request, device_lost, unavailable
from .failures import DeviceLost
from .fault_injection import FaultPlan
from .paths import PathRefused, relative_to_root, resolve_inside
from .recovery import DeviceRecovery, retry_delays
from .state_choice import find_attached

if TYPE_CHECKING:
    from .app import ServerState

DRAIN_POLL_S = 0.05     # how often a retiring deployment is checked for its last request
LEASE_GRACE_S = 30.0    # an idle retiring deployment waits this long at most for leases to end


def _log(message: str) -> None:
    print(f"[ai00-trio] {message}", file=sys.stderr, flush=True)


def no_model_error(state: ServerState) -> ApiError:
    """The 503 for routes that need a model, saying why there is none."""
    if state.draining:
        return unavailable("the server is shutting down; retry on another or after its restart")
    if state.status == "recovering":
        return device_lost("the GPU device was lost; the server is re-creating it and reloading the model, "
                           "retry in a few seconds")
    if state.status == "unloaded":
        return unavailable("no model is loaded (it was unloaded); an admin can load one with POST /admin/models/load")
    if state.load_error:
        return unavailable(f"model failed to load: {state.load_error}")
    return unavailable("the model is still loading, retry shortly")


# --- leases: a request that took a deployment keeps it until the request's teardown ---------
def lease(graph: ActorGraph) -> None:
    held = g.setdefault("graph_leases", [])
    if all(graph is not other for other in held):
        held.append(graph)
        graph.leases += 1


def release_leases() -> None:
    for graph in g.pop("graph_leases", ()):
        graph.leases -= 1


# --- a reload request as the config it stands for ---------------------------------------------
def _adapter(option: str | dict[str, Any]) -> AdapterConfig:
    if option == "Auto":
        return AdapterConfig(Auto={})
    if option == "Economical":
        return AdapterConfig(Economical={})
    if isinstance(option, dict) and len(option) == 1:
        (kind, value), = option.items()
        if kind == "Manual" and isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return AdapterConfig(Manual=value)
        if kind == "Name" and isinstance(value, str):
            return AdapterConfig(name=value)
    raise bad_request('adapter: expected "Auto", "Economical", {"Manual": index} or {"Name": "part of a name"}',
                      param="adapter")


def config_for(base: Config, request: a.ReloadRequest) -> Config:
    """The server's config with the model part taken from `request`; every path is checked
    inside the models folder first (PathRefused: 403), every option validated (400)."""
    root = base.model.path
    resolve_inside(root, request.model_path, param="model_path")
    for lora in request.lora:
        resolve_inside(root, lora.path, param="lora")
    for entry in request.state:
        resolve_inside(root, entry.path, param="state")
    tokenizer = base.tokenizer
    if request.tokenizer_path and request.tokenizer_path != tokenizer.path:
        real = resolve_inside(root, request.tokenizer_path, param="tokenizer_path")
        tokenizer = msgspec.structs.replace(tokenizer, path=str(real))
    try:
        precision = normalize_precision(request.precision)
    except ConfigError as error:
        raise bad_request(str(error).replace("model.precision", "precision"), param="precision") from None
    if request.quant_type.lower() not in ("none", "int8", "nf4"):
        raise bad_request(f"quant_type: expected None, Int8 or NF4, got {request.quant_type!r}", param="quant_type")
    if request.quant < 0:
        raise bad_request("quant must be 0 or more (layers to quantize)", param="quant")
    for name in ("max_batch", "token_chunk_size"):
        if getattr(request, name) < 1:
            raise bad_request(f"{name} must be positive", param=name)
    model = msgspec.structs.replace(base.model, name=request.model_path, precision=precision, quant=request.quant,
                                    quant_type=request.quant_type, max_batch=request.max_batch,
                                    token_chunk_size=request.token_chunk_size)
    # the GPUs of several executors and the memory budget are the server's, not a reload's
    adapter = msgspec.structs.replace(_adapter(request.adapter), count=base.adapter.count,
                                      gpus=base.adapter.gpus if request.adapter == "Auto" else None,
                                      memory_bytes=base.adapter.memory_bytes)
    return msgspec.structs.replace(
        base, model=model, tokenizer=tokenizer, adapter=adapter,
        lora=[LoraConfig(path=lora.path, alpha=lora.alpha) for lora in request.lora],
        state=[StateConfig(path=s.path, name=s.name, id=s.id or None, default=s.default) for s in request.state])


# --- the deployments ---------------------------------------------------------------------------
@dataclass(eq=False)
class Deployment:
    loaded: LoadedModel
    graph: ActorGraph
    reload: a.ReloadRequest
    scope: trio.CancelScope  # cancelling it ends the graph's actors
    retired: trio.Event = field(default_factory=trio.Event)


class Lifecycle:
    """Started by the server (`run_server`): its deployments' actor graphs run in `nursery`."""

    def __init__(self, state: ServerState, nursery: trio.Nursery, faults: FaultPlan | None = None) -> None:
        self.state = state
        self.nursery = nursery
        self.faults = faults or FaultPlan()
        self.recovery = DeviceRecovery()
        self.current: Deployment | None = None
        self.retiring: list[Deployment] = []
        self._busy = trio.Lock()  # one load or unload at a time

    async def start(self) -> None:
        """The first load, from the config; raises what the build raised."""
        async with self._busy:
            await self._deploy(self.state.config)

    async def load(self, request: a.ReloadRequest) -> a.InfoResponse:
        """Build the model `request` names beside the serving one, then switch to it."""
        if self._busy.locked():
            raise ApiError(409, "another model load or unload is in progress; retry when it has finished",
                           "invalid_request_error", None, "load_in_progress")
        async with self._busy:
            config = config_for(self.state.config, request)
            previous = self.state.status
            self._set_status("loading")
            try:
                with trio.CancelScope(shield=True):  # once begun, a reload completes even if its caller leaves
                    await self._deploy(config)
            except PathRefused:
                raise
            except Exception as error:
                _log(f"reload of {request.model_path} failed, the serving model is kept: "
                     f"{type(error).__name__}: {error}")
                kept = "the lost device's model is still being rebuilt" if previous == "recovering" else \
                    "the previous model keeps serving" if self.current else "no model is loaded"
                raise bad_request(f"model {request.model_path!r} failed to load ({kept}): "
                                  f"{type(error).__name__}: {error}", param="model_path",
                                  code="model_load_failed") from None
            finally:
                if self.state.status == "loading":
                    self._set_status(previous)
            if request.tokenizer_path:  # as the caller named it (the config holds the resolved path)
                self.current.reload.tokenizer_path = request.tokenizer_path
            return self.info()

    async def unload(self) -> None:
        """Stop serving: new requests get 503 at once; returns when the running ones are done."""
        async with self._busy:
            old = self.current
            self.current = None
            state = self.state
            state.loaded = state.graph = state.reload = None
            state.load_error = None
            self._set_status("unloaded")
            if old is not None:
                _log(f"unloading {old.loaded.name}: draining {old.graph.active} running request(s)")
                self.retiring.append(old)
                self.nursery.start_soon(self._retire, old)  # even if this caller leaves, the model goes
                await old.retired.wait()

    def serve_as(self, name: str) -> None:
        """Serve the current model under `name` (a `[[models]]` entry's), on every executor."""
        if self.current is not None:
            for lane in self.current.graph.lanes:
                lane.loaded.name = name

    def retiring_figures(self) -> list[dict[str, Any]]:
        """For /api/status: the replaced models still finishing their requests."""
        return [{"model": old.loaded.name, "active": old.graph.active, "waiting": old.graph.queue_depth}
                for old in self.retiring]

    def info(self) -> a.InfoResponse:
        current = self.current
        if current is None:
            raise no_model_error(self.state)
        return a.InfoResponse(current.reload, a.ai00_model_info(current.loaded.model.info),
                              [a.StateInfo(s.id, s.name) for s in current.loaded.states.values()],
                              self.state.status)

    # --- states --------------------------------------------------------------------------
    async def attach_state(self, spec: a.StateSpec) -> a.StateInfo:
        """Read a state file (in a worker thread) and attach it to the serving model."""
        current = self.current
        if current is None:
            raise no_model_error(self.state)
        root = self.state.config.model.path
        real = resolve_inside(root, spec.path, param="path")
        try:
            host = await trio.to_thread.run_sync(read_state_file, current.loaded.model, real)
        except Exception as error:
            raise bad_request(f"{spec.path!r} is not a state file of the loaded model: {type(error).__name__}: "
                              f"{error}", param="path", code="invalid_state_file") from None
        if current is not self.current:  # the model changed while the file was read
            raise ApiError(409, "the model was replaced while the state was read; attach it again",
                           "invalid_request_error", None, "model_changed")
        state_id = spec.id or str(uuid.uuid4())
        try:
            uuid.UUID(state_id)
        except ValueError:
            raise bad_request(f"id {state_id!r} is not a UUID", param="id") from None
        entry = current.loaded.add_state(state_id, spec.name or Path(spec.path).stem, host, spec.default,
                                         relative_to_root(root, real))
        self._update_reload(current)
        _log(f"attached state {entry.name!r} ({entry.id}) from {entry.path}" + (" as the default" if entry.default
                                                                                   else ""))
        return a.StateInfo(entry.id, entry.name)

    def detach_state(self, key: str) -> a.StateInfo:
        """Drop a state by id or name; requests already running on it finish with it."""
        current = self.current
        if current is None:
            raise no_model_error(self.state)
        entry = find_attached(current.loaded, key)
        if entry is None:
            raise bad_request(f"no attached state has the id or name {key!r}", param="id", code="unknown_state")
        del current.loaded.states[entry.id]
        self._update_reload(current)
        _log(f"detached state {entry.name!r} ({entry.id})")
        return a.StateInfo(entry.id, entry.name)

    def record_loras(self, loaded: LoadedModel, replaced: set[str], applied: list[a.LoraSpec]) -> None:
        """The LoRAs applied while serving become the reload request's last `lora` entries
        (`replaced`: the paths listed before the change), so /api/models/info and a save show them."""
        current = self.current
        if current is None or current.loaded is not loaded:
            return
        kept = [spec for spec in current.reload.lora if spec.path not in replaced]
        current.reload = msgspec.structs.replace(current.reload, lora=kept + applied)
        self.state.reload = current.reload
        self.state.changes.notify()

    def _update_reload(self, current: Deployment) -> None:
        states = [a.StateSpec(s.path, s.id, s.name, s.default) for s in current.loaded.states.values()]
        current.reload = msgspec.structs.replace(current.reload, state=states)
        self.state.reload = current.reload
        self.state.changes.notify()

    # --- the swap ------------------------------------------------------------------------
    def _set_status(self, status: str) -> None:
        self.state.status = status
        self.state.changes.notify()

    async def _deploy(self, config: Config) -> None:
        started = time.perf_counter()
        executors = await trio.to_thread.run_sync(load_service, config)
        loaded = executors[0]
        self.state.load_seconds = time.perf_counter() - started
        graph, scope = await self.nursery.start(_host_graph, executors, config,
                                                self.state.metrics.first_token_observer(loaded.name),
                                                self._device_lost, self.faults.batch_wrapper())
        new = Deployment(loaded, graph, a.reload_request(config, loaded), scope)
        old, self.current = self.current, new
        state = self.state
        state.loaded, state.graph, state.reload = loaded, graph, new.reload
        state.load_error = None
        self._set_status("loaded")
        if old is not None:
            _log(f"now serving {loaded.name} (built in {time.perf_counter() - started:.1f}s); {old.loaded.name} "
                 f"finishes its {old.graph.active} running request(s)")
            self.retiring.append(old)
            self.nursery.start_soon(self._retire, old)

    def _device_lost(self, graph: ActorGraph, failure: DeviceLost) -> None:
        """On the event loop, from the serving graph's executor: stop routing to it, rebuild."""
        lost = self.current
        if lost is None or lost.graph is not graph:
            return  # a retiring deployment's device: what replaced it serves on
        state = self.state
        state.loaded = state.graph = None
        self.recovery.lost(failure.reason)
        self._set_status("recovering")
        _log(f"the GPU device of {lost.loaded.name} was lost ({failure.reason}); rebuilding it on a new device")
        self.nursery.start_soon(self._recover, lost)

    async def _recover(self, lost: Deployment) -> None:
        """Deploy `lost`'s reload request again until it serves (or an admin changed the model)."""
        delays = retry_delays()
        for attempt in itertools.count(1):
            async with self._busy:
                if self.current is not lost:
                    self.recovery.abandoned()
                    _log("device-loss recovery stopped: the model was replaced or unloaded meanwhile")
                    return
                _log(f"rebuilding {lost.loaded.name} after the device loss (attempt {attempt})")
                try:
                    self.faults.before_rebuild()
                    await self._deploy(config_for(self.state.config, lost.reload))
                except Exception as error:
                    self.recovery.rebuild_failed()
                    delay = next(delays)
                    _log(f"rebuild attempt {attempt} failed ({type(error).__name__}: {error}); "
                         f"retrying in {delay:g}s")
                else:
                    self.current.reload = self.state.reload = lost.reload  # as recorded, names and all
                    self.serve_as(lost.loaded.name)  # a [[models]] entry is served by its own name
                    seconds = self.recovery.recovered()
                    _log(f"recovered from the device loss: {lost.loaded.name} serves again "
                         f"({seconds:.1f}s after the loss)")
                    self.state.changes.notify()
                    return
            await trio.sleep(delay)

    async def _retire(self, old: Deployment) -> None:
        """End `old`'s actors once nothing runs or waits on it and no request holds it."""
        idle_since = None
        while True:
            idle = old.graph.idle()
            now = time.monotonic()
            idle_since = (idle_since or now) if idle else None
            if idle and (old.graph.leases <= 0 or now - idle_since > LEASE_GRACE_S):
                break
            await trio.sleep(DRAIN_POLL_S)
        old.scope.cancel()
        self.retiring.remove(old)
        old.retired.set()
        _log(f"retired {old.loaded.name}")


async def _host_graph(executors: list[LoadedModel], config: Config, on_first_token: Callable[[float], None] | None = None,
                      on_device_lost: Callable[[ActorGraph, DeviceLost], None] | None = None,
                      wrap_batch: Callable | None = None, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Runs one deployment's actor graph until its cancel scope (given with the graph) is cancelled."""
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            graph = await nursery.start(run_actor_graph, executors, config.model, config.cache, on_first_token,
                                        on_device_lost, wrap_batch)
            task_status.started((graph, scope))
