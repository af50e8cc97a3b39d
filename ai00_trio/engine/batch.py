"""Batched runtime: many sequences in `max_batch` GPU slots, advanced together step by step.

Free of HTTP and trio: the GPU-executor actor drives it with `submit`, `step` and the state
moves (`load`, `save`, `reset`).

Each step is fair: every slot with work gets at least one token (so decoding slots advance
every step, however long another slot's prompt), and what is left of `token_chunk_size` is
shared evenly among slots that still have prompt tokens (water-filling).
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..gpu.tuning import KernelTuning
from .model import Model
from .runtime import GREEDY, Flight, Pick, Run, Sampling
from .slots import BufferLimits
from .state import State

WANTS = ("last", "all", "pick")


@dataclass
class _Launched:
    """A step on the GPU: what its output rows are for."""

    flight: Flight
    full: list[tuple[int, range, bool]]  # (slot, rows with logits, every token's?)
    picked: list[tuple[int, int]]        # (slot, its epoch) per GPU choice, in row order
    steady: bool                         # one GPU choice per run: the next step can run on its choices
    follows: bool = False                # the next step was launched on this one's choices


@dataclass
class _SlotWork:
    tokens: deque[int] = field(default_factory=deque)
    want: str = "last"
    sampling: Sampling = GREEDY
    chain: int = 0               # GPU choices still to feed back as the slot's next tokens
    end_tokens: frozenset[int] = frozenset()  # choices that end the chain


class BatchRuntime:
    def __init__(self, model: Model, max_batch: int = 8, token_chunk_size: int = 256,
                 keep_hidden: bool = False, tuning: KernelTuning | None = None,
                 limits: BufferLimits | None = None) -> None:
        if max_batch < 1 or token_chunk_size < 1:
            raise ValueError("max_batch and token_chunk_size must be positive")
        self.model = model
        self.max_batch = max_batch
        self.token_chunk_size = token_chunk_size
        # A step holds at most the chunk budget, or one token per slot if that is more. The
        # slots' buffers keep within `limits` (the device's by default): SlotsDontFit says how
        # many slots fit when max_batch do not.
        self.runtime = model.runtime(max_batch, max(token_chunk_size, max_batch), tuning, limits)
        self._initial = model.new_state()
        self.keep_hidden = keep_hidden  # also keep each output row's final hidden state
        self.hidden: dict[int, np.ndarray] = {}
        self._work: dict[int, _SlotWork] = {}
        self._draws: dict[int, int] = {}  # per slot: GPU choices made since it was loaded
        self.fed: dict[int, list[int]] = {}  # per slot: every token fed since it was loaded
        self._epochs: dict[int, int] = dict.fromkeys(range(max_batch), 0)  # bumped when a slot's work is dropped
        self._in_flight: _Launched | None = None  # a step launched ahead, on the last one's choices
        for slot in range(max_batch):
            self.reset(slot)

    # --- state moves -------------------------------------------------------------------------
    def _check_slot(self, slot: int) -> None:
        if not 0 <= slot < self.max_batch:
            raise ValueError(f"slot {slot} out of range 0..{self.max_batch - 1}")

    def load(self, slot: int, state: State | None = None) -> None:
        """Set a slot's state: a copy of `state` (initial, cached or saved), or the zero state.
        Pending tokens of the slot are dropped."""
        self._check_slot(slot)
        source = self._initial if state is None else state
        if source.model is not self.model:
            raise ValueError("state belongs to another model")
        self.runtime.load_slot(slot, source.buffer)
        self.cancel(slot)
        self._draws[slot] = 0
        self.fed[slot] = []

    def reset(self, slot: int) -> None:
        self.load(slot, None)

    def save(self, slot: int) -> State:
        """A copy of the slot's current state (stays on the GPU)."""
        self._check_slot(slot)
        copy = self.model.ctx.storage(self.runtime.slot_floats * 4)
        self.runtime.save_slot(slot, copy)
        return State(self.model, copy)

    def set_penalties(self, slot: int, penalties: Mapping[int, float]) -> None:
        """Start the repetition penalties the GPU applies to a slot's penalized `Sampling`
        ({token: penalty}, as a host sampler holds them); the GPU keeps them up to date."""
        self._check_slot(slot)
        self.runtime.set_penalties(slot, penalties)

    def set_bias(self, slot: int, bias: Mapping[int, float]) -> None:
        """The logit bias the GPU adds for a slot's `Sampling(biased=True)` ({token: bias})."""
        self._check_slot(slot)
        self.runtime.set_bias(slot, bias)

    # --- work --------------------------------------------------------------------------------
    def submit(self, slot: int, tokens: list[int], want: str = "last", sampling: Sampling = GREEDY,
               chain: int = 0, end_tokens: frozenset[int] = frozenset()) -> None:
        """Queue tokens for a slot. want="last": logits once all queued tokens are in;
        want="all": logits for every token (perplexity); want="pick": once all are in, only the
        next token, chosen on the GPU as `sampling` says (a `Pick`: 16 bytes are read back).
        With want="pick", `chain` more choices are fed back as the slot's next tokens, each one
        a step later, without waiting for the caller (a decode that runs on by itself); the
        chain stops at a choice in `end_tokens`, at one that is not finite, or at `cancel`.
        Such a last choice is not fed back, unless a step had already been launched ahead on
        it (see `step`): `fed` has what the slot's state holds."""
        self._check_slot(slot)
        if want not in WANTS:
            raise ValueError(f"want must be one of {WANTS}")
        if chain and want != "pick":
            raise ValueError("only GPU choices (want=\"pick\") can be chained")
        bad = [t for t in tokens if not 0 <= int(t) < self.model.info.n_vocab]
        if bad:
            raise ValueError(f"token id {bad[0]} out of range 0..{self.model.info.n_vocab - 1}")
        work = self._work.setdefault(slot, _SlotWork())
        work.tokens.extend(int(t) for t in tokens)
        work.want = want
        work.sampling = sampling
        work.chain = chain
        work.end_tokens = end_tokens

    def cancel(self, slot: int) -> None:
        """Drop a slot's queued tokens and its chain (its state keeps what was already fed,
        which may include a step launched ahead: see `fed`); outputs still on the way are dropped."""
        self._work.pop(slot, None)
        self._epochs[slot] += 1

    def drop(self, slots: list[int]) -> None:
        """After a failed step: cancel `slots` and forget the step launched ahead, so the next
        step runs only the other slots' work."""
        for slot in slots:
            self.cancel(slot)
        self._in_flight = None

    @property
    def busy_slots(self) -> list[int]:
        """Slots with tokens to feed, or with a step on the way (`step` lands it)."""
        busy = {s for s, w in self._work.items() if w.tokens}
        if self._in_flight is not None:
            busy.update(s for s, epoch in self._in_flight.picked if self._epochs[s] == epoch)
        return sorted(busy)

    def plan(self) -> dict[int, int]:
        """How many tokens each slot feeds in the next step: within the step's logits rows too,
        where want="all" takes a row per token (each slot's row is there: slots <= rows)."""
        pending = {s: len(self._work[s].tokens) for s in self.busy_slots}
        counts = {s: 1 for s in pending}
        budget = self.token_chunk_size - len(counts)
        rows = self.runtime.logit_rows - len(counts)
        every = {s for s in pending if self._work[s].want == "all"}
        hungry = [s for s in pending if pending[s] > counts[s]]
        while budget > 0 and hungry:
            share = max(1, budget // len(hungry))
            for s in hungry:
                extra = min(share, pending[s] - counts[s], budget, rows if s in every else budget)
                counts[s] += extra
                budget -= extra
                rows -= extra if s in every else 0
            hungry = [s for s in hungry if pending[s] > counts[s] and (rows > 0 or s not in every)]
        return counts

    def step(self) -> dict[int, np.ndarray | Pick]:
        """Run one GPU pass over every slot with work. Returns, per slot that produced output,
        logits [n_vocab] ("last", once its queue is empty), [n, n_vocab] ("all") or a `Pick`.

        Chains run one step ahead: when every slot of a step is a chain going on and no other
        slot waits, the next step is launched on the GPU's own choices before this one is read
        back, so the GPU never waits for the host. A chain that then turns out to have ended
        (an end token) has had that token fed (see `fed`); the extra step's output is dropped."""
        launched, self._in_flight = self._in_flight, None
        if launched is not None and all(self._epochs[s] != epoch for s, epoch in launched.picked):
            self.runtime.land(launched.flight)  # every slot of it was cancelled: wait, and drop it
            launched = None
        if launched is None:
            launched = self._launch_planned()
            if launched is None:
                return {}
        if self._can_run_ahead(launched):
            self._in_flight = self._launch_ahead(launched)
            launched.follows = True
        return self._land(launched)

    def _launch_planned(self) -> _Launched | None:
        counts = self.plan()
        if not counts:
            return None
        runs: list[Run] = []
        full: list[tuple[int, range, bool]] = []
        last_rows: list[int] = []  # the rows of `picked`
        picked: list[tuple[int, Sampling, int]] = []  # (slot, sampling, draw): a GPU choice only
        start = 0
        for slot, n in counts.items():
            work = self._work[slot]
            runs.append(Run(slot, [work.tokens.popleft() for _ in range(n)]))
            self.fed[slot] += runs[-1].tokens
            if work.want == "all":
                full.append((slot, range(start, start + n), True))
            elif not work.tokens:
                if work.want == "pick":
                    picked.append(self._choice(slot, work))
                    last_rows.append(start + n - 1)
                else:
                    full.append((slot, range(start + n - 1, start + n), False))
            start += n
        rows = [r for _, span, _ in full for r in span] + last_rows
        flight = self.runtime.launch(runs, rows, picked)
        steady = not full and len(picked) == len(runs) == start
        return _Launched(flight, full, [(slot, self._epochs[slot]) for slot, _, _ in picked], steady)

    def _choice(self, slot: int, work: _SlotWork) -> tuple[int, Sampling, int]:
        """The (slot, sampling, draw number) of the slot's next GPU choice; counts the draw."""
        self._draws[slot] += 1
        return slot, work.sampling, self._draws[slot] - 1

    def _can_run_ahead(self, launched: _Launched) -> bool:
        """Whether the next step is `launched`'s slots again, each fed its GPU choice."""
        if not launched.steady or self.keep_hidden or any(w.tokens for w in self._work.values()):
            return False
        for slot, epoch in launched.picked:
            work = self._work.get(slot)
            if self._epochs[slot] != epoch or work is None or work.chain < 1:
                return False
        return True

    def _launch_ahead(self, launched: _Launched) -> _Launched:
        picked = []
        for slot, _ in launched.picked:
            work = self._work[slot]
            work.chain -= 1
            picked.append(self._choice(slot, work))
        runs = [Run(slot, [0]) for slot, _ in launched.picked]  # the ids come from the GPU
        flight = self.runtime.launch(runs, list(range(len(runs))), picked, gpu_fed=True)
        return _Launched(flight, [], [(slot, self._epochs[slot]) for slot, _, _ in picked], True)

    def _land(self, launched: _Launched) -> dict[int, np.ndarray | Pick]:
        logits, picks = self.runtime.land(launched.flight)
        n_rows = sum(len(span) for _, span, _ in launched.full) + len(picks)
        hidden = self.runtime.read_hidden(n_rows) if self.keep_hidden and n_rows else None
        out: dict[int, np.ndarray | Pick] = {}
        row = 0
        for slot, span, every in launched.full:
            out[slot] = logits[row:row + len(span)] if every else logits[row]
            if hidden is not None:
                self.hidden[slot] = hidden[row:row + len(span)] if every else hidden[row]
            row += len(span)
        for (slot, epoch), pick in zip(launched.picked, picks):
            if hidden is not None:
                self.hidden[slot] = hidden[row]
            row += 1
            if self._epochs[slot] != epoch:
                continue  # cancelled or loaded since: not for whoever has the slot now
            out[slot] = pick
            work = self._work.get(slot)
            ends = work is None or pick.token in work.end_tokens or not math.isfinite(pick.logprob)
            if launched.follows:  # the step launched ahead has fed this choice already
                self.fed[slot].append(pick.token)
                if ends:
                    self._epochs[slot] += 1  # that step's output for this slot is not wanted
                    if work is not None:
                        work.chain = 0
            elif work is not None and work.chain > 0 and not ends:
                work.tokens.append(pick.token)
                work.chain -= 1
        return out


class EmbedRun:
    """Embeddings of several texts, computed one `advance` (one step of the batch) at a time, so
    a caller can interleave other work and stop between steps. Texts are fed through the batch's
    slots together, `max_batch` at a time; each one's vector is its final normalized hidden
    state (ln_out output of its last token), L2-normalized."""

    def __init__(self, batch: BatchRuntime, token_lists: list[list[int]]) -> None:
        self.batch = batch
        self.token_lists = token_lists
        self.vectors: list[np.ndarray] = []
        self._group: list[list[int]] = []

    @property
    def done(self) -> bool:
        return len(self.vectors) == len(self.token_lists)

    def advance(self) -> None:
        """One step: starts the next group of texts when none is under way."""
        batch = self.batch
        if not self._group:
            start = len(self.vectors)
            self._group = self.token_lists[start:start + batch.max_batch]
            for slot, tokens in enumerate(self._group):
                batch.reset(slot)
                batch.submit(slot, tokens)
            batch.hidden.clear()
        batch.step()
        if not batch.busy_slots:
            for slot in range(len(self._group)):
                h = batch.hidden[slot].astype(np.float64)
                self.vectors.append((h / max(np.linalg.norm(h), 1e-12)).astype(np.float32))
            self._group = []

    def cancel(self) -> None:
        """Leave the batch idle (the group's remaining tokens dropped)."""
        for slot in range(len(self._group)):
            self.batch.cancel(slot)
        self._group = []


def embed_batch(batch: BatchRuntime, token_lists: list[list[int]]) -> list[np.ndarray]:
    """Every embedding at once (an `EmbedRun` run to its end)."""
    run = EmbedRun(batch, token_lists)
    while not run.done:
        run.advance()
    return run.vectors
