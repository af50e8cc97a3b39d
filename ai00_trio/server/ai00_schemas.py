"""Wire formats of AI00's own routes (`chooses`, `states`), in AI00's shapes, as msgspec Structs."""
from __future__ import annotations

from msgspec import Struct

from .schemas import StateChoice


class ChooseRequest(Struct, kw_only=True):
    """Rank `choices` as continuations of `input` (several input strings are joined)."""
    choices: list[str]
    input: str | list[str] | None = None
    calibrate: bool = False    # subtract each choice's perplexity with no input
    state: StateChoice = None  # initial state: id, name or AI00's object forms (nil UUID: the default)


class ChooseData(Struct):
    index: int                 # the choice's position in the request
    rank: int                  # 0: the most likely
    choice: str
    perplexity: float | None   # mean -ln p per token; null for an empty choice (infinite)
    object: str = "choice"


class ChooseResponse(Struct):
    model: str
    data: list[ChooseData]
    object: str = "list"


class StateRequest(Struct, kw_only=True):
    """The RNN state after `input` (several input strings are joined)."""
    input: str | list[str] | None = None
    state: StateChoice = None


class Duration(Struct, frozen=True):
    secs: int = 0
    nanos: int = 0


class TokenCounter(Struct):
    """AI00's usage; its `states` route reports zeros."""
    prompt: int = 0
    completion: int = 0
    total: int = 0
    duration: Duration = Duration()


class StateData(Struct):
    index: int
    data: list[float]
    shape: list[int]           # web-rwkv's [x, y, z, w], x varying fastest
    object: str = "states"


class StateResponse(Struct):
    model: str
    data: list[StateData]
    usage: TokenCounter
    object: str = "list"
