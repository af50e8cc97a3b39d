"""The GPU executor actor in-process, on a fake batch runtime (the GPU is not the point here):
a message or step that raises fails only the requests it was for, and the executor serves on."""
from __future__ import annotations

import threading
import time

import numpy as np
import trio

from ai00_trio.server.actors import GpuExecutor
from ai00_trio.server.failure_errors import api_error
from ai00_trio.server.failures import ExecutorFault
from ai00_trio.server.messages import Embed, Embedded, Failed, Load, Release, Save, Submit


class FakeBatch:
    """Each step answers every submitted slot with [slot]; slots in `poisoned` make it raise."""

    def __init__(self) -> None:
        self.work: dict[int, int] = {}
        self.poisoned: set[int] = set()

    @property
    def busy_slots(self) -> list[int]:
        return sorted(self.work)

    def load(self, slot: int, state) -> None:
        if state == "corrupt":
            raise ValueError("state belongs to another model")

    def submit(self, slot: int, tokens, want="last", sampling=None, chain=0, end_tokens=frozenset()) -> None:
        self.work[slot] = len(tokens)

    def cancel(self, slot: int) -> None:
        self.work.pop(slot, None)

    def drop(self, slots) -> None:
        for slot in slots:
            self.cancel(slot)

    def save(self, slot: int):
        raise RuntimeError("out of GPU memory")

    def step(self) -> dict[int, np.ndarray]:
        if self.poisoned & set(self.work):
            raise RuntimeError("injected: validation error in a kernel")
        out = {slot: np.array([float(slot)]) for slot in self.work}
        self.work.clear()
        return out


async def ask(inbox, message_for):
    reply_send, reply_recv = trio.open_memory_channel(8)
    await inbox.send(message_for(reply_send))
    with trio.fail_after(5):
        return await reply_recv.receive()


def test_faults_fail_only_their_requests():
    batch = FakeBatch()
    executor = GpuExecutor(batch, FakeBatch())

    async def main() -> None:
        inbox_send, inbox_recv = trio.open_memory_channel(100)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(executor.run, inbox_recv)
            first = await ask(inbox_send, lambda r: Submit(0, [1, 2], r))
            assert first.tolist() == [0.0]

            batch.poisoned = {1}              # a step that raises: only slot 1's request fails
            failed = await ask(inbox_send, lambda r: Submit(1, [5], r))
            assert isinstance(failed, Failed) and isinstance(failed.error, ExecutorFault)
            assert "running a step" in failed.error.message and "injected" in failed.error.message
            http = api_error(failed.error)  # as a route answers it
            assert http.status == 500 and http.body.error.type == "internal_error"
            assert http.body.error.code == "executor_fault"
            batch.poisoned = set()
            await inbox_send.send(Release(1))
            assert (await ask(inbox_send, lambda r: Submit(0, [3], r))).tolist() == [0.0]

            await inbox_send.send(Load(2, "corrupt"))  # a failed Load: that slot's Submit fails
            failed = await ask(inbox_send, lambda r: Submit(2, [7], r))
            assert isinstance(failed, Failed) and "Load" in failed.error.message
            await inbox_send.send(Release(2))
            assert (await ask(inbox_send, lambda r: Submit(2, [7], r))).tolist() == [2.0]

            failed = await ask(inbox_send, lambda r: Save(0, r))  # and a failed Save
            assert isinstance(failed, Failed) and "out of GPU memory" in failed.error.message
            assert (await ask(inbox_send, lambda r: Submit(3, [1], r))).tolist() == [3.0]
            await inbox_send.aclose()

    trio.run(main)


class FakeEmbedder:
    """`chunk` tokens per slot a step, each step taking `seconds`; a slot's hidden state is its
    number + 1 in every component."""

    max_batch = 2

    def __init__(self, chunk: int = 4, seconds: float = 0.005) -> None:
        self.chunk, self.seconds = chunk, seconds
        self.work: dict[int, int] = {}
        self.hidden: dict[int, np.ndarray] = {}
        self.steps = 0

    @property
    def busy_slots(self) -> list[int]:
        return sorted(s for s, n in self.work.items() if n)

    def reset(self, slot: int) -> None:
        self.work.pop(slot, None)

    def submit(self, slot: int, tokens) -> None:
        self.work[slot] = len(tokens)

    def cancel(self, slot: int) -> None:
        self.work.pop(slot, None)

    def step(self) -> dict:
        time.sleep(self.seconds)
        self.steps += 1
        for slot in self.busy_slots:
            self.work[slot] = max(0, self.work[slot] - self.chunk)
            self.hidden[slot] = np.full(3, slot + 1.0)
        return {}


def test_embeddings_run_a_step_at_a_time_between_generation_steps():
    """A long embeddings request (3 inputs x 200 tokens: 100 steps) neither delays a generation
    step by more than one of its steps nor runs on once its client has left."""
    embedder = FakeEmbedder()
    executor = GpuExecutor(FakeBatch(), embedder)

    async def main() -> None:
        inbox_send, inbox_recv = trio.open_memory_channel(100)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(executor.run, inbox_recv)
            lists = [[1] * 200, [2] * 200, [3] * 200]
            reply_send, reply_recv = trio.open_memory_channel(1)
            await inbox_send.send(Embed(lists, reply_send, threading.Event()))
            await trio.sleep(0.05)
            started = embedder.steps
            assert 0 < started < 100
            assert (await ask(inbox_send, lambda r: Submit(0, [1], r))).tolist() == [0.0]
            assert embedder.steps - started <= 3, "the generation waited for the embeddings"
            with trio.fail_after(10):
                done = await reply_recv.receive()
            assert isinstance(done, Embedded) and done.tokens == 600 and embedder.steps == 100
            assert len(done.vectors) == 3 and np.allclose(done.vectors, 3 ** -0.5)  # unit length

            left = threading.Event()
            reply_send, reply_recv = trio.open_memory_channel(1)
            await inbox_send.send(Embed(lists, reply_send, left))
            await trio.sleep(0.05)
            left.set()                        # the client is gone: its other steps never run
            await trio.sleep(0.05)
            stopped = embedder.steps
            await trio.sleep(0.2)
            assert stopped < 200 and embedder.steps == stopped and not embedder.busy_slots
            assert (await ask(inbox_send, lambda r: Submit(1, [1], r))).tolist() == [1.0]
            with trio.move_on_after(0.1):
                await reply_recv.receive()
                raise AssertionError("a cancelled embedding answered")
            await inbox_send.aclose()

    trio.run(main)
