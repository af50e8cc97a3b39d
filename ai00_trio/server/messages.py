"""What the actors send each other (see actors.py for the graph): a request's jobs, the events
a generation sends its HTTP handler, and the GPU executor's messages and replies."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import numpy as np
import trio

from ..engine.runtime import GREEDY, Sampling
from ..engine.state import State
from .failures import Failure
from .schemas import StateChoice

if TYPE_CHECKING:
    from .slot_io import SlotIO


# --- a generation's events, to its HTTP handler ----------------------------------------------
@dataclass
class Token:
    text: str
    token: int
    logprob: float
    top: list[tuple[int, float]]


@dataclass
class Done:
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0   # prompt tokens whose state came from the prefix cache


@dataclass
class Failed:
    error: Failure


# --- jobs, from the HTTP handlers ----------------------------------------------------------
@dataclass
class TextJob:
    prompt: str
    make_sampler: Callable[[], Any]      # -> object with .step(logits) -> (token, logprob, top)
    max_tokens: int
    stops: list[str]
    events: trio.MemorySendChannel
    state_id: StateChoice = None
    model_text: list[str] = field(default_factory=list)   # earlier assistant turns: penalty seeds
    grammar: Any = None                                   # a compiled Grammar constraining the output
    prompt_param: str = "messages"                        # the request field errors about the prompt name
    prompt_ids: list[int] | None = None  # the prompt as token ids (a stored conversation): `prompt` is not encoded
    cache_answer: bool = False  # cache the state after exactly the prompt and the answer (generation.py)
    created: float = field(default_factory=time.monotonic)  # when the request made it: time to first token


@dataclass
class SlotTask:
    """A request that needs a slot but samples nothing (AI00's chooses and states): the
    scheduler lends it a slot and awaits `run(io)`, which replies on `events` itself (an
    Failure it raises becomes a `Failed` there). The handler cancels `left` when its client is
    gone: the work stops where it is and the slot is freed."""
    run: Callable[[SlotIO], Awaitable[None]]
    events: trio.MemorySendChannel
    state_id: StateChoice = None
    left: trio.CancelScope = field(default_factory=trio.CancelScope)


@dataclass
class EmbedJob:
    inputs: list[str | list[int]]
    reply: trio.MemorySendChannel
    left: threading.Event = field(default_factory=threading.Event)  # set when the client is gone


@dataclass
class Job:
    """A job with its prompt encoded, from the tokenizer to the scheduler."""
    text: TextJob | SlotTask
    tokens: list[int]
    model_tokens: list[int]


# --- to the GPU executor -------------------------------------------------------------------
class Parked:
    """A prefix-cache state moved to host memory. The cache sees only `nbytes`, known at once;
    the executor fills `array` when it takes the `Park` and reads it at a `Load` (the channel
    keeps the order, so the Park always comes first). Nothing else touches `array`."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.array: np.ndarray | None = None


@dataclass
class Park:
    """Copy `state` into `parked.array` (in `State.to_host` layout), then let the GPU copy go."""
    state: State
    parked: Parked


@dataclass
class Load:
    slot: int
    state: State | Parked | np.ndarray | None  # host arrays are uploaded by the executor


@dataclass
class Submit:
    slot: int
    tokens: list[int]
    reply: trio.MemorySendChannel | None
    want: str = "last"  # or "pick": the token the GPU chooses as `sampling` says (a Pick), not the logits
    sampling: Sampling = GREEDY
    chain: int = 0      # with "pick": this many more choices fed straight back (see BatchRuntime.submit)
    end_tokens: frozenset[int] = frozenset()


@dataclass
class SlotSampling:
    """What the GPU's sampler keeps per slot: where its repetition penalties start, and its
    logit bias ({token: value} each; None leaves it as it is)."""
    slot: int
    penalties: dict[int, float] | None
    bias: dict[int, float] | None


@dataclass
class Save:
    """Reply with a copy of the slot's state and the tokens fed into it since its Load; with
    `host`, the state as a host array in `State.to_host` layout instead of a GPU copy."""
    slot: int
    reply: trio.MemorySendChannel
    host: bool = False


@dataclass
class Release:
    slot: int


@dataclass
class Embed:
    """Computed a batch step at a time between the generation's steps, so a long request delays
    the others by one step at most; once `left` is set its remaining steps are skipped."""
    token_lists: list[list[int]]
    reply: trio.MemorySendChannel
    left: threading.Event


@dataclass
class Embedded:
    """An embeddings reply: one vector per input, and the tokens they took (for usage)."""
    vectors: list[np.ndarray]
    tokens: int


@dataclass
class GpuCall:
    """`run()` on the step thread, between steps (Scheduler.run_alone sends it); its value goes to `reply`."""
    run: Callable[[], Any]
    reply: trio.MemorySendChannel


def unwrap(value):
    """A value from the executor; a `Failed` there becomes its error."""
    if isinstance(value, Failed):
        raise value.error
    return value
