"""The slot a SlotTask is lent (AI00's chooses and states): its requests to the GPU executor."""
from __future__ import annotations

import math
from typing import AsyncIterator

import numpy as np
import trio

from ..engine.state import State
from .messages import Load, Save, Submit, unwrap


class SlotIO:
    """Set the slot's state, feed it tokens, copy its state out."""

    def __init__(self, slot: int, executor: trio.MemorySendChannel, initial: State | np.ndarray | None) -> None:
        self.slot = slot
        self.initial = initial  # the request's initial state (None: the model's zero state)
        self._executor = executor
        self._send, self._recv = trio.open_memory_channel(math.inf)

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
