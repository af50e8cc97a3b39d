"""Fakes for running the actor graph in-process where the GPU is not the point: a batch runtime
that "counts" (after token t the next token is t + 1), a greedy sampler, and a LoadedModel on the
bytes tokenizer around them."""
from __future__ import annotations

import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import AsyncIterator

import numpy as np
import trio

from ai00_trio.config import CacheConfig, ModelConfig
from ai00_trio.engine.runtime import GREEDY, Pick, Sampling
from ai00_trio.grammar.errors import MaskDeadline
from ai00_trio.server.actors import ActorGraph, run_actors
from ai00_trio.server.engine_service import LoadedModel
from ai00_trio.server.messages import Done, Failed, TextJob, Token
from ai00_trio.tokenizer import load_tokenizer

N_VOCAB = 256


def counting_logits(token: int) -> np.ndarray:
    """The fake model's logits after `token`: `token + 1` (mod the vocabulary) wins."""
    row = np.full(N_VOCAB, -10.0, np.float32)
    row[(token + 1) % N_VOCAB] = 10.0
    return row


class FakeState:
    """A saved slot: the tokens it was fed (host-side, so `to_host` is a copy)."""

    def __init__(self, fed: list[int]) -> None:
        self.fed = list(fed)
        self.nbytes = 64

    def to_host(self) -> np.ndarray:
        return np.array(self.fed, np.float32)


@dataclass
class _Work:
    tokens: list[int]
    want: str
    chain: int
    end_tokens: frozenset[int]


@dataclass
class CountingBatch:
    """BatchRuntime's interface (what GpuExecutor calls). `gate`, when cleared, holds every step
    (up to 10 s); a Submit of `poison` raises as a wgpu validation error would. `log` records
    ("step", slots) and ("cancel", slot) in order, from the step thread."""
    model: object = field(default_factory=lambda: SimpleNamespace(state_from_host=lambda array: array))
    gate: threading.Event = field(default_factory=threading.Event)
    poison: int | None = None
    work: dict[int, _Work] = field(default_factory=dict)
    fed: dict[int, list[int]] = field(default_factory=dict)
    log: list[tuple[str, object]] = field(default_factory=list)
    submits: list[tuple[int, list[int], str, frozenset[int]]] = field(default_factory=list)
    loads: list[tuple[int, object]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.gate.set()

    @property
    def busy_slots(self) -> list[int]:
        return sorted(self.work)

    def load(self, slot: int, state) -> None:
        self.loads.append((slot, state))
        self.work.pop(slot, None)
        self.fed[slot] = []

    def submit(self, slot: int, tokens: list[int], want: str = "last", sampling: Sampling = GREEDY,
               chain: int = 0, end_tokens: frozenset[int] = frozenset()) -> None:
        if self.poison is not None and self.poison in tokens:
            raise RuntimeError("injected: validation error in a kernel")
        self.submits.append((slot, list(tokens), want, frozenset(end_tokens)))
        if tokens:
            self.work[slot] = _Work(list(tokens), want, chain, frozenset(end_tokens))

    def set_penalties(self, slot: int, penalties) -> None:
        pass

    def set_bias(self, slot: int, bias) -> None:
        pass

    def cancel(self, slot: int) -> None:
        self.log.append(("cancel", slot))
        self.work.pop(slot, None)

    def drop(self, slots: list[int]) -> None:
        for slot in slots:
            self.cancel(slot)

    def save(self, slot: int) -> FakeState:
        return FakeState(self.fed.get(slot, []))

    def step(self) -> dict[int, np.ndarray | Pick]:
        self.gate.wait(10)
        self.log.append(("step", self.busy_slots))
        outputs: dict[int, np.ndarray | Pick] = {}
        for slot, work in list(self.work.items()):
            self.fed.setdefault(slot, []).extend(work.tokens)
            following = (work.tokens[-1] + 1) % N_VOCAB
            if work.want == "pick":
                outputs[slot] = Pick(following, 0.0)
                if work.chain > 0 and following not in work.end_tokens:
                    self.work[slot] = _Work([following], "pick", work.chain - 1, work.end_tokens)
                    continue
            else:
                outputs[slot] = counting_logits(work.tokens[-1])
            del self.work[slot]
        return outputs


class HostGreedy:
    """A host sampler: the argmax (within a grammar's mask, if any)."""

    def step(self, logits: np.ndarray, mask: np.ndarray | None = None) -> tuple[int, float, list]:
        row = np.asarray(logits, np.float64)
        if mask is not None:
            row = np.where(mask, row, -np.inf)
        return int(np.argmax(row)), 0.0, []


class GpuGreedy(HostGreedy):
    """A sampler the GPU can run for it: after the first token the steps choose (a chain)."""
    gpu_sampling = GREEDY


class SlowGrammar:
    """A compiled grammar whose token mask never finishes by its deadline."""

    def start(self) -> "SlowGrammar":
        return self

    def allowed(self, trie, deadline: float) -> np.ndarray:
        raise MaskDeadline("the mask ran past its deadline")


def fake_loaded() -> LoadedModel:
    model = SimpleNamespace(info=SimpleNamespace(n_vocab=N_VOCAB),
                            ctx=SimpleNamespace(info=SimpleNamespace(adapter_type="DiscreteGPU")))
    return LoadedModel(model, load_tokenizer("bytes"), "counting", "counting.st", 0)


def text_job(prompt: str, events: trio.MemorySendChannel, max_tokens: int = 8, stops: list[str] | None = None,
             sampler=HostGreedy, grammar=None) -> TextJob:
    return TextJob(prompt, sampler, max_tokens, stops or [], events, grammar=grammar, prompt_param="prompt")


@asynccontextmanager
async def actor_graph(batch: CountingBatch, max_batch: int = 2, max_queue: int = 4,
                      cache: CacheConfig | None = None) -> AsyncIterator[ActorGraph]:
    """The real tokenizer, scheduler and GPU executor on `batch`, in this trio run."""
    options = ModelConfig(max_batch=max_batch, max_queue=max_queue, queue_timeout=30.0)
    async with trio.open_nursery() as nursery:
        graph = await nursery.start(run_actors, fake_loaded(), options, cache or CacheConfig(), batch,
                                    CountingBatch())
        try:
            yield graph
        finally:
            batch.gate.set()
            await graph.jobs.aclose()
            nursery.cancel_scope.cancel()


async def collect(events: trio.MemoryReceiveChannel) -> tuple[str, Done | Failed]:
    """A job's text and its last event (Done or Failed)."""
    parts = []
    with trio.fail_after(10):
        async for event in events:
            if isinstance(event, Token):
                parts.append(event.text)
            else:
                return "".join(parts), event
    raise AssertionError("the events ended without Done or Failed")
