"""One request's decoding, in the slot the scheduler gave it.

`Generation.run` reads in the order a request goes: its initial state (state_choice.py) and
that state's prefix-cache scope; the prefill, from the longest cached prefix (claiming the
prompt, so identical prompts are computed once); the decoding loop (the host sampler or the
GPU's, a grammar's mask, stop strings, the UTF-8 stream, a GPU chain); the cache insert that
lets the conversation's next turn prefill only what is new; then `Done`. Everything that needs
the GPU is a message to the executor, answered on this generation's own channel.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import trio

from ..engine.prefix_cache import Claim, Hit, PrefixCache
from ..engine.runtime import Pick
from ..engine.scoped_cache import ScopedCache
from ..engine.state import State
from ..grammar.errors import MaskDeadline
from .engine_service import LoadedModel
from .failures import GrammarTimeout, SamplingFailed
from .messages import Done, Job, Load, Release, Save, SlotSampling, Submit, Token, unwrap
from .state_choice import choose_start
from .text import StopMatcher

MASK_DEADLINE_S = 2.0         # a grammar mask slower than this fails its request (only that one)
CACHE_MIN_TOKENS = 8          # shorter prompts are not worth a cache entry


@dataclass
class Tally:
    """Totals over every generation, for /metrics."""
    prompt_tokens: int = 0
    generated_tokens: int = 0


@dataclass
class Prefilled:
    logits: np.ndarray   # of the prompt's next token
    cached: int          # prompt tokens whose state came from the prefix cache
    state: State | np.ndarray | None  # the state after the whole prompt, when it is at hand


@dataclass
class Decoded:
    tokens: list[int]
    finish: str
    last: np.ndarray | Pick  # the output after the last token sampled


class Generation:
    def __init__(self, job: Job, slot: int, executor: trio.MemorySendChannel, cache: PrefixCache,
                 loaded: LoadedModel, tally: Tally, on_first_token: Callable[[float], None] | None,
                 max_seconds: float = 0.0) -> None:
        self.text = job.text
        self.prompt = job.tokens
        self.model_tokens = job.model_tokens
        self.slot = slot
        self.executor = executor
        self.cache = cache
        self.loaded = loaded
        self.tally = tally
        self.on_first_token = on_first_token
        # past this the decoding stops as at max_tokens: a client that never reads its stream, or
        # asks for more than it waits for, gives its slot back ([model] max_generation_seconds)
        self.deadline = job.text.created + max_seconds if max_seconds > 0 else math.inf
        # unbounded: a chained decode sends every GPU choice without waiting (at most max_tokens)
        self.outputs_send, self.outputs = trio.open_memory_channel(math.inf)

    async def run(self) -> None:
        start = await choose_start(self.loaded, self.text.state_id)
        # each initial state has a cache of its own; a state a request brings is not cached
        cache = None if start.scope is None else ScopedCache(self.cache, start.scope)
        self.tally.prompt_tokens += len(self.prompt)
        prefilled = await self._prefill(start.state, cache)
        decoded = await self._decode(prefilled.logits)
        if cache is not None and len(self.prompt) + len(decoded.tokens) >= CACHE_MIN_TOKENS:
            await self._remember(cache, prefilled, decoded)
        await self.text.events.send(Done(decoded.finish, len(self.prompt), len(decoded.tokens), prefilled.cached))

    async def _prefill(self, initial: State | np.ndarray | None, cache: ScopedCache | None) -> Prefilled:
        prompt = self.prompt
        hit, claim = (None, None) if cache is None else await lookup_or_claim(cache, prompt)
        state = None
        try:
            await self.executor.send(Load(self.slot, hit.state if hit is not None else initial))
            if hit is not None and hit.length == len(prompt):
                logits = np.array(hit.logits)
                state = hit.state
                await self.executor.send(Submit(self.slot, [], self.outputs_send))
            else:
                await self.executor.send(Submit(self.slot, prompt[hit.length:] if hit else prompt, self.outputs_send))
                logits = unwrap(await self.outputs.receive())
                if claim is not None:
                    state, _ = await self._save()
                    cache.complete(claim, state, np.asarray(logits, np.float32))
        finally:
            if claim is not None and not claim.done:
                cache.abandon(claim)
        return Prefilled(logits, hit.length if hit else 0, state)

    async def _decode(self, logits: np.ndarray) -> Decoded:
        text, slot, events = self.text, self.slot, self.text.events
        sampler = text.make_sampler()
        if hasattr(sampler, "init") and self.model_tokens:
            sampler.init(self.model_tokens)
        decoder = self.loaded.tokenizer.incremental_decoder()
        matcher = StopMatcher(text.stops)
        eos = self.loaded.eos_token
        grammar = text.grammar.start() if text.grammar is not None else None
        # After the first token the GPU chooses where it can: 16 bytes back per token, not the
        # logits, and each choice is fed straight back as the next token (a chain), so the
        # steps never wait for this task.
        on_gpu = getattr(sampler, "gpu_sampling", None) if grammar is None else None
        chained = False
        generated: list[int] = []
        finish = "length"
        while len(generated) < text.max_tokens:
            if isinstance(logits, Pick):
                token, logprob, top = logits.token, logits.logprob, []
                if not math.isfinite(logprob):
                    raise SamplingFailed("the logits contain NaN or infinity")
            else:
                mask = await grammar_mask(self.loaded, grammar) if grammar is not None else None
                token, logprob, top = sampler.step(logits, mask)
            if eos is not None and token == eos:
                finish = "stop"
                break
            generated.append(token)
            self.tally.generated_tokens += 1
            piece, stopped = matcher.feed(decoder.feed([token]))
            if grammar is not None:
                grammar = grammar.advance(self.loaded.tokenizer.token_bytes(token))
                if grammar.is_finished():     # nothing else can follow: the output is complete
                    piece += matcher.flush() + decoder.flush()
                    stopped = True
            await _send(events, Token(piece, token, logprob, top))
            if len(generated) == 1 and self.on_first_token is not None:
                self.on_first_token(time.monotonic() - text.created)
            if stopped:
                finish = "stop"
                break
            if len(generated) >= text.max_tokens or time.monotonic() > self.deadline:
                break
            if on_gpu is None:
                await self.executor.send(Submit(slot, [token], self.outputs_send))
            elif not chained:
                if on_gpu.penalized or on_gpu.biased:  # the penalties include the first token's
                    await self.executor.send(SlotSampling(slot, sampler.penalties() if on_gpu.penalized else None,
                                                          sampler.logit_bias() if on_gpu.biased else None))
                # the chain ends where this loop will: at the end of text or a token holding a stop
                ends = await self.loaded.stop_tokens(tuple(text.stops))
                ends |= {eos} if eos is not None else set()
                await self.executor.send(Submit(slot, [token], self.outputs_send, "pick", on_gpu,
                                                chain=text.max_tokens - len(generated) - 1, end_tokens=ends))
                chained = True
            logits = unwrap(await _receive(self.outputs))
        if chained:
            await self.executor.send(Release(slot))  # end the chain: the tokens it ran on past here are wasted
        if finish == "length":
            tail, _ = matcher.feed(decoder.flush())
            tail += matcher.flush()
            if tail:
                await events.send(Token(tail, -1, 0.0, []))
        return Decoded(generated, finish, logits)

    async def _remember(self, cache: ScopedCache, prefilled: Prefilled, decoded: Decoded) -> None:
        if self.text.cache_answer and decoded.tokens:
            await self._cache_answer(cache, prefilled, decoded)
        elif len(decoded.tokens) > 1:
            # the slot holds the prompt and the generated tokens (all but the last, or with a chain
            # what it had run on when it ended): a later turn of this conversation re-prefills
            # only what is new
            state, fed = await self._save()
            cache.insert(self.prompt[:prefilled.cached] + fed, state, _host_logits(decoded.last))

    async def _cache_answer(self, cache: ScopedCache, prefilled: Prefilled, decoded: Decoded) -> None:
        """Cache the state after exactly the prompt and every generated token, so a conversation
        that goes on from this answer prefills none of it. The slot holds one token less when
        the last one was never fed, and tokens past the answer when a GPU chain ran on before it
        was ended: then the slot is fed the rest, or recomputed from the prompt's state."""
        answer = self.prompt + decoded.tokens
        logits = decoded.last
        state, fed = await self._save()
        while True:  # choices of an ended chain, read back before it ended
            try:
                self.outputs.receive_nowait()
            except trio.WouldBlock:
                break
        held = answer[:prefilled.cached] + fed
        if held != answer[:len(held)]:
            if prefilled.state is None:
                return
            await self.executor.send(Load(self.slot, prefilled.state))
            held = answer[:len(self.prompt)]
        if len(held) < len(answer):
            await self.executor.send(Submit(self.slot, answer[len(held):], self.outputs_send))
            logits = unwrap(await self.outputs.receive())
            state, _ = await self._save()
        cache.insert(answer, state, _host_logits(logits))

    async def _save(self) -> tuple[State, list[int]]:
        """A copy of the slot's state, and the tokens fed into it since its Load."""
        reply_send, reply_recv = trio.open_memory_channel(1)
        await self.executor.send(Save(self.slot, reply_send))
        return unwrap(await reply_recv.receive())


