"""The actor graph. Every actor is a trio task owning its state; they talk over memory channels.

    HTTP handler ──TextJob/EmbedJob──▶ tokenizer ──Job──▶ scheduler ──Load/Submit/Save/Cancel──▶ GPU executor
         ▲                                                 │ (one generation task per request:        │
         └──────────── Token / Done / Failed events ◀──────┘  the sampler, stop strings, UTF-8)  ◀──logits─┘

- tokenizer: encodes prompts (long ones in a worker thread, so the event loop keeps streaming),
  rejects oversize prompts.
- scheduler: bounded waiting room (429 beyond it), slot assignment, prefix-state cache, and one
  generation task per request (its sampler actor). Client gone → its event channel breaks →
  the generation ends and its slot is freed before the next step.
- GPU executor: owns the device and the BatchRuntime; steps back to back while work exists, in a
  worker thread so the event loop keeps serving. A message or step that raises fails only the
  requests it was for (a `Failed` in their reply channels); the others go on. Slots whose tokens
  the GPU chooses run on by themselves (each choice is fed straight back, a chain); for the others it waits (briefly) after
  a step for their samplers, so every decoding slot gets its token every step.
"""
from __future__ import annotations

import math
import queue
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

import numpy as np
import trio

from ..config import CacheConfig, ModelConfig
from ..engine.batch import BatchRuntime, EmbedRun
from ..engine.cache_budget import CacheBudget, cache_budget, memory_available
from ..engine.prefix_cache import PrefixCache
from ..engine.runtime import GREEDY, Pick, Sampling
from ..engine.scoped_cache import ScopedCache
from ..engine.state import State
from ..grammar.errors import MaskDeadline
from .engine_service import LoadedModel
from .schemas import StateChoice
from .errors import ApiError, bad_request, internal_error, overloaded
from .state_choice import Start, choose_start
from .text import StopMatcher

SAMPLER_DEADLINE_S = 0.05     # how long a step waits for the samplers of the previous step
_STOP = object()              # ends the GPU executor's step thread
MASK_DEADLINE_S = 2.0         # a grammar mask slower than this fails its request (only that one)
CACHE_MIN_TOKENS = 8          # shorter prompts are not worth a cache entry


# --- messages ------------------------------------------------------------------------------
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
    error: ApiError


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
    cache_answer: bool = False  # cache the state after exactly the prompt and the answer (see _cache_answer)
    created: float = field(default_factory=time.monotonic)  # when the request made it: time to first token


@dataclass
class SlotTask:
    """A request that needs a slot but samples nothing (AI00's chooses and states): the
    scheduler lends it a slot and awaits `run(io)`, which replies on `events` itself (an
    ApiError it raises becomes a `Failed` there)."""
    run: Callable[["SlotIO"], Awaitable[None]]
    events: trio.MemorySendChannel
    state_id: StateChoice = None


@dataclass
class EmbedJob:
    inputs: list[str | list[int]]
    reply: trio.MemorySendChannel
    left: threading.Event = field(default_factory=threading.Event)  # set when the client is gone


@dataclass
class Job:
    text: TextJob | SlotTask
    tokens: list[int]
    model_tokens: list[int]


@dataclass
class Load:
    slot: int
    state: State | np.ndarray | None  # a host array (a cached state parked in host memory) is uploaded by the executor


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
    slot: int
    reply: trio.MemorySendChannel


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


