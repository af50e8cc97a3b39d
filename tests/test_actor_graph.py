"""The actor graph in-process (tokenizer, scheduler, generations, GPU executor) on a fake batch
runtime that counts: after token t comes t + 1, so every answer is known in advance."""
from __future__ import annotations

import math

import numpy as np
import trio

from actor_fakes import CountingBatch, GpuGreedy, SlowGrammar, actor_graph, collect, text_job
from ai00_trio.config import CacheConfig
from ai00_trio.server.failure_errors import api_error
from ai00_trio.server.failures import ExecutorFault, GrammarTimeout, Overloaded
from ai00_trio.server.messages import Done, Failed, Token


def channel():
    return trio.open_memory_channel(math.inf)


def test_a_full_waiting_room_answers_429():
    batch = CountingBatch()
    batch.gate.clear()  # the first job holds the only slot until the gate opens

    async def main() -> None:
        async with actor_graph(batch, max_batch=1, max_queue=1) as graph:
            streams = []
            for _ in range(3):
                send, recv = channel()
                await graph.jobs.send(text_job("a", send, max_tokens=3))
                streams.append(recv)
            text, last = await collect(streams[2])
            assert text == "" and isinstance(last, Failed) and isinstance(last.error, Overloaded)
            http = api_error(last.error)
            assert (http.status, http.body.error.code, http.retry_after) == (429, "queue_full", 1)
            batch.gate.set()
            for recv in streams[:2]:  # the one running and the one waiting both finish
                text, last = await collect(recv)
                assert text == "bcd" and isinstance(last, Done) and last.finish_reason == "length"

    trio.run(main)


def test_a_client_that_leaves_frees_its_slot_at_the_next_step():
    batch = CountingBatch()

    async def main() -> None:
        async with actor_graph(batch, max_batch=1) as graph:
            send, leaving = channel()
            await graph.jobs.send(text_job("a", send, max_tokens=100_000))
            with trio.fail_after(10):
                first = await leaving.receive()
            assert isinstance(first, Token) and first.text == "b"
            batch.log.append(("left", None))
            leaving.close()
            send, recv = channel()  # it needs the only slot
            await graph.jobs.send(text_job("x", send, max_tokens=2))
            text, last = await collect(recv)
            assert text == "yz" and isinstance(last, Done)
        after = batch.log[batch.log.index(("left", None)):]
        freed = after.index(("cancel", 0))
        assert sum(1 for entry in after[:freed] if entry == ("step", [0])) <= 1  # at most the step under way

    trio.run(main)


def test_a_chained_client_that_leaves_frees_its_slot():
    batch = CountingBatch()

    async def main() -> None:
        async with actor_graph(batch, max_batch=1) as graph:
            send, leaving = channel()
            await graph.jobs.send(text_job("a", send, max_tokens=100_000, sampler=GpuGreedy))
            with trio.fail_after(10):
                await leaving.receive()
            leaving.close()
            send, recv = channel()
            await graph.jobs.send(text_job("x", send, max_tokens=2))
            text, last = await collect(recv)
            assert text == "yz" and isinstance(last, Done)

    trio.run(main)


def test_a_chain_stops_at_a_stop_string():
    batch = CountingBatch()

    async def main() -> None:
        async with actor_graph(batch) as graph:
            send, recv = channel()
            await graph.jobs.send(text_job("a", send, max_tokens=50, stops=["e"], sampler=GpuGreedy))
            text, last = await collect(recv)
            assert text == "bcd" and isinstance(last, Done)
            assert (last.finish_reason, last.completion_tokens) == ("stop", 4)

    trio.run(main)
    picks = [s for s in batch.submits if s[2] == "pick"]
    assert len(picks) == 1 and ord("e") in picks[0][3]  # the chain was told where to end
    assert batch.fed[picks[0][0]] == list(b"abcd")  # and never ran past the stop


def test_a_grammar_mask_timeout_fails_only_its_request():
    batch = CountingBatch()

    async def main() -> None:
        async with actor_graph(batch) as graph:
            slow_send, slow = channel()
            await graph.jobs.send(text_job("a", slow_send, grammar=SlowGrammar()))
            send, recv = channel()
            await graph.jobs.send(text_job("k", send, max_tokens=4))
            _, last = await collect(slow)
            assert isinstance(last, Failed) and isinstance(last.error, GrammarTimeout)
            http = api_error(last.error)
            assert (http.status, http.body.error.code, http.body.error.param) == (500, "grammar_timeout", "bnf_schema")
            text, last = await collect(recv)
            assert text == "lmno" and isinstance(last, Done)

    trio.run(main)


def test_an_executor_fault_leaves_the_other_requests_running():
    batch = CountingBatch(poison=ord("x"))  # a Submit feeding "x" raises in the executor

    async def main() -> None:
        async with actor_graph(batch) as graph:
            send, recv = channel()
            await graph.jobs.send(text_job("a", send, max_tokens=20))
            doomed_send, doomed = channel()
            await graph.jobs.send(text_job("x", doomed_send))
            _, last = await collect(doomed)
            assert isinstance(last, Failed) and isinstance(last.error, ExecutorFault)
            assert "handling Submit" in last.error.message and "injected" in last.error.message
            assert api_error(last.error).status == 500
            text, last = await collect(recv)
            assert text == "bcdefghijklmnopqrstu" and isinstance(last, Done) and last.finish_reason == "length"
            send, recv = channel()  # the failed request's slot serves again
            await graph.jobs.send(text_job("k", send, max_tokens=2))
            text, last = await collect(recv)
            assert text == "lm" and isinstance(last, Done)

    trio.run(main)


def test_a_state_parked_in_host_memory_by_the_executor_serves_the_next_request():
    batch = CountingBatch()
    prompt = "abcdefgh"  # long enough to be cached

    async def main() -> None:
        async with actor_graph(batch, cache=CacheConfig(gpu_bytes=0, host_bytes=1 << 20)) as graph:
            for cached in (0, len(prompt)):
                send, recv = channel()
                await graph.jobs.send(text_job(prompt, send, max_tokens=1))
                text, last = await collect(recv)
                assert text == "i" and isinstance(last, Done) and last.cached_tokens == cached
            assert graph.lanes[0].scheduler.cache.stats().host_bytes > 0

    trio.run(main)
    uploaded = [state for _, state in batch.loads if isinstance(state, np.ndarray)]
    assert len(uploaded) == 1 and uploaded[0].tolist() == list(map(float, b"abcdefgh"))
