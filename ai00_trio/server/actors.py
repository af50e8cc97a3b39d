"""The actor graph. Every actor is a trio task owning its state; they talk over memory channels
(the messages are in messages.py).

    HTTP handler ──TextJob/EmbedJob──▶ tokenizer ──Job──▶ scheduler ──Load/Submit/Save/Release──▶ GPU executor
         ▲                                                 │ (one Generation per request,             │
         └──────────── Token / Done / Failed events ◀──────┘  generation.py)              ◀──logits/picks─┘

- tokenizer: encodes prompts (long ones in a worker thread, so the event loop keeps streaming),
  rejects oversize prompts, and hands each job to a lane (`pick_lane`). A lane is one scheduler
  and one GPU executor with their own device, copy of the weights, slots and prefix cache; a
  model has one lane per executor (`[adapter] gpus` / `count`), usually one.
- scheduler: bounded waiting room (429 beyond it, 503 after queue_timeout), slot assignment,
  `run_alone`, the totals for /metrics. Each admitted job runs in its slot as a task: a
  `Generation` (generation.py: prefill with the prefix cache, sampler, grammar, stop strings,
  UTF-8, GPU chains, cache insert) or a `SlotTask` (slot_io.py). Client gone → its event
  channel breaks → the task ends and its slot is freed before the next step.
- GPU executor: owns the device and the BatchRuntime; steps back to back while work exists, in a
  worker thread so the event loop keeps serving. A message or step that raises fails only the
  requests it was for (a `Failed` in their reply channels); the others go on. Slots whose tokens
  the GPU chooses run on by themselves (each choice is fed straight back, a chain); for the
  others it waits (briefly) after a step for their samplers, so every decoding slot gets its
  token every step. A lost device is no ordinary fault: the executor fails every request it
  holds and everything sent to it later with `DeviceLost`, never touches the device again, and
  tells its owner (`on_device_lost`), who rebuilds the model on a new device (lifecycle.py).
"""
from __future__ import annotations

import contextlib
import math
import queue
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import trio

from ..config import CacheConfig, ModelConfig
from ..engine.batch import BatchRuntime, EmbedRun
from ..engine.cache_budget import CacheBudget, cache_budget, memory_available
from ..engine.prefix_cache import PrefixCache
from ..engine.runtime import Pick
from ..engine.scoped_cache import ScopedCache
from ..engine.state import State
from ..gpu.device_lost import is_device_lost
from .engine_service import LoadedModel
from .failures import (DeviceLost, EmbeddingTokensExceeded, ExecutorFault, Failure, Overloaded, PromptTooLong,
                       QueueTimeout, TokenOutOfRange)
from .generation import Generation, Tally
from .messages import (Embed, Embedded, EmbedJob, Failed, GpuCall, Job, Load, Park, Parked, Release, Save,
                       SlotSampling, SlotTask, Submit, unwrap)
from .slot_io import SlotIO
from .state_choice import cache_scope, choose_start

SAMPLER_DEADLINE_S = 0.05     # how long a step waits for the samplers of the previous step
_STOP = object()              # ends the GPU executor's step thread
EMBED_SLOTS = 16              # slots of the embeddings runtime (see run_actor_graph)



# --- tokenizer -----------------------------------------------------------------------------
class TokenizerActor:
    def __init__(self, loaded: LoadedModel, max_prompt_tokens: int, max_embed_tokens: int) -> None:
        self.loaded = loaded
        self.max_prompt_tokens = max_prompt_tokens
        self.max_embed_tokens = max_embed_tokens

    async def run(self, inbox: trio.MemoryReceiveChannel, lanes: list[Lane]) -> None:
        """Encodes each job, then hands it to a lane's scheduler (`pick_lane`)."""
        async with inbox, contextlib.AsyncExitStack() as closing:
            for lane in lanes:
                closing.push_async_callback(lane.to_scheduler.aclose)
            async for job in inbox:
                try:
                    if isinstance(job, EmbedJob):
                        tokens = await self._embed_tokens(job.inputs)
                        await pick_lane(lanes).to_executor.send(Embed(tokens, job.reply, job.left))
                        continue
                    if isinstance(job, SlotTask):  # it brings its own tokens
                        await pick_lane(lanes).to_scheduler.send(Job(job, [], []))
                        continue
                    tokens = job.prompt_ids if job.prompt_ids is not None else await self.loaded.encode(job.prompt)
                    if not tokens:
                        tokens = [0] if self.loaded.eos_token == 0 else self.loaded.tokenizer.encode("\n")
                    self._check([tokens], job.prompt_param)
                    seeds = await self.loaded.encode("\n\n".join(job.model_text)) if job.model_text else []
                    lane = pick_lane(lanes, tokens, cache_scope(self.loaded, job.state_id))
                    await lane.to_scheduler.send(Job(job, tokens, seeds))
                except Failure as error:
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
                raise EmbeddingTokensExceeded(self.max_embed_tokens)
        self._check(lists, "input")
        return lists

    def _check(self, lists: list[list[int]], param: str) -> None:
        n_vocab = self.loaded.model.info.n_vocab
        for tokens in lists:
            if len(tokens) > self.max_prompt_tokens:
                raise PromptTooLong(len(tokens), self.max_prompt_tokens, param)
            if any(not 0 <= t < n_vocab for t in tokens):
                raise TokenOutOfRange(n_vocab, param)