# --- tokenizer -----------------------------------------------------------------------------
class TokenizerActor:
    def __init__(self, loaded: LoadedModel, max_prompt_tokens: int, max_embed_tokens: int) -> None:
        self.loaded = loaded
        self.max_prompt_tokens = max_prompt_tokens
        self.max_embed_tokens = max_embed_tokens

    async def run(self, inbox: trio.MemoryReceiveChannel, to_scheduler: trio.MemorySendChannel,
                  to_executor: trio.MemorySendChannel) -> None:
        async with inbox, to_scheduler:
            async for job in inbox:
                try:
                    if isinstance(job, EmbedJob):
                        await to_executor.send(Embed(await self._embed_tokens(job.inputs), job.reply, job.left))
                        continue
                    if isinstance(job, SlotTask):  # it brings its own tokens
                        await to_scheduler.send(Job(job, [], []))
                        continue
                    tokens = job.prompt_ids if job.prompt_ids is not None else await self.loaded.encode(job.prompt)
                    if not tokens:
                        tokens = [0] if self.loaded.eos_token == 0 else self.loaded.tokenizer.encode("\n")
                    self._check([tokens], job.prompt_param)
                    seeds = await self.loaded.encode("\n\n".join(job.model_text)) if job.model_text else []
                    await to_scheduler.send(Job(job, tokens, seeds))
                except ApiError as error:
                    reply = job.reply if isinstance(job, EmbedJob) else job.events
                    with trio.move_on_after(1):
                        try:
                            await reply.send(Failed(error))
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            pass

    async def _embed_tokens(self, inputs: list[str | list[int]]) -> list[list[int]]:
        lists, total = [], 0
        for item in inputs:  # stops encoding at the first input past the limit
            lists.append(list(item) if isinstance(item, list) else await self.loaded.encode(item))
            total += len(lists[-1])
            if total > self.max_embed_tokens:
                raise bad_request(f"the inputs have more than {self.max_embed_tokens} tokens together; this server "
                                  "embeds at most that many per request ([model] max_embed_tokens)",
                                  param="input", code="embedding_tokens_exceeded")
        self._check(lists, "input")
        return lists

    def _check(self, lists: list[list[int]], param: str) -> None:
        n_vocab = self.loaded.model.info.n_vocab
        for tokens in lists:
            if len(tokens) > self.max_prompt_tokens:
                raise bad_request(f"the prompt has {len(tokens)} tokens; this server accepts at most "
                                  f"{self.max_prompt_tokens}", param=param, code="context_length_exceeded")
            if any(not 0 <= t < n_vocab for t in tokens):
                raise bad_request(f"token ids must be in 0..{n_vocab - 1}", param=param)