async def grammar_mask(loaded: LoadedModel, grammar) -> np.ndarray:
    """Allowed next tokens, computed in a worker thread so a slow mask stalls no one else.
    The thread stops itself at the deadline (releasing the grammar's lock, which other
    requests with the same grammar share)."""
    trie = loaded.vocab_trie()
    try:
        return await trio.to_thread.run_sync(grammar.allowed, trie, time.monotonic() + MASK_DEADLINE_S,
                                             abandon_on_cancel=True)
    except MaskDeadline:
        raise GrammarTimeout(MASK_DEADLINE_S) from None


async def lookup_or_claim(cache: ScopedCache, tokens: list[int]) -> tuple[Hit | None, Claim | None]:
    """The longest cached prefix, and a claim when this request must compute the prompt.
    If an identical prompt is being computed right now, wait for it instead."""
    if len(tokens) < CACHE_MIN_TOKENS:
        return cache.lookup(tokens), None
    while True:
        hit = cache.lookup(tokens)
        if hit is not None and hit.length == len(tokens):
            return hit, None
        claim = cache.claim(tokens)
        if claim.owner:
            return hit, claim
        finished = trio.Event()
        claim.add_done_callback(lambda _result: finished.set())
        await finished.wait()


def _host_logits(output: np.ndarray | Pick) -> np.ndarray | None:
    """What a cache entry keeps of the output after its tokens (a GPU choice keeps nothing)."""
    return None if isinstance(output, Pick) else np.asarray(output, np.float32)


async def _send(channel: trio.MemorySendChannel, value) -> None:
    """Send at once when there is room (a token each step per request: no trip through the
    scheduler), else wait for room."""
    try:
        channel.send_nowait(value)
    except trio.WouldBlock:
        await channel.send(value)


async def _receive(channel: trio.MemoryReceiveChannel):
    """The next value: at once when one is waiting (a chain can be steps ahead), else awaited."""
    try:
        return channel.receive_nowait()
    except trio.WouldBlock:
        return await channel.receive()
