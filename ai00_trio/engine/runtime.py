"""GPU slots and steps: each step runs token runs of several slots through the model at once.

A *run* is a contiguous chunk of one sequence's tokens, fed into the recurrent state held in
its slot. All runs of a step are stacked along the token axis; kernels find each token's slot
through the `tokens` buffer and each run's extent through the `runs` buffer.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Callable

import numpy as np
import wgpu

from ..gpu import fast_encode
from ..gpu.context import Readback
from ..gpu.graph import StepGraph, StepIO
from ..gpu.tuning import DEFAULT_TUNING, KernelTuning
from .slots import BufferLimits, SlotShape, allocate_slots
from .versions.common import Architecture, Workspace


@dataclass(frozen=True)
class Run:
    slot: int
    tokens: list[int]


@dataclass(frozen=True)
class Pick:
    """A token chosen on the GPU from one logits row (see `Sampling`) and its log-probability
    (the log-softmax after penalties). Not finite when the row held NaN or infinite logits."""

    token: int
    logprob: float


@dataclass(frozen=True)
class Sampling:
    """How the GPU chooses a sequence's next token (sample.wgsl): AI00's Nucleus sampler
    (repetition penalties and logit bias, top_k, top_p, min_p, then weights p^(1/T)), or the argmax
    (ties: the lowest id) when the temperature is 0. The draws come from `seed` and the slot's
    count of draws, so a seed repeats its choices. Penalties and bias live on the GPU per slot
    (`Runtime.set_penalties`, `Runtime.set_bias`; `biased` says to add the slot's bias)."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0           # 0: no limit
    min_p: float = 0.0       # keep tokens with p >= min_p * (the largest p)
    presence: float = 0.0
    frequency: float = 0.0
    decay: float = 1.0
    seed: int = 0
    biased: bool = False

    @property
    def penalized(self) -> bool:
        return self.presence != 0.0 or self.frequency != 0.0


GREEDY = Sampling()


@dataclass(frozen=True)
class Flight:
    """A launched step (`Runtime.launch`): what `Runtime.land` reads back."""

    n_full: int   # logits rows
    picked: int   # GPU choices
    back: int     # which picks readback
    submission: int | None = None  # the queue's index of its commands, when known


def step_inputs(runs: Sequence[Run]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a step's kernels read of its runs: the token ids in order; per token (slot, first of
    its run, index of its run's last token, 0); per run (slot, first token, token count, 0)."""
    t = sum(len(r.tokens) for r in runs)
    ids = np.empty(t, np.uint32)
    tokens = np.zeros((t, 4), np.uint32)
    spans = np.zeros((len(runs), 4), np.uint32)
    start = 0
    for i, run in enumerate(runs):
        n = len(run.tokens)
        ids[start:start + n] = run.tokens
        tokens[start:start + n, 0] = run.slot
        tokens[start, 1] = 1
        tokens[start:start + n, 2] = start + n - 1
        spans[i] = (run.slot, start, n, 0)
        start += n
    return ids, tokens, spans


def choices_table(picks: Sequence[tuple[int, Sampling, int]]) -> np.ndarray:
    """sample.wgsl's Row per (slot, sampling, draw): 12 words each."""
    table = np.zeros((len(picks), 12), np.uint32)
    floats = table.view(np.float32)
    for r, (slot, s, draw) in enumerate(picks):
        table[r, :4] = slot, draw & 0xFFFFFFFF, min(s.top_k, 0xFFFFFFFF), int(s.biased)
        floats[r, 4:9] = s.temperature, s.top_p, s.presence, s.frequency, s.decay
        table[r, 9:11] = s.seed & 0xFFFFFFFF, (s.seed >> 32) & 0xFFFFFFFF
        floats[r, 11] = s.min_p
    return table


class Runtime:
    """`max_batch` state slots on the GPU and the cached step graphs that advance them. The
    slots' buffers keep within `limits` (the device's by default; engine/slots.py), and
    SlotsDontFit says how many slots fit when `max_batch` do not."""

    def __init__(self, arch: Architecture, ctx, kernels, vecs: wgpu.GPUBuffer, max_batch: int,
                 max_tokens: int, tuning: KernelTuning = DEFAULT_TUNING, limits: BufferLimits | None = None) -> None:
        self.arch = arch
        self.tuning = tuning
        self.ctx = ctx
        self.kernels = kernels
        self.vecs = vecs
        self.max_batch = max_batch
        self.max_tokens = max_tokens
        self.slot_floats = arch.slot_stride()
        n_vocab = arch.info.n_vocab
        self.slots = allocate_slots(ctx, SlotShape(arch.info.n_layer, arch.state_size, n_vocab), max_batch,
                                    max_tokens, limits or BufferLimits.of(ctx.device))
        self.states = self.slots.states
        self.logit_rows = self.slots.logit_rows  # the most logits rows a step makes
        self.io = StepIO(
            ids=ctx.storage(max_tokens * 4),
            tokens=ctx.storage(max_tokens * 16),
            runs=ctx.storage(max_batch * 16),
            out_rows=ctx.storage(max_tokens * 4),
            logits=self.slots.logits,
        )
        self._picks = ctx.storage(max_tokens * 16)
        self._picks_back = (Readback(ctx.device), Readback(ctx.device))
        self._back = 0  # the one the last launch used
        self._choices = ctx.storage(max_tokens * 48)
        self._seen_words = -(-n_vocab // 32)
        self._penalties, self._seen, self._biases = self.slots.penalties, self.slots.seen, self.slots.biases
        self.workspace = Workspace(ctx, max_tokens)
        self._graphs: dict[tuple, StepGraph] = {}
        self._shared: dict = {}
        self._logits_back = Readback(ctx.device)
        self._prepared: dict[tuple, wgpu.GPUCommandBuffer] = {}  # steps recorded ahead, by shape
        self.prerecord = True  # benchmarks switch it off to measure what it saves
        self._written: dict[int, bytes] = {}  # what the step inputs last received

    def _cached(self, key: tuple, t: int, n_runs: int, record: Callable[[StepGraph], None]) -> StepGraph:
        """The graph under `key`, recorded by `record` on first use."""
        graph = self._graphs.get(key)
        if graph is None:
            graph = StepGraph(self.ctx, self.kernels, t, n_runs, self.io, self.states.layers, self.vecs, self._shared,
                              self.tuning)
            record(graph)
            self._graphs[key] = graph
        return graph

    def _graph(self, t: int, n_runs: int, n_out: int) -> StepGraph:
        return self._cached((t, n_runs, n_out), t, n_runs, lambda g: self.arch.record(g, self.workspace, n_out))

    def read_hidden(self, n_rows: int) -> np.ndarray:
        """The final normalized hidden states (ln_out output) of the last step's logits rows."""
        C = self.arch.info.n_embd
        buffer = self.workspace.act("head_in", C, n_rows).buffer
        return self.ctx.read(buffer, n_rows * C * 4).view(np.float32).reshape(n_rows, C)

    def load_slot(self, slot: int, source: wgpu.GPUBuffer) -> None:
        """Copy a flat state (`State.buffer`'s layout) into a slot, after the work submitted before."""
        self.states.load(self.ctx.device, slot, source)

    def save_slot(self, slot: int, target: wgpu.GPUBuffer) -> None:
        """Copy a slot's state into a flat state buffer, after the work submitted before."""
        self.states.save(self.ctx.device, slot, target)

    def set_penalties(self, slot: int, penalties: Mapping[int, float]) -> None:
        """Start a slot's repetition penalties as {token: penalty} (tokens in it count as seen:
        their next occurrence adds the frequency penalty); every other token's is 0."""
        vocab = self.arch.info.n_vocab
        values = np.zeros(vocab, np.float32)
        seen = np.zeros(self._seen_words, np.uint32)
        if penalties:
            ids = np.fromiter(penalties.keys(), np.int64, len(penalties))
            values[ids] = np.fromiter(penalties.values(), np.float64, len(penalties))
            np.bitwise_or.at(seen, ids // 32, (np.uint32(1) << (ids % 32).astype(np.uint32)))
        queue = self.ctx.device.queue
        queue.write_buffer(self._penalties, slot * vocab * 4, values)
        queue.write_buffer(self._seen, slot * self._seen_words * 4, seen)

    def set_bias(self, slot: int, bias: Mapping[int, float]) -> None:
        """A slot's logit bias, {token: added to its logit}, for `Sampling(biased=True)`."""
        values = np.zeros(self.arch.info.n_vocab, np.float32)
        if bias:
            values[np.fromiter(bias.keys(), np.int64, len(bias))] = np.fromiter(bias.values(), np.float64, len(bias))
        self.ctx.device.queue.write_buffer(self._biases, slot * values.nbytes, values)

    def _pick_graph(self, first_row: int, rows: int, feed: bool) -> StepGraph:
        return self._cached(("pick", first_row, rows, feed), 0, 0, lambda g: g.sample(
            self.io.logits, self._picks, self._choices, self._penalties, self._seen, self.io.ids, self._biases,
            self.arch.info.n_vocab, first_row, rows, feed))

    def _record(self, key: tuple, graph: StepGraph) -> wgpu.GPUCommandBuffer:
        _, _, n_out, picked, feed, back = key
        encoder = fast_encode.command_encoder(self.ctx.device)
        graph.encode(encoder)
        n_full = n_out - picked
        if picked:
            self._pick_graph(n_full, picked, feed).encode(encoder)
            self._picks_back[back].record(encoder, self._picks, picked * 16)
        if n_full:
            self._logits_back.record(encoder, self.io.logits, n_full * self.arch.info.n_vocab * 4)
        return encoder.finish()

    def _write_if_changed(self, buffer: wgpu.GPUBuffer, data: np.ndarray) -> None:
        raw = data.tobytes()
        if self._written.get(id(buffer)) != raw:
            fast_encode.write_buffer(self.ctx.device.queue, buffer, raw)
            self._written[id(buffer)] = raw

    def launch(self, runs: list[Run], out_rows: list[int], picks: Sequence[tuple[int, Sampling, int]] = (),
               gpu_fed: bool = False) -> Flight:
        """Submit one step: feed every run into its slot, then make logits for `out_rows`, the
        last len(picks) of which only get a token chosen on the GPU as its (slot, sampling,
        draw number) says. `land` waits for the results. A step whose tokens each run one slot
        with a GPU choice (a decode of chains) also writes its choices as the next step's token
        ids, so the next step of the same runs can go with `gpu_fed=True` before this one lands
        (the run's tokens are then ignored)."""
        t = sum(len(r.tokens) for r in runs)
        picked = len(picks)
        if not 0 < t <= self.max_tokens:
            raise ValueError(f"a step holds 1..{self.max_tokens} tokens, got {t}")
        if not 0 <= picked <= len(out_rows):
            raise ValueError(f"{picked} picks for {len(out_rows)} output rows")
        if len(out_rows) > self.logit_rows:
            raise ValueError(f"a step makes at most {self.logit_rows} logits rows, got {len(out_rows)}")
        feed = t == len(runs) == len(out_rows) == picked
        if gpu_fed and not feed:
            raise ValueError("only a step of one GPU choice per run can take its tokens from the GPU")
        ids, tokens, spans = step_inputs(runs)
        if not gpu_fed:
            fast_encode.write_buffer(self.ctx.device.queue, self.io.ids, ids.tobytes())
        # Decoding repeats the same slots step after step: only the token ids change.
        self._write_if_changed(self.io.tokens, tokens)
        self._write_if_changed(self.io.runs, spans)
        if out_rows:
            self._write_if_changed(self.io.out_rows, np.asarray(out_rows, np.uint32))
        if picks:
            self._write_if_changed(self._choices, choices_table(picks))
        # two readbacks for the picks, taken in turn: a step may land while the next one runs
        self._back = back = 1 - self._back
        key = (t, len(runs), len(out_rows), picked, feed, back)
        graph = self._graph(t, len(runs), len(out_rows))
        n_full = len(out_rows) - picked
        nbytes = n_full * self.arch.info.n_vocab * 4
        replaced = [self._logits_back.reserve(nbytes)] + [b.reserve(picked * 16) for b in self._picks_back]
        if any(replaced):
            self._prepared = {}  # recorded against a replaced readback buffer
        command = self._prepared.pop(key, None) or self._record(key, graph)
        submission = fast_encode.submit(self.ctx.device.queue, command)
        # Record the next step of this shape while the GPU runs this one: decoding repeats the
        # shape, and what changes (token ids, slots) goes in through the buffer writes above.
        # A recorded step waits under its shape until one comes, however long: wgpu-native does not
        # free a command buffer that is dropped without being submitted (~50 kB each on lavapipe),
        # so recording ahead and dropping cost memory with every change of the batch's make-up.
        # Steps that feed prompts rarely repeat their shape, so only decoding steps record ahead.
        if self.prerecord and t == len(runs):
            following = key[:-1] + (1 - back,)
            if following not in self._prepared:
                self._prepared[following] = self._record(following, graph)
        return Flight(n_full, picked, back, submission)

    def land(self, flight: Flight) -> tuple[np.ndarray | None, list[Pick]]:
        """Wait for a launched step: its logits rows [n, vocab] (None if none) and its picks."""
        picks = []
        fast_encode.wait_for(self.ctx.device, flight.submission)
        if flight.picked:
            raw = self._picks_back[flight.back].fetch(flight.picked * 16).view(np.uint32).reshape(-1, 4)
            values = raw[:, 1:3].view(np.float32)
            picks = [Pick(int(i), float(top - norm)) for i, (top, norm) in zip(raw[:, 0], values)]
        if not flight.n_full:
            return None, picks
        nbytes = flight.n_full * self.arch.info.n_vocab * 4
        return self._logits_back.fetch(nbytes).view(np.float32).reshape(flight.n_full, -1), picks

    def step(self, runs: list[Run], out_rows: list[int],
             picks: Sequence[tuple[int, Sampling, int]] = ()) -> np.ndarray | None:
        """`launch` and `land` in one: the logits rows (what `picks` chose is dropped)."""
        logits, _ = self.land(self.launch(runs, out_rows, picks))
        return logits