# --- GPU executor --------------------------------------------------------------------------
class GpuExecutor:
    """Steps the batch back to back in one worker thread of its own, so a step starts as soon as
    the last one ends, while the event loop turns the last outputs into text (the two overlap:
    the step thread waits on the GPU without the GIL). Messages reach the thread through a
    thread-safe queue; outputs go back to the event loop as callbacks (`run_sync_soon`)."""

    def __init__(self, batch: BatchRuntime, embedder: BatchRuntime) -> None:
        self.batch = batch
        self.embedder = embedder  # its own slots, so embeddings never touch a generation's state
        # the step thread's own state
        self.replies: dict[int, trio.MemorySendChannel] = {}
        self.awaiting: set[int] = set()
        self.faults: dict[int, Failed] = {}  # slots whose Load failed: their Submit gets this
        self.embeds: deque[tuple[Embed, EmbedRun]] = deque()  # one at a time, a step between generation steps
        # figures for /api/status, written by the step thread only
        self.tokens_per_second = 0.0
        self.gpu_choices = 0     # tokens the GPU chose (Picks sent)
        self.logits_replies = 0  # logits rows sent to a host sampler

    def _handle(self, message, post: Callable) -> None:
        batch = self.batch
        if isinstance(message, Load):
            state = message.state
            if isinstance(state, np.ndarray):
                state = batch.model.state_from_host(state)
            batch.load(message.slot, state)
        elif isinstance(message, Submit):
            self.awaiting.discard(message.slot)
            if message.reply is not None:
                self.replies[message.slot] = message.reply
            if message.slot in self.faults:
                post([(self.replies.pop(message.slot), self.faults[message.slot])])
                return
            batch.submit(message.slot, message.tokens, message.want, message.sampling, message.chain,
                         message.end_tokens)
        elif isinstance(message, SlotSampling):
            if message.penalties is not None:
                batch.set_penalties(message.slot, message.penalties)
            if message.bias is not None:
                batch.set_bias(message.slot, message.bias)
        elif isinstance(message, Release):
            self.awaiting.discard(message.slot)
            self.replies.pop(message.slot, None)
            self.faults.pop(message.slot, None)
            batch.cancel(message.slot)
        elif isinstance(message, Save):
            post([(message.reply, (batch.save(message.slot), list(batch.fed[message.slot])))])
        elif isinstance(message, Embed):
            self.embeds.append((message, EmbedRun(self.embedder, message.token_lists)))
        elif isinstance(message, GpuCall):
            post([(message.reply, message.run())])

    def _fail(self, message, error: Exception, post: Callable) -> None:
        """A message's handler raised: fail the request it came from, nothing else."""
        failed = _fault(error, f"handling {type(message).__name__}")
        slot = getattr(message, "slot", None)
        if isinstance(message, (Save, Embed, GpuCall)):
            post([(message.reply, failed)])
        elif isinstance(message, Release):
            self.batch.cancel(message.slot)
        elif slot is not None:
            self.batch.cancel(slot)
            self.awaiting.discard(slot)
            reply = self.replies.pop(slot, None) or getattr(message, "reply", None)
            if reply is not None:
                post([(reply, failed)])
            else:
                self.faults[slot] = failed

    def _embed_step(self, post: Callable) -> None:
        """One step of the first embeddings request: it ends when done, failed or its client left."""
        message, run = self.embeds[0]
        if message.left.is_set():
            run.cancel()
            self.embeds.popleft()
            return
        try:
            run.advance()
        except Exception as error:
            run.cancel()
            self.embeds.popleft()
            post([(message.reply, _fault(error, "computing embeddings"))])
            return
        if run.done:
            self.embeds.popleft()
            post([(message.reply, Embedded(run.vectors, sum(map(len, message.token_lists))))])

    def _fail_step(self, slots: list[int], error: Exception, post: Callable) -> None:
        """A step raised: fail the requests of the slots it ran; the next step runs the others."""
        self.batch.drop(slots)
        failed = _fault(error, "running a step")
        self.awaiting.difference_update(slots)
        post([(self.replies.pop(slot), failed) for slot in slots if slot in self.replies])

    @staticmethod
    def _deliver(sends: list[tuple[trio.MemorySendChannel, Any]]) -> None:
        """On the event loop: hand each value to its channel (a request gone drops it)."""
        for reply, value in sends:
            try:
                reply.send_nowait(value)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    def _steps(self, inbox: queue.SimpleQueue, trio_token: trio.lowlevel.TrioToken) -> None:
        """The step thread: until it takes _STOP from the inbox."""
        batch = self.batch

        def post(sends: list) -> None:
            trio_token.run_sync_soon(self._deliver, sends)

        def take(message) -> bool:
            if message is _STOP:
                return False
            try:
                self._handle(message, post)
            except Exception as error:
                self._fail(message, error, post)
            return True

        while True:
            if not batch.busy_slots and not self.embeds and not take(inbox.get()):
                return
            # the samplers of the previous step reply with their next token
            deadline = time.monotonic() + SAMPLER_DEADLINE_S
            while self.awaiting and (left := deadline - time.monotonic()) > 0:
                try:
                    message = inbox.get(timeout=left)
                except queue.Empty:
                    break
                if not take(message):
                    return
            while True:
                try:
                    message = inbox.get_nowait()
                except queue.Empty:
                    break
                if not take(message):
                    return
            if self.embeds:
                self._embed_step(post)
            if not batch.busy_slots:
                continue
            started = time.monotonic()
            stepped = batch.busy_slots
            try:
                outputs = batch.step()
            except Exception as error:
                self._fail_step(stepped, error, post)
                continue
            if outputs:
                self.tokens_per_second = len(outputs) / max(time.monotonic() - started, 1e-6)
            busy = set(batch.busy_slots)  # chained GPU choices are queued already
            sends = []
            for slot, value in outputs.items():
                reply = self.replies.get(slot)
                if reply is None:
                    continue
                sends.append((reply, value))
                if slot not in busy:
                    self.awaiting.add(slot)
                if isinstance(value, Pick):
                    self.gpu_choices += 1
                else:
                    self.logits_replies += 1
            if sends:
                post(sends)

    async def run(self, inbox: trio.MemoryReceiveChannel) -> None:
        steps_inbox: queue.SimpleQueue = queue.SimpleQueue()

        async def forward() -> None:
            try:
                async with inbox:
                    async for message in inbox:
                        steps_inbox.put(message)
            finally:
                steps_inbox.put(_STOP)  # also when cancelled: the thread ends after its step

        async with trio.open_nursery() as nursery:
            nursery.start_soon(forward)
            await trio.to_thread.run_sync(self._steps, steps_inbox, trio.lowlevel.current_trio_token())
            nursery.cancel_scope.cancel()


