"""How a stream takes its generation's events: everything waiting at once, and with a pause
([listen] stream_flush_ms) at most one write per pause, the first token never held."""
from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from ai00_trio.config import ConfigError, parse_config
from ai00_trio.server.event_batches import event_batches
from ai00_trio.server.messages import Done, Token

STEP_S = 0.007  # a token every 7 ms, as a batch of 64 on the H200 makes them


def batches_of(pause: float, tokens: int = 20) -> list[tuple[float, int]]:
    """(when, how many events) of each batch a stream takes, the tokens coming every STEP_S."""
    taken = []

    async def main() -> None:
        send, recv = trio.open_memory_channel(math.inf)

        async def generate() -> None:
            for i in range(1, tokens):
                await trio.sleep(STEP_S)
                send.send_nowait(Token("x", i, 0.0, []))
            send.send_nowait(Done("length", 3, tokens))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(generate)
            async for batch in event_batches(recv, Token("x", 0, 0.0, []), pause):
                taken.append((trio.current_time(), len(batch)))

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return taken


def test_without_a_pause_each_event_is_taken_as_it_comes():
    taken = batches_of(0.0)
    assert [n for _, n in taken] == [1] * 19 + [2]  # the last token and Done come together


def test_a_pause_groups_the_events_and_holds_no_first_token():
    taken = batches_of(0.05)
    assert taken[0] == (0.0, 1)  # the first token is written at once
    assert sum(n for _, n in taken) == 21 and len(taken) <= 4
    gaps = [b[0] - a[0] for a, b in zip(taken, taken[1:])]
    assert all(gap >= 0.05 - 1e-9 for gap in gaps), gaps


def test_the_pause_is_checked():
    assert parse_config("").listen.stream_flush_ms == 0
    with pytest.raises(ConfigError, match="stream_flush_ms"):
        parse_config("[listen]\nstream_flush_ms = -1\n")
