"""An RWKV-7 stack whose output is its final hidden states, not logits, run over GPU slots.

The layers are the language model's (versions/v7.py); what differs is the end of a step:
`StackRunner.step` records the stack, then LN_out of the chosen rows into `hidden`, then
whatever the caller's `finish` adds (pooling, a scoring head), all in one submit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import wgpu

from ...gpu.context import GpuContext
from ...gpu.graph import Act, StateRef, StepGraph, StepIO
from ...gpu.kernels import KernelCache
from ...gpu.tuning import DEFAULT_TUNING, KernelTuning
from ..info import ModelInfo
from ..runtime import Run, step_inputs
from ..upload import TensorReads, Uploader
from ..versions.common import Workspace
from ..versions.v7 import V7


class HiddenV7(V7):
    """v7 weights on the GPU; `record_stack` stops at the stack's output (head left out)."""

    def record_stack(self, g: StepGraph, ws: Workspace) -> Act:
        x = ws.act("x", self.info.n_embd, g.t)
        g.embed(self.emb, x)
        for layer in range(self.info.n_layer):
            self.time_mix(g, ws, layer, x)
            self.channel_mix(g, ws, layer, x)
        return x


@dataclass
class GpuStack:
    """A v7 stack uploaded: its weights, vector table and kernels."""

    arch: HiddenV7
    ctx: GpuContext
    kernels: KernelCache
    vecs: wgpu.GPUBuffer
    up: Uploader
    tuning: KernelTuning

    @classmethod
    def upload(cls, tensors: dict[str, np.ndarray], info: ModelInfo, ctx: GpuContext, precision: str,
               kernels: KernelCache | None = None, tuning: KernelTuning = DEFAULT_TUNING) -> "GpuStack":
        up = Uploader(ctx, precision, sources=TensorReads(tensors))
        arch = HiddenV7(tensors, info, up)
        return cls(arch, ctx, kernels or KernelCache(ctx.device), ctx.upload(up.vectors.pack()), up, tuning)

    def finish_vectors(self) -> None:
        """Upload the vector table again after adding to it (heads' norms and biases)."""
        self.vecs = self.ctx.upload(self.up.vectors.pack())


Finish = Callable[[StepGraph, Act], None]  # records the ops after LN_out (its rows: `hidden`)


class StackRunner:
    """`max_batch` state slots of one stack and the step graphs that feed them."""

    def __init__(self, stack: GpuStack, max_batch: int, max_tokens: int) -> None:
        self.stack = stack
        ctx = stack.ctx
        self.max_batch = max_batch
        self.max_tokens = max(max_tokens, max_batch)
        self.slot_floats = stack.arch.slot_stride()
        self.state = ctx.storage(max_batch * self.slot_floats * 4)  # slot after slot, layer after layer
        n_layer = stack.arch.info.n_layer
        layer_floats = self.slot_floats // n_layer
        self.layers = [StateRef(self.state, layer * layer_floats, self.slot_floats) for layer in range(n_layer)]
        self._zeros = ctx.storage(max_batch * self.slot_floats * 4)
        t = self.max_tokens
        self.io = StepIO(ids=ctx.storage(t * 4), tokens=ctx.storage(t * 16), runs=ctx.storage(max_batch * 16),
                         out_rows=ctx.storage(t * 4), logits=ctx.storage(16))
        self.workspace = Workspace(ctx, self.max_tokens)
        self._graphs: dict[tuple, StepGraph] = {}
        self._shared: dict = {}

    @property
    def width(self) -> int:
        return self.stack.arch.info.n_embd

    def hidden(self, rows: int) -> Act:
        return self.workspace.act("hidden", self.width, rows)

    def graph(self, key: tuple, t: int, n_runs: int, record: Callable[[StepGraph], None]) -> StepGraph:
        graph = self._graphs.get(key)
        if graph is None:
            s = self.stack
            graph = StepGraph(s.ctx, s.kernels, t, n_runs, self.io, self.layers, s.vecs, self._shared, s.tuning)
            record(graph)
            self._graphs[key] = graph
        return graph

    def zero(self, encoder: wgpu.GPUCommandEncoder, slots: int) -> None:
        encoder.copy_buffer_to_buffer(self._zeros, 0, self.state, 0, slots * self.slot_floats * 4)

    def write_step(self, runs: list[Run], out_rows: list[int]) -> None:
        """The step inputs the kernels read: token ids, each token's slot and run, the runs, and
        the rows whose hidden states are wanted."""
        ids, tokens, spans = step_inputs(runs)
        queue = self.stack.ctx.device.queue
        queue.write_buffer(self.io.ids, 0, ids)
        queue.write_buffer(self.io.tokens, 0, tokens)
        queue.write_buffer(self.io.runs, 0, spans)
        if out_rows:
            queue.write_buffer(self.io.out_rows, 0, np.asarray(out_rows, np.uint32))

    def step(self, encoder: wgpu.GPUCommandEncoder, runs: list[Run], out_rows: list[int],
             finish: Finish | None = None, finish_key: tuple = ()) -> None:
        """Record one step into `encoder`: the runs through the stack, LN_out of `out_rows` into
        `hidden(len(out_rows))`, then `finish` (its graph cached under `finish_key`)."""
        t = sum(len(r.tokens) for r in runs)
        if not 0 < t <= self.max_tokens or len(runs) > self.max_batch:
            raise ValueError(f"a step holds 1..{self.max_tokens} tokens of at most {self.max_batch} runs")
        self.write_step(runs, out_rows)
        arch, n_out = self.stack.arch, len(out_rows)

        def record(g: StepGraph) -> None:
            x = arch.record_stack(g, self.workspace)
            if n_out:
                hidden = self.hidden(n_out)
                g.layer_norm_rows(x, hidden, arch.ln_out.w, arch.ln_out.b)
                if finish is not None:
                    finish(g, hidden)

        self.graph((t, len(runs), n_out, finish_key), t, len(runs), record).encode(encoder)