# --- scheduler and generations -------------------------------------------------------------
class Scheduler:
    def __init__(self, loaded: LoadedModel, max_batch: int, max_queue: int, cache: PrefixCache,
                 queue_timeout: float = math.inf, on_first_token: Callable[[float], None] | None = None) -> None:
        self.loaded = loaded
        self.on_first_token = on_first_token  # hears each generation's seconds to its first token
        self.queue_timeout = queue_timeout
        self.free_slots = list(range(max_batch))
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.cache = cache
        self.waiting: list[Job] = []
        self._expiries: dict[int, trio.CancelScope] = {}  # id(job) -> its queue_timeout, while it waits
        self.active = 0
        self.prompt_tokens = 0     # totals for /metrics: prompts of generations, and tokens generated
        self.generated_tokens = 0
        self._held = 0                 # run_alone calls under way: no generation starts meanwhile
        self._idle = trio.Event()      # set when the last running generation ends
        self._executor: trio.MemorySendChannel | None = None
        self._resume: Callable[[], None] = lambda: None  # starts waiting jobs (set by run)

    @property
    def queue_depth(self) -> int:
        return len(self.waiting)

    async def run(self, inbox: trio.MemoryReceiveChannel, releases: trio.MemoryReceiveChannel,
                  executor: trio.MemorySendChannel, release_send: trio.MemorySendChannel) -> None:
        async with trio.open_nursery() as generations:
            self._executor = executor
            self._resume = lambda: self._start_waiting(generations, executor, release_send)

            async def watch_releases() -> None:
                async for slot in releases:
                    self.free_slots.append(slot)
                    self.active -= 1
                    if not self.active:
                        self._idle.set()
                    self._start_waiting(generations, executor, release_send)

            generations.start_soon(watch_releases)
            async with inbox:
                async for job in inbox:
                    if len(self.waiting) >= self.max_queue and (not self.free_slots or self._held):
                        try:
                            job.text.events.send_nowait(Failed(overloaded()))
                        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                            pass
                        continue
                    self.waiting.append(job)
                    self._start_waiting(generations, executor, release_send)
                    if job in self.waiting:
                        self._expiries[id(job)] = expiry = trio.CancelScope()
                        generations.start_soon(self._expire, job, expiry)
            generations.cancel_scope.cancel()

    async def _expire(self, job: Job, expiry: trio.CancelScope) -> None:
        """A job still waiting for a slot after queue_timeout gets a 503 (`expiry` is cancelled
        when it gets one)."""
        with expiry:
            await trio.sleep(self.queue_timeout)
        if not expiry.cancelled_caught:
            self._expiries.pop(id(job), None)
            self.waiting.remove(job)
            await _try_send(job.text.events, Failed(ApiError(
                503, f"no generation slot became free within {self.queue_timeout:g} s; retry later",
                "server_error", None, "queue_timeout", retry_after=1)))

    async def run_alone(self, work: Callable[[], Any]) -> Any:
        """`work()` run by the GPU executor while no generation runs: new jobs wait in the queue
        (bounded, and subject to queue_timeout) while the running ones finish; afterwards the
        prefix cache, whose states the change may have made stale, is emptied."""
        if self._executor is None:
            raise RuntimeError("the scheduler is not running")
        self._held += 1
        try:
            while self.active:
                self._idle = trio.Event()
                await self._idle.wait()
            reply_send, reply_recv = trio.open_memory_channel(1)
            with trio.CancelScope(shield=True):  # once sent, the change happens: see it through
                await self._executor.send(GpuCall(work, reply_send))
                return _unwrap(await reply_recv.receive())
        finally:
            self.cache.clear()
            self._held -= 1
            self._resume()

    def _start_waiting(self, nursery, executor, release_send) -> None:
        while self.waiting and self.free_slots and not self._held:
            job = self.waiting.pop(0)
            expiry = self._expiries.pop(id(job), None)
            if expiry is not None:
                expiry.cancel()
            slot = self.free_slots.pop()
            self.active += 1
            nursery.start_soon(self._generate, job, slot, executor, release_send)

    async def _initial_state(self, job: Job) -> Start:
        return await choose_start(self.loaded, job.text.state_id)

    async def _generate(self, job: Job, slot: int, executor: trio.MemorySendChannel,
                        release_send: trio.MemorySendChannel) -> None:
        events = job.text.events
        # unbounded: a chained decode sends every GPU choice without waiting (at most max_tokens)
        logits_send, logits_recv = trio.open_memory_channel(math.inf)
        try:
            if isinstance(job.text, SlotTask):
                await job.text.run(SlotIO(slot, executor, (await self._initial_state(job)).state))
            else:
                await self._run_generation(job, slot, executor, events, logits_send, logits_recv)
        except ApiError as error:
            await _try_send(events, Failed(error))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away
        finally:
            with trio.CancelScope(shield=True):
                await executor.send(Release(slot))
                await release_send.send(slot)
                await events.aclose()

    async def _run_generation(self, job, slot, executor, events, logits_send, logits_recv) -> None:
        text = job.text
        start_from = await self._initial_state(job)
        initial = start_from.state
        # each initial state has a cache of its own; a state a request brings is not cached
        cache = None if start_from.scope is None else ScopedCache(self.cache, start_from.scope)
        tokens = job.tokens
        self.prompt_tokens += len(tokens)
        hit, claim = (None, None) if cache is None else await self._lookup_or_claim(cache, tokens)
        prompt_state = None  # the state after the whole prompt, when it is at hand
        try:
            await executor.send(Load(slot, hit.state if hit is not None else initial))
            if hit is not None and hit.length == len(tokens):
                logits = np.array(hit.logits)
                prompt_state = hit.state
                await executor.send(Submit(slot, [], logits_send))
            else:
                await executor.send(Submit(slot, tokens[hit.length:] if hit else tokens, logits_send))
                logits = _unwrap(await logits_recv.receive())
                if claim is not None:
                    prompt_state, _ = await self._save(executor, slot)
                    cache.complete(claim, prompt_state, np.asarray(logits, np.float32))
        finally:
            if claim is not None and not claim.done:
                cache.abandon(claim)
        sampler = text.make_sampler()
        if hasattr(sampler, "init") and job.model_tokens:
            sampler.init(job.model_tokens)
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
                    raise bad_request("sampling failed: the logits contain NaN or infinity")
            else:
                mask = await self._grammar_mask(grammar) if grammar is not None else None
                token, logprob, top = sampler.step(logits, mask)
            if eos is not None and token == eos:
                finish = "stop"
                break
            generated.append(token)
            self.generated_tokens += 1
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
            if len(generated) >= text.max_tokens:
                break
            if on_gpu is None:
                await executor.send(Submit(slot, [token], logits_send))
            elif not chained:
                if on_gpu.penalized or on_gpu.biased:  # the penalties include the first token's
                    await executor.send(SlotSampling(slot, sampler.penalties() if on_gpu.penalized else None,
                                                     sampler.logit_bias() if on_gpu.biased else None))
                # the chain ends where this loop will: at the end of text or a token holding a stop
                ends = await self.loaded.stop_tokens(tuple(text.stops))
                ends |= {eos} if eos is not None else set()
                await executor.send(Submit(slot, [token], logits_send, "pick", on_gpu,
                                           chain=text.max_tokens - len(generated) - 1, end_tokens=ends))
                chained = True
            logits = _unwrap(await _receive(logits_recv))
        if chained:
            await executor.send(Release(slot))  # end the chain: the tokens it ran on past here are wasted
        if finish == "length":
            tail, _ = matcher.feed(decoder.flush())
            tail += matcher.flush()
            if tail:
                await events.send(Token(tail, -1, 0.0, []))
        start = hit.length if hit else 0
        if cache is not None and text.cache_answer and generated and len(tokens) + len(generated) >= CACHE_MIN_TOKENS:
            await self._cache_answer(cache, executor, slot, tokens + generated, len(tokens), start, prompt_state,
                                     logits, logits_send, logits_recv)
        elif cache is not None and len(generated) > 1 and len(tokens) + len(generated) >= CACHE_MIN_TOKENS:
            # the slot holds the prompt and the generated tokens (all but the last, or with a chain
            # what it had run on when it ended): a later turn of this conversation re-prefills
            # only what is new
            state, fed = await self._save(executor, slot)
            cache.insert(tokens[:start] + fed, state,
                              None if isinstance(logits, Pick) else np.asarray(logits, np.float32))
        await events.send(Done(finish, len(tokens), len(generated), start))

    async def _cache_answer(self, cache: ScopedCache, executor, slot: int, answer: list[int], prompt_length: int, start: int,
                            prompt_state, logits, logits_send, logits_recv) -> None:
        """Cache the state after exactly `answer` (the prompt, then every generated token), so a
        conversation that goes on from this answer prefills none of it. The slot holds one token
        less when the last one was never fed, and tokens past the answer when a GPU chain ran on
        before it was ended: then the slot is fed the rest, or recomputed from the prompt's state."""
        state, fed = await self._save(executor, slot)
        while True:  # choices of an ended chain, read back before it ended
            try:
                logits_recv.receive_nowait()
            except trio.WouldBlock:
                break
        held = answer[:start] + fed
        if held != answer[:len(held)]:
            if prompt_state is None:
                return
            await executor.send(Load(slot, prompt_state))
            held = answer[:prompt_length]
        if len(held) < len(answer):
            await executor.send(Submit(slot, answer[len(held):], logits_send))
            logits = _unwrap(await logits_recv.receive())
            state, _ = await self._save(executor, slot)
        cache.insert(answer, state, None if isinstance(logits, Pick) else np.asarray(logits, np.float32))

    async def _grammar_mask(self, grammar) -> np.ndarray:
        """Allowed next tokens, computed in a worker thread so a slow mask stalls no one else.
        The thread stops itself at the deadline (releasing the grammar's lock, which other
        requests with the same grammar share)."""
        trie = self.loaded.vocab_trie()
        try:
            return await trio.to_thread.run_sync(grammar.allowed, trie, time.monotonic() + MASK_DEADLINE_S,
                                                 abandon_on_cancel=True)
        except MaskDeadline:
            raise ApiError(500, f"the grammar's token mask took longer than {MASK_DEADLINE_S}s", "server_error",
                           "bnf_schema", "grammar_timeout") from None

    async def _lookup_or_claim(self, cache: ScopedCache, tokens: list[int]):
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

    async def _save(self, executor, slot: int) -> tuple[State, list[int]]:
        """A copy of the slot's state, and the tokens fed into it since its Load."""
        reply_send, reply_recv = trio.open_memory_channel(1)
        await executor.send(Save(slot, reply_send))
        return _unwrap(await reply_recv.receive())


