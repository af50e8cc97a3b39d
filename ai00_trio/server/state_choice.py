"""Which initial state a request starts from, and which prefix-cache scope its states go to.

A request's `state` is an attached state's id or name, or AI00's object forms: `{id}` /
`{name}` (an attached state), `{path}` (a state file inside the models folder) and `{data,
shape}` (an inline state tensor). None, "" and AI00's nil UUID mean the default state (or the
zero state when none is the default). A file or tensor named in a request serves that request
only, and its states are not cached: no later request could ask for the same scope.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trio

from ..engine.state import State
from .ai00_state import host_state_from_ai00
from .engine_service import InitialState, LoadedModel, read_state_file
from .failures import InvalidState, StatePathRefused, UnknownState
from .paths import PathRefused, relative_to_root, resolve_inside
from .schemas import StateChoice, StateRef

NIL_STATE_ID = "00000000-0000-0000-0000-000000000000"  # AI00's name for the default state
ZERO_SCOPE = 0  # the prefix-cache scope of requests that start from the model's zero state


@dataclass
class Start:
    """A request's initial state (None: the zero state) and its cache scope (None: not cached)."""
    state: State | np.ndarray | None
    scope: int | None


def _attached(entry: InitialState | None) -> Start | None:
    return None if entry is None else Start(entry.state, entry.scope)


def find_attached(loaded: LoadedModel, key: str) -> InitialState | None:
    """The attached state with id `key`, else the first one named `key`."""
    entry = loaded.states.get(key)
    return entry if entry is not None else next((s for s in loaded.states.values() if s.name == key), None)


def _default(loaded: LoadedModel) -> Start:
    return _attached(loaded.default_state()) or Start(None, ZERO_SCOPE)


def _unknown(what: str, loaded: LoadedModel) -> UnknownState:
    known = ", ".join(f"{s.name!r} ({s.id})" for s in loaded.states.values()) or "none are attached"
    return UnknownState(what, known)


def cache_scope(loaded: LoadedModel, choice: StateChoice) -> int | None:
    """The prefix-cache scope `choice` starts in, found without reading anything (None for a
    state file or tensor, or an unknown state): which lane holds a request's prefix."""
    if choice is None or choice in ("", NIL_STATE_ID):
        return _default(loaded).scope
    entry = find_attached(loaded, choice) if isinstance(choice, str) else None
    return None if entry is None else entry.scope


async def choose_start(loaded: LoadedModel, choice: StateChoice) -> Start:
    if choice is None or choice in ("", NIL_STATE_ID):
        return _default(loaded)
    if isinstance(choice, str):
        found = _attached(find_attached(loaded, choice))
        if found is None:
            raise _unknown(repr(choice), loaded)
        return found
    return await _from_ref(loaded, choice)


async def _from_ref(loaded: LoadedModel, ref: StateRef) -> Start:
    if ref.data is not None or ref.shape is not None:
        if ref.data is None or ref.shape is None:
            raise InvalidState("an inline state needs both data and shape")
        try:
            return Start(host_state_from_ai00(loaded.model, ref.data, ref.shape), None)
        except ValueError as error:
            raise InvalidState(f"state: {error}") from None
    for key in (ref.id, ref.name):
        if key and key != NIL_STATE_ID:
            found = _attached(find_attached(loaded, key))
            if found is not None:
                return found
    if ref.path:
        return await _from_file(loaded, ref.path)
    if ref.id not in (None, "", NIL_STATE_ID) or ref.name:
        raise _unknown(" ".join(f"{k} {v!r}" for k, v in (("id", ref.id), ("name", ref.name)) if v), loaded)
    return _default(loaded)


async def _from_file(loaded: LoadedModel, path: str) -> Start:
    try:
        real = resolve_inside(loaded.folder, path, param="state")
    except PathRefused as error:
        raise StatePathRefused(f"state.path: {error}") from None
    shown = relative_to_root(loaded.folder, real)
    for entry in loaded.states.values():  # an attached file is served from its scope
        if entry.path and entry.path == shown:
            return Start(entry.state, entry.scope)
    try:
        return Start(await trio.to_thread.run_sync(read_state_file, loaded.model, real), None)
    except Exception as error:  # a file that is no state file (of this model): the caller's error
        raise InvalidState(f"state.path {path!r}: not a state file of this model ({error})") from None
