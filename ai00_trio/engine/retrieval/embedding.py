"""EmbeddingRWKV: a text's embedding is a task head applied to the mean of the backbone's
final hidden states (LN_out) at its EOS tokens (id 65535), L2-normalized here:

    e = normalize(LN(W2 relu(W1 p) + p)),  p = mean of LN_out(x_t) over t with token_t = EOS

Texts run batched through GPU slots, in chunks of at most `max_tokens` tokens per step; each
step pools its EOS rows into the texts' accumulators on the GPU; one more pass applies the head.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import struct

import numpy as np

from ...gpu.context import GpuContext, create_context
from ...gpu.graph import Act, StepGraph
from ..formats import read_checkpoint
from ..formats.errors import ModelFormatError
from ..runtime import Run
from ..versions.common import Norm
from .checkpoint import DEFAULT_TASK, EOS_TOKEN, TASKS, retrieval_kind, sub_dict, task_heads, v7_stack
from .stack import GpuStack, StackRunner

DEFAULT_BATCH = 8
DEFAULT_TOKENS = 256


class _Head:
    """One task head on the GPU: fc1 [hidden, C], fc2 [C, hidden], its LayerNorm."""

    def __init__(self, stack: GpuStack, parts: dict[str, np.ndarray]) -> None:
        up = stack.up
        self.fc1 = up.matrix(parts["fc1.weight"])
        self.fc2 = up.matrix(parts["fc2.weight"])
        self.hidden = parts["fc1.weight"].shape[0]
        self.norm = Norm(up.vectors.add(parts["norm.weight"]), up.vectors.add(parts["norm.bias"]))


def with_eos(tokens: Sequence[int]) -> list[int]:
    """The tokens as the model must read them: ending in EOS (appended where none is there)."""
    tokens = [int(t) for t in tokens]
    return tokens if EOS_TOKEN in tokens else tokens + [EOS_TOKEN]


class EmbeddingModel:
    """An EmbeddingRWKV checkpoint on the GPU. `embed` gives unit vectors; `feed` leaves the
    backbone's states in the runner's slots (what a reranker reads)."""

    def __init__(self, tensors: dict[str, np.ndarray], ctx: GpuContext, precision: str = "fp16",
                 max_batch: int = DEFAULT_BATCH, max_tokens: int = DEFAULT_TOKENS, source: str = "model") -> None:
        backbone, self.info = v7_stack(sub_dict(tensors, "rwkv."), source)
        heads = task_heads(tensors, self.info.n_embd, source)
        self.parameters = sum(t.size for t in tensors.values())
        self.stack = GpuStack.upload(backbone, self.info, ctx, precision)
        self.heads = {key: _Head(self.stack, parts) for key, parts in heads.items()}
        self.stack.finish_vectors()
        self.ctx = ctx
        self.runner = StackRunner(self.stack, max_batch, max_tokens)
        C, B = self.info.n_embd, max_batch
        self._acc = ctx.storage(B * C * 4)
        self._out = ctx.storage(B * C * 4)
        self._table = ctx.storage(B * 16)
        self._head_rows = ctx.upload(np.arange(B, dtype=np.uint32))
        self._head_graphs: dict[tuple, StepGraph] = {}

    @property
    def tasks(self) -> list[str]:
        return sorted(name for name, key in TASKS.items() if key in self.heads and name.isalpha() and len(name) > 3)

    @property
    def max_batch(self) -> int:
        return self.runner.max_batch

    def head_key(self, task: str | None) -> str:
        key = TASKS.get(task or DEFAULT_TASK)
        if key is None or key not in self.heads:
            raise ValueError(f"unknown task {task!r}; this model has: {', '.join(self.tasks)}")
        return key

    def check_tokens(self, tokens: Sequence[int]) -> None:
        vocab = self.info.n_vocab
        bad = [t for t in tokens if not 0 <= int(t) < vocab]
        if bad:
            raise ValueError(f"token id {bad[0]} out of range 0..{vocab - 1}")
        if not tokens:
            raise ValueError("an input needs at least one token")

    # --- feeding -----------------------------------------------------------------------------
    def feed(self, group: Sequence[Sequence[int]], pool: bool) -> None:
        """Run each token list of `group` (at most max_batch) from the zero state in its own slot
        (slot i for list i). With `pool`, each list's EOS rows are averaged into its accumulator."""
        runner, ctx = self.runner, self.ctx
        if len(group) > runner.max_batch:
            raise ValueError(f"at most {runner.max_batch} sequences at once")
        for tokens in group:
            self.check_tokens(tokens)
        C = self.info.n_embd
        encoder = ctx.device.create_command_encoder()
        runner.zero(encoder, len(group))
        if pool:
            encoder.clear_buffer(self._acc, 0, len(group) * C * 4)
        eos_counts = [sum(1 for t in tokens if t == EOS_TOKEN) for tokens in group]
        pos = [0] * len(group)
        while True:
            active = [i for i, tokens in enumerate(group) if pos[i] < len(tokens)]
            if not active:
                break
            share = max(1, runner.max_tokens // len(active))
            runs, rows, table, start = [], [], [], 0
            for i in active:
                chunk = list(group[i][pos[i]:pos[i] + share])
                pos[i] += len(chunk)
                runs.append(Run(i, chunk))
                eos = [start + j for j, t in enumerate(chunk) if t == EOS_TOKEN]
                if pool and eos:
                    table.append((i, len(rows), len(eos), 1.0 / eos_counts[i]))
                    rows += eos
                start += len(chunk)
            if table:
                raw = b"".join(struct.pack("<IIIf", *entry) for entry in table)
                ctx.device.queue.write_buffer(self._table, 0, raw)
            n_groups = len(table)
            runner.step(encoder, runs, rows if pool else [],
                        (lambda g, hidden: self._pool(g, hidden, n_groups)) if n_groups else None,
                        ("pool", n_groups))
            ctx.device.queue.submit([encoder.finish()])
            encoder = ctx.device.create_command_encoder()
        ctx.device.queue.submit([encoder.finish()])

    def _pool(self, g: StepGraph, hidden: Act, n_groups: int) -> None:
        g.pool_rows(hidden, self._table, n_groups, self._acc)

    # --- the head ----------------------------------------------------------------------------
    def _head_graph(self, key: str, rows: int) -> StepGraph:
        graph = self._head_graphs.get((key, rows))
        if graph is not None:
            return graph
        s, runner, head, C = self.stack, self.runner, self.heads[key], self.info.n_embd
        io = type(runner.io)(ids=runner.io.ids, tokens=runner.io.tokens, runs=runner.io.runs,
                             out_rows=self._head_rows, logits=runner.io.logits)
        g = StepGraph(s.ctx, s.kernels, rows, 0, io, runner.layers, s.vecs, {}, s.tuning)
        acc, out = Act(self._acc, C, rows), Act(self._out, C, rows)
        mid = runner.workspace.act("head_mid", head.hidden, rows)
        g.matmul(head.fc1, acc, mid, act="relu")
        g.matmul(head.fc2, mid, acc, add=True)
        g.layer_norm_rows(acc, out, head.norm.w, head.norm.b)
        g.l2_normalize(out)
        self._head_graphs[(key, rows)] = g
        return g

    def embed(self, token_lists: Sequence[Sequence[int]], task: str | None = None) -> np.ndarray:
        """Unit embeddings [n, C] (float32) of token lists (each should end in EOS: `with_eos`)."""
        key = self.head_key(task)
        C, out = self.info.n_embd, []
        for start in range(0, len(token_lists), self.max_batch):
            group = token_lists[start:start + self.max_batch]
            if any(EOS_TOKEN not in tokens for tokens in group):
                raise ValueError(f"every input must hold the EOS token {EOS_TOKEN}")
            self.feed(group, pool=True)
            encoder = self.ctx.device.create_command_encoder()
            self._head_graph(key, len(group)).encode(encoder)
            raw = self.ctx.read(self._out, len(group) * C * 4, encoder=encoder)
            out.append(raw.view(np.float32).reshape(len(group), C).copy())
        return np.concatenate(out) if out else np.zeros((0, C), np.float32)

    def wkv_state(self, slot: int) -> np.ndarray:
        """The backbone's wkv states of a slot after `feed`, [n_layer, H, N value, N key] (the
        package's layout; for tests and debugging)."""
        info, arch, runner = self.info, self.stack.arch, self.runner
        raw = self.ctx.read(runner.state, runner.slot_floats * 4, slot * runner.slot_floats * 4)
        layers = raw.view(np.float32).reshape(info.n_layer, -1)
        return np.stack([arch.layer_to_reference(layer)[1] for layer in layers])


def load_embedding_model(path: str | Path, precision: str = "fp16", adapter: int | str | None = None,
                         context: GpuContext | None = None, max_batch: int = DEFAULT_BATCH,
                         max_tokens: int = DEFAULT_TOKENS) -> EmbeddingModel:
    """Read an EmbeddingRWKV checkpoint (.pth as published, or safetensors) onto the GPU."""
    tensors = read_checkpoint(path)
    if retrieval_kind(tensors) != "embedding":
        raise ModelFormatError(f"{path}: not an EmbeddingRWKV checkpoint (no rwkv.* and head.* tensors)")
    return EmbeddingModel(tensors, context or create_context(adapter), precision, max_batch, max_tokens, str(path))