class SlotIO:
    """The slot a SlotTask was lent: set its state, feed it tokens, copy its state out."""

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
        return _unwrap(await self._recv.receive())

    async def feed_each(self, tokens: list[int]) -> AsyncIterator[np.ndarray]:
        """The logits after each of `tokens`, as the steps give them: [rows, n_vocab] at a time."""
        await self._executor.send(Submit(self.slot, tokens, self._send, "all"))
        rows = 0
        while rows < len(tokens):
            block = _unwrap(await self._recv.receive())
            rows += len(block)
            yield block

    async def save(self) -> State:
        reply_send, reply_recv = trio.open_memory_channel(1)
        await self._executor.send(Save(self.slot, reply_send))
        state, _ = _unwrap(await reply_recv.receive())
        return state


def _fault(error: Exception, during: str) -> Failed:
    """An executor error as its requests see it; the traceback goes to the server's log."""
    print(f"[ai00-trio] GPU executor error while {during} (only its requests fail):", file=sys.stderr)
    traceback.print_exception(error, file=sys.stderr)
    return Failed(internal_error(f"the GPU executor failed while {during} ({type(error).__name__}: {error}); "
                                 "other requests were not affected, and this one can be retried"))


def _unwrap(value):
    """A value from the executor; a `Failed` there becomes its error."""
    if isinstance(value, Failed):
        raise value.error
    return value


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


