"""The slot a SlotTask is lent (AI00's chooses and states): its requests to the GPU executor."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import AsyncIterator

import numpy as np
import trio

from ..engine.scoped_cache import ScopedCache
from ..engine.state import State
from .generation import lookup_or_claim
from .messages import Load, Parked, Save, Submit, unwrap


@dataclass
class Prefix:
    """What `SlotIO.prefill` leaves: the logits after the tokens, the state after them (to load
    again: a GPU copy or a cached state) and how many of them the prefix cache served."""
    logits: np.ndarray
    state: State | Parked
    cached: int


class SlotIO:
    """Set the slot's state, feed it tokens, copy its state out."""

    def __init__(self, slot: int, executor: trio.MemorySendChannel, initial: State | np.ndarray | None,
                 cache: ScopedCache | None) -> None:
        self.slot = slot
        self.initial = initial  # the request's initial state (None: the model's zero state)
        self.cache = cache      # the initial state's prefix cache (None: a state the request brought)
        self._executor = executor
        self._send, self._recv = trio.open_memory_channel(math.inf)

    async def prefill(self, tokens: list[int]) -> Prefix:
        """Feed `tokens` (not empty) from the initial state, as a generation's prompt: from the
        longest cached prefix, claiming them so identical inputs are computed once, and caching
        the state after them."""
        cache = self.cache
        hit, claim = (None, None) if cache is None else await lookup_or_claim(cache, tokens)
        try:
            if hit is not None and hit.length == len(tokens):
                await self.load(hit.state)
                return Prefix(np.asarray(hit.logits), hit.state, hit.length)
            await self.load(hit.state if hit is not None else self.initial)
            cached = 0 if hit is None else hit.length
            logits = await self.feed(tokens[cached:])
            state = await self.save()
            if claim is not None:
                cache.complete(claim, state, np.asarray(logits, np.float32))
            return Prefix(logits, state, cached)
        finally:
            if claim is not None and not claim.done:
                cache.abandon(claim)

    async def load(self, state: State | np.ndarray | None) -> None:
        await self._executor.send(Load(self.slot, state))

    async def feed(self, tokens: list[int]) -> np.ndarray:
        """The logits after the last of `tokens` [n_vocab]."""
        await self._executor.send(Submit(self.slot, tokens, self._send))
        return unwrap(await self._recv.receive())

    async def feed_each(self, tokens: list[int]) -> AsyncIterator[np.ndarray]:
        """The logits after each of `tokens`, as the steps give them: [rows, n_vocab] at a time."""
        await self._executor.send(Submit(self.slot, tokens, self._send, "all"))
        rows = 0
        while rows < len(tokens):
            block = unwrap(await self._recv.receive())
            rows += len(block)
            yield block

    async def save(self) -> State:
        """A copy of the slot's state, on the GPU."""
        return await self._save(host=False)

    async def read(self) -> np.ndarray:
        """The slot's state as a host array (`State.to_host` layout), read by the executor."""
        return await self._save(host=True)

    async def _save(self, host: bool):
        reply_send, reply_recv = trio.open_memory_channel(1)
        await self._executor.send(Save(self.slot, reply_send, host))
        state, _ = unwrap(await reply_recv.receive())
        return state