# --- GPU executor --------------------------------------------------------------------------
class GpuExecutor:
    """Steps the batch back to back in one worker thread of its own, so a step starts as soon as
    the last one ends, while the event loop turns the last outputs into text (the two overlap:
    the step thread waits on the GPU without the GIL). Messages reach the thread through a
    thread-safe queue; outputs go back to the event loop as callbacks (`run_sync_soon`)."""

    def __init__(self, batch: BatchRuntime, embedder: BatchRuntime, device=None,
                 on_device_lost: Callable[[DeviceLost], None] | None = None) -> None:
        self.batch = batch
        self.embedder = embedder  # its own slots, so embeddings never touch a generation's state
        self.device = device      # the wgpu device both run on (None: errors are judged by their message)
        self.on_device_lost = on_device_lost  # called on the event loop, once
        self.lost: DeviceLost | None = None   # set by the step thread when the device is lost
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
            if isinstance(state, Parked):
                if state.array is None:
                    raise RuntimeError("the cached state was lost when it was moved to host memory")
                state = state.array
            if isinstance(state, np.ndarray):
                state = batch.model.state_from_host(state)
            batch.load(message.slot, state)
        elif isinstance(message, Park):
            message.parked.array = message.state.to_host()
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
            state = batch.save(message.slot)
            post([(message.reply, (state.to_host() if message.host else state, list(batch.fed[message.slot])))])
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

    def _embed_step(self, post: Callable, lose: Callable[[Exception], None]) -> None:
        """One step of the first embeddings request: it ends when done, failed or its client left."""
        message, run = self.embeds[0]
        if message.left.is_set():
            run.cancel()
            self.embeds.popleft()
            return
        try:
            run.advance()
        except Exception as error:
            if is_device_lost(error, self.device):
                lose(error)  # this request among the others
                return
            run.cancel()
            self.embeds.popleft()
            post([(message.reply, _fault(error, "computing embeddings"))])
            return
        if run.done:
            self.embeds.popleft()
            post([(message.reply, Embedded(run.vectors, sum(map(len, message.token_lists))))])

    def _lose(self, error: Exception, post: Callable) -> None:
        """The device is lost: fail every request this executor holds; from now on it answers
        every message with the same failure (`_refuse`) and never steps again."""
        reason = str(error).strip().splitlines()[-1].strip() or type(error).__name__
        self.lost = DeviceLost(reason)
        print(f"[ai00-trio] the GPU device was lost ({type(error).__name__}: {error}); failing "
              f"{len(self.replies) + len(self.embeds)} request(s) in flight", file=sys.stderr, flush=True)
        failed = Failed(self.lost)
        post([(reply, failed) for reply in self.replies.values()] + [(embed.reply, failed) for embed, _ in self.embeds])
        self.replies.clear()
        self.embeds.clear()
        self.awaiting.clear()
        self.faults.clear()

    def _refuse(self, message, post: Callable) -> None:
        """After the loss: a message that expects an answer gets the DeviceLost failure."""
        reply = getattr(message, "reply", None)
        if reply is not None and isinstance(message, (Submit, Save, Embed, GpuCall)):
            post([(reply, Failed(self.lost))])

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

        def lose(error: Exception) -> None:
            self._lose(error, post)
            if self.on_device_lost is not None:
                trio_token.run_sync_soon(self.on_device_lost, self.lost)

        def take(message) -> bool:
            if message is _STOP:
                return False
            if self.lost is not None:
                self._refuse(message, post)
                return True
            try:
                self._handle(message, post)
            except Exception as error:
                if not is_device_lost(error, self.device):
                    self._fail(message, error, post)
                    return True
                lose(error)
                if not isinstance(message, Submit):  # a Submit's reply was among those failed
                    self._refuse(message, post)
            return True

        while True:
            if (self.lost is not None or (not batch.busy_slots and not self.embeds)) and not take(inbox.get()):
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
            if self.lost is None and self.embeds:
                self._embed_step(post, lose)
            if self.lost is not None or not batch.busy_slots:
                continue
            started = time.monotonic()
            stepped = batch.busy_slots
            try:
                outputs = batch.step()
            except Exception as error:
                if is_device_lost(error, self.device):
                    lose(error)
                else:
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


