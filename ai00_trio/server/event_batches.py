"""A generation's events as a stream handler reads them: a list at a time."""
from __future__ import annotations

from typing import AsyncIterator

import trio

from .messages import Done, Failed


async def event_batches(recv: trio.MemoryReceiveChannel, first, pause: float = 0.0) -> AsyncIterator[list]:
    """Every event already waiting, from `first` on, as one list, until Done or Failed: a decode
    that runs ahead of its reader leaves several, and a stream writes them in one chunk. With
    `pause`, each list after the first waits that long before it is taken, so a stream writes
    at most every `pause` seconds: each write costs tens of microseconds of Python (the ASGI
    server, h11, the socket), per client and token, while the first token is never held."""
    batch = [first]
    while True:
        while not isinstance(batch[-1], (Done, Failed)):
            try:
                batch.append(recv.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        yield batch
        if isinstance(batch[-1], (Done, Failed)):
            return
        if pause > 0:
            await trio.sleep(pause)
        try:
            batch = [await recv.receive()]
        except trio.EndOfChannel:
            return
