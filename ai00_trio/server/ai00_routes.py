"""AI00's own routes: `chooses` (rank continuations by perplexity), `states` (the RNN state
after an input) and `embeds` (answered by the embeddings route). The work runs in a slot of
the GPU executor, like a generation (`SlotTask`)."""
from __future__ import annotations

import math
from functools import partial
from typing import Callable

import msgspec
import numpy as np
import trio
from quart import Response, request

from . import ai00_schemas as a
from .actors import ActorGraph
from .messages import Failed, SlotTask
from .slot_io import SlotIO
from .ai00_state import ai00_state_tensor
from .engine_service import LoadedModel
from .errors import bad_request, overloaded
from .failure_errors import api_error
from .schemas import StateChoice, decode_request

MAX_CHOICES = 256
MAX_CHOICE_TOKENS = 1024  # its logits rows come back whole: 256 KiB a token for a 65,536-token vocab
UNCONDITIONAL_START = 0  # the token a choice follows when scored with no input (AI00's)


def add_ai00_routes(route: Callable, ready: Callable[[], tuple[LoadedModel, ActorGraph]],
                    max_prompt_tokens: int, embeddings: Callable) -> None:
    """Register the routes with app.py's `route` (every API prefix) and `ready` (503s)."""

    async def encode(loaded: LoadedModel, text: str, param: str, empty_is_start: bool) -> list[int]:
        tokens = await loaded.encode(text)
        if not tokens and empty_is_start:  # as a generation's empty prompt
            tokens = [0] if loaded.eos_token == 0 else loaded.tokenizer.encode("\n")
        if len(tokens) > max_prompt_tokens:
            raise bad_request(f"{param} has {len(tokens)} tokens; this server accepts at most {max_prompt_tokens}",
                              param=param, code="context_length_exceeded")
        n_vocab = loaded.model.info.n_vocab
        if any(not 0 <= t < n_vocab for t in tokens):
            raise bad_request(f"token ids must be in 0..{n_vocab - 1}", param=param)
        return tokens

    async def run_in_slot(graph: ActorGraph, work, state_id: StateChoice):
        """`work(io, reply)` in a slot of its own; what it sends to `reply`. Stopped when this
        handler is (its client is gone)."""
        send, recv = trio.open_memory_channel(1)
        task = SlotTask(partial(work, reply=send), send, state_id)
        async with recv:
            try:
                graph.jobs.send_nowait(task)
            except trio.WouldBlock:
                raise overloaded() from None
            try:
                result = await recv.receive()
            finally:
                task.left.cancel()
        if isinstance(result, Failed):
            raise api_error(result.error)
        return result

    @route("/chooses", ["POST"])
    async def chooses():
        loaded, graph = ready()
        body = decode_request(await request.get_data(), a.ChooseRequest)
        if not 1 <= len(body.choices) <= MAX_CHOICES:
            raise bad_request(f"choices must list 1 to {MAX_CHOICES} strings", param="choices")
        prompt = await encode(loaded, _joined(body.input), "input", empty_is_start=True)
        choices = [await encode(loaded, choice, "choices", empty_is_start=False) for choice in body.choices]
        if any(len(choice) > MAX_CHOICE_TOKENS for choice in choices):
            raise bad_request(f"a choice has at most {MAX_CHOICE_TOKENS} tokens", param="choices")
        scores = await run_in_slot(graph, partial(_choose, prompt=prompt, choices=choices,
                                                  calibrate=body.calibrate), body.state)
        order = sorted(range(len(scores)), key=lambda i: (math.isnan(scores[i]), scores[i]))
        data = [a.ChooseData(index, rank, body.choices[index], scores[index]) for rank, index in enumerate(order)]
        return _json(a.ChooseResponse(loaded.path, data))

    @route("/states", ["POST"])
    async def states():
        loaded, graph = ready()
        body = decode_request(await request.get_data(), a.StateRequest)
        tokens = await encode(loaded, _joined(body.input), "input", empty_is_start=True)
        flat = await run_in_slot(graph, partial(_state_after, tokens=tokens), body.state)
        data, shape = ai00_state_tensor(loaded.model, flat)
        return _json(a.StateResponse(loaded.path, [a.StateData(0, data.tolist(), shape)], a.TokenCounter()))

    route("/embeds", ["POST"])(embeddings)


async def _choose(io: SlotIO, reply: trio.MemorySendChannel, prompt: list[int], choices: list[list[int]],
                  calibrate: bool) -> None:
    """Each choice's perplexity after the prompt (minus its perplexity with no input when
    `calibrate`); infinite for an empty choice. The prompt is computed once (or comes from the
    prefix cache) and its state restored for each choice. Only the prompt's state is cached: a
    candidate is rarely scored twice, and hundreds of them would push out the entries that
    conversations reuse."""
    after_prompt = await io.prefill(prompt)
    scores = []
    for tokens in choices:
        if not tokens:
            scores.append(math.inf)
            continue
        await io.load(after_prompt.state)
        score = await _perplexity(io, tokens, after_prompt.logits)
        if calibrate:
            await io.load(io.initial)
            score -= await _perplexity(io, tokens)
        scores.append(score)
    await reply.send(scores)


async def _perplexity(io: SlotIO, tokens: list[int], head: np.ndarray | None = None) -> float:
    """Mean -ln p of `tokens` fed into the slot's state: the first one under `head` (the logits
    before it), or with no head after UNCONDITIONAL_START. The last token is not fed (its
    logits are not needed); a step's rows at a time, so a long choice never holds them all."""
    total, at = 0.0, 0
    fed = tokens[:-1]
    if head is None:
        fed = [UNCONDITIONAL_START] + fed
    else:
        total, at = nll_sum(head[None], tokens[:1]), 1
    if fed:
        async for rows in io.feed_each(fed):
            total += nll_sum(rows, tokens[at:at + len(rows)])
            at += len(rows)
    return total / len(tokens)


async def _state_after(io: SlotIO, reply: trio.MemorySendChannel, tokens: list[int]) -> None:
    await io.prefill(tokens)
    await reply.send(await io.read())


def nll_sum(logits: np.ndarray, tokens: list[int]) -> float:
    """The sum of -ln p of tokens[i] under the softmax of logits row i."""
    rows = np.asarray(logits, np.float64)
    peak = rows.max(axis=1)
    log_z = peak + np.log(np.exp(rows - peak[:, None]).sum(axis=1))
    return float(np.sum(log_z - rows[np.arange(len(tokens)), tokens]))


def _joined(value: str | list[str] | None) -> str:
    """AI00's `Array<String>`: null, one string or several, joined."""
    if value is None:
        return ""
    return value if isinstance(value, str) else "".join(value)


def _json(value) -> Response:
    return Response(msgspec.json.encode(value), content_type="application/json")