async def _try_send(channel: trio.MemorySendChannel, message) -> None:
    try:
        with trio.move_on_after(1):
            await channel.send(message)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


# --- wiring --------------------------------------------------------------------------------
@dataclass
class ActorGraph:
    """The handles the HTTP layer uses: where to send jobs, and live figures for /api/status."""
    jobs: trio.MemorySendChannel
    scheduler: Scheduler
    executor: GpuExecutor
    leases: int = 0  # HTTP requests that took this graph and may still send it jobs (see lifecycle.py)
    cache_budget: CacheBudget | None = None


def state_bytes(state: State | np.ndarray) -> int:
    """A cached state's size: on the GPU (a State) or parked in host memory (`State.to_host`)."""
    return state.buffer.size if isinstance(state, State) else state.nbytes


async def run_actor_graph(loaded: LoadedModel, options: ModelConfig, cache_options: CacheConfig,
                          on_first_token: Callable[[float], None] | None = None,
                          task_status=trio.TASK_STATUS_IGNORED) -> None:
    max_batch, token_chunk_size, max_queue = options.max_batch, options.token_chunk_size, options.max_queue
    batch = BatchRuntime(loaded.model, max_batch=max_batch, token_chunk_size=token_chunk_size)
    budget = cache_budget(cache_options.gpu_bytes, cache_options.host_bytes,
                          loaded.model.ctx.info.adapter_type == "CPU", memory_available())
    cache = PrefixCache(gpu_budget=budget.gpu_bytes, host_budget=budget.host_bytes,
                        offload=lambda state: state.to_host(), size_of=state_bytes)
    jobs_send, jobs_recv = trio.open_memory_channel(max_queue)
    to_scheduler_send, to_scheduler_recv = trio.open_memory_channel(math.inf)
    to_executor_send, to_executor_recv = trio.open_memory_channel(math.inf)
    release_send, release_recv = trio.open_memory_channel(math.inf)
    tokenizer = TokenizerActor(loaded, options.max_prompt_tokens, options.max_embed_tokens)
    scheduler = Scheduler(loaded, max_batch, max_queue, cache, options.queue_timeout, on_first_token)
    embedder = BatchRuntime(loaded.model, max_batch=max_batch, token_chunk_size=token_chunk_size, keep_hidden=True)
    executor = GpuExecutor(batch, embedder)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tokenizer.run, jobs_recv, to_scheduler_send, to_executor_send.clone())
        nursery.start_soon(scheduler.run, to_scheduler_recv, release_recv, to_executor_send, release_send)
        nursery.start_soon(executor.run, to_executor_recv)
        task_status.started(ActorGraph(jobs_send, scheduler, executor, cache_budget=budget))