# --- scheduler -----------------------------------------------------------------------------
class Scheduler:
    def __init__(self, loaded: LoadedModel, max_batch: int, max_queue: int, cache: PrefixCache,
                 queue_timeout: float = math.inf, on_first_token: Callable[[float], None] | None = None,
                 generation_seconds: float = 0.0) -> None:
        self.loaded = loaded
        self.generation_seconds = generation_seconds  # 0: generations run to their max_tokens
        self.on_first_token = on_first_token  # hears each generation's seconds to its first token
        self.queue_timeout = queue_timeout
        self.free_slots = list(range(max_batch))
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.cache = cache
        self.waiting: list[Job] = []
        self._expiries: dict[int, trio.CancelScope] = {}  # id(job) -> its queue_timeout, while it waits
        self.active = 0
        self.tally = Tally()
        self._held = 0                 # run_alone calls under way: no generation starts meanwhile
        self._idle = trio.Event()      # set when the last running generation ends
        self._executor: trio.MemorySendChannel | None = None
        self._resume: Callable[[], None] = lambda: None  # starts waiting jobs (set by run)
        self.lost: DeviceLost | None = None  # the executor's device is lost: every job fails with this

    @property
    def prompt_tokens(self) -> int:
        return self.tally.prompt_tokens

    @property
    def generated_tokens(self) -> int:
        return self.tally.generated_tokens

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
                    if self.lost is not None:
                        _send_now(job.text.events, Failed(self.lost))
                        continue
                    if len(self.waiting) >= self.max_queue and (not self.free_slots or self._held):
                        _send_now(job.text.events, Failed(Overloaded()))
                        continue
                    self.waiting.append(job)
                    self._start_waiting(generations, executor, release_send)
                    if job in self.waiting:
                        self._expiries[id(job)] = expiry = trio.CancelScope()
                        generations.start_soon(self._expire, job, expiry)
            generations.cancel_scope.cancel()

    def device_lost(self, failure: DeviceLost) -> None:
        """The executor lost its device: the jobs waiting for a slot, and every job sent later, fail."""
        self.lost = failure
        waiting, self.waiting = self.waiting, []
        for job in waiting:
            expiry = self._expiries.pop(id(job), None)
            if expiry is not None:
                expiry.cancel()
            _send_now(job.text.events, Failed(failure))

    async def _expire(self, job: Job, expiry: trio.CancelScope) -> None:
        """A job still waiting for a slot after queue_timeout gets a 503 (`expiry` is cancelled
        when it gets one)."""
        with expiry:
            await trio.sleep(self.queue_timeout)
        if not expiry.cancelled_caught and job in self.waiting:
            self._expiries.pop(id(job), None)
            self.waiting.remove(job)
            await _try_send(job.text.events, Failed(QueueTimeout(self.queue_timeout)))

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
                return unwrap(await reply_recv.receive())
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
            nursery.start_soon(self._serve, job, slot, executor, release_send)

    async def _serve(self, job: Job, slot: int, executor: trio.MemorySendChannel,
                     release_send: trio.MemorySendChannel) -> None:
        """Run the job in `slot`, then free the slot (whatever happened)."""
        events = job.text.events
        try:
            if isinstance(job.text, SlotTask):
                with job.text.left:
                    start = await choose_start(self.loaded, job.text.state_id)
                    cache = None if start.scope is None else ScopedCache(self.cache, start.scope)
                    await job.text.run(SlotIO(slot, executor, start.state, cache))
            else:
                await Generation(job, slot, executor, self.cache, self.loaded, self.tally,
                                 self.on_first_token, self.generation_seconds).run()
        except Failure as error:
            await _try_send(events, Failed(error))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away
        finally:
            with trio.CancelScope(shield=True):
                await executor.send(Release(slot))
                await release_send.send(slot)
                await events.aclose()


def _fault(error: Exception, during: str) -> Failed:
    """An executor error as its requests see it; the traceback goes to the server's log."""
    print(f"[ai00-trio] GPU executor error while {during} (only its requests fail):", file=sys.stderr)
    traceback.print_exception(error, file=sys.stderr)
    return Failed(ExecutorFault(during, error))


def _send_now(channel: trio.MemorySendChannel, message) -> None:
    """For a job's own event channel: a full or closed one drops the message."""
    try:
        channel.send_nowait(message)
    except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def _try_send(channel: trio.MemorySendChannel, message) -> None:
    try:
        with trio.move_on_after(1):
            await channel.send(message)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


# --- wiring --------------------------------------------------------------------------------
@dataclass(eq=False)
class Lane:
    """One executor of the model, on a device of its own with its own copy of the weights, its
    slots, waiting room and prefix cache (`[adapter] gpus` / `count`; one lane otherwise)."""
    loaded: LoadedModel
    scheduler: Scheduler
    executor: GpuExecutor
    to_scheduler: trio.MemorySendChannel
    to_executor: trio.MemorySendChannel
    cache_budget: CacheBudget

    @property
    def load(self) -> int:
        """Jobs it holds: running, waiting for a slot, or sent and not yet taken."""
        scheduler = self.scheduler
        return scheduler.active + scheduler.queue_depth + self.to_scheduler.statistics().current_buffer_used

    def cached_length(self, tokens: list[int], scope: int | None) -> int:
        """How many of `tokens` its prefix cache holds (in the cache `scope`; None: not cached)."""
        if scope is None or not tokens:
            return 0
        return ScopedCache(self.scheduler.cache, scope).cached_length(tokens)


def pick_lane(lanes: list[Lane], tokens: list[int] | None = None, scope: int | None = None) -> Lane:
    """The lane whose prefix cache holds the longest prefix of `tokens`, among the lanes with a
    free slot; else (nothing cached anywhere, or no room there) the least loaded one; ties go to
    the first."""
    if len(lanes) == 1:
        return lanes[0]

    def score(lane: Lane) -> tuple[int, int]:
        load = lane.load
        return (lane.cached_length(tokens, scope) if tokens and load < lane.scheduler.max_batch else 0), -load
    return max(lanes, key=score)


@dataclass
class ActorGraph:
    """The handles the HTTP layer uses: where to send jobs, and each lane's live figures."""
    jobs: trio.MemorySendChannel
    lanes: list[Lane]
    leases: int = 0  # HTTP requests that took this graph and may still send it jobs (see lifecycle.py)

    @property
    def active(self) -> int:
        return sum(lane.scheduler.active for lane in self.lanes)

    @property
    def queue_depth(self) -> int:
        return sum(lane.scheduler.queue_depth for lane in self.lanes)

    @property
    def max_batch(self) -> int:
        return sum(lane.scheduler.max_batch for lane in self.lanes)

    def idle(self) -> bool:
        """Nothing runs, waits or is on its way to a lane."""
        return self.jobs.statistics().current_buffer_used == 0 and not any(lane.load for lane in self.lanes)


def state_bytes(state: State | Parked) -> int:
    """A cached state's size: on the GPU (a State) or parked in host memory."""
    return state.buffer.size if isinstance(state, State) else state.nbytes


def parker(executor: trio.MemorySendChannel) -> Callable[[State], Parked]:
    """The prefix cache's `offload`: the executor copies the state to host memory (the event
    loop never waits on the GPU); the entry holds the `Parked` handle from now on."""
    def park(state: State) -> Parked:
        parked = Parked(state_bytes(state))
        executor.send_nowait(Park(state, parked))  # unbounded: never blocks
        return parked
    return park


async def run_actor_graph(executors: list[LoadedModel], options: ModelConfig, cache_options: CacheConfig,
                          on_first_token: Callable[[float], None] | None = None,
                          on_device_lost: Callable[[ActorGraph, DeviceLost], None] | None = None,
                          wrap_batch: Callable[[BatchRuntime], BatchRuntime] | None = None,
                          task_status=trio.TASK_STATUS_IGNORED) -> None:
    """The graph with one lane per loaded copy of the model (each on its own device).
    `on_device_lost` hears (on the event loop, once) that a lane's device was lost; `wrap_batch`
    stands between each executor and its batch (fault injection)."""
    max_batch, token_chunk_size = options.max_batch, options.token_chunk_size
    parts = []
    for loaded in executors:
        batch = BatchRuntime(loaded.model, max_batch=max_batch, token_chunk_size=token_chunk_size)
        # Embeddings share one step's token budget anyway, so a few slots of their own serve them as
        # fast as max_batch would, without a second full set of state buffers.
        embedder = BatchRuntime(loaded.model, max_batch=min(max_batch, EMBED_SLOTS),
                                token_chunk_size=token_chunk_size, keep_hidden=True)
        parts.append(LaneParts(loaded, wrap_batch(batch) if wrap_batch is not None else batch, embedder,
                               loaded.model.ctx.device))
    await run_lanes(parts, options, cache_options, on_first_token, on_device_lost, task_status=task_status)


@dataclass
class LaneParts:
    """What a lane is built from: the model's copy, its batch runtimes (`embedder`: embeddings'
    own slots) and its device (None: a lost device is told by its errors' messages alone)."""
    loaded: LoadedModel
    batch: BatchRuntime
    embedder: BatchRuntime
    device: Any = None


async def run_actors(loaded: LoadedModel, options: ModelConfig, cache_options: CacheConfig, batch: BatchRuntime,
                     embedder: BatchRuntime, on_first_token: Callable[[float], None] | None = None, device=None,
                     on_device_lost: Callable[[ActorGraph, DeviceLost], None] | None = None,
                     task_status=trio.TASK_STATUS_IGNORED) -> None:
    """A graph of one lane on the given batch runtimes."""
    await run_lanes([LaneParts(loaded, batch, embedder, device)], options, cache_options, on_first_token,
                    on_device_lost, task_status=task_status)


async def run_lanes(parts: list[LaneParts], options: ModelConfig, cache_options: CacheConfig,
                    on_first_token: Callable[[float], None] | None = None,
                    on_device_lost: Callable[[ActorGraph, DeviceLost], None] | None = None,
                    task_status=trio.TASK_STATUS_IGNORED) -> None:
    """The tokenizer, then for each lane a scheduler and a GPU executor of its own."""
    max_batch, max_queue = options.max_batch, options.max_queue
    jobs_send, jobs_recv = trio.open_memory_channel(max_queue)
    lanes: list[Lane] = []
    actors: list[tuple] = []
    available = memory_available()  # the lanes share the host's memory
    for part in parts:
        to_scheduler_send, to_scheduler_recv = trio.open_memory_channel(math.inf)
        to_executor_send, to_executor_recv = trio.open_memory_channel(math.inf)
        release_send, release_recv = trio.open_memory_channel(math.inf)
        budget = cache_budget(cache_options.gpu_bytes, cache_options.host_bytes,
                              part.loaded.model.ctx.info.adapter_type == "CPU",
                              None if available is None else available // len(parts))
        cache = PrefixCache(gpu_budget=budget.gpu_bytes, host_budget=budget.host_bytes,
                            offload=parker(to_executor_send), size_of=state_bytes)
        scheduler = Scheduler(part.loaded, max_batch, max_queue, cache, options.queue_timeout, on_first_token,
                              options.max_generation_seconds)
        executor = GpuExecutor(part.batch, part.embedder, part.device, _lost_hook(scheduler, on_device_lost,
                                                                                    lambda: graph))
        lanes.append(Lane(part.loaded, scheduler, executor, to_scheduler_send, to_executor_send, budget))
        actors += [(scheduler.run, to_scheduler_recv, release_recv, to_executor_send, release_send),
                   (executor.run, to_executor_recv)]
    tokenizer = TokenizerActor(parts[0].loaded, options.max_prompt_tokens, options.max_embed_tokens)
    graph = ActorGraph(jobs_send, lanes)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tokenizer.run, jobs_recv, lanes)
        for actor in actors:
            nursery.start_soon(*actor)
        task_status.started(graph)


def _lost_hook(scheduler: Scheduler, on_device_lost: Callable[[ActorGraph, DeviceLost], None] | None,
               graph: Callable[[], ActorGraph]) -> Callable[[DeviceLost], None]:
    def device_lost(failure: DeviceLost) -> None:
        scheduler.device_lost(failure)
        if on_device_lost is not None:
            on_device_lost(graph(), failure)
    return device_lost
