"""The EmbeddingRWKV reranker: a small RWKV-7 stack that reads the embedding model's wkv states
after it has read "instruction + document + query" (with EOS), and scores the pair:

    x = LN_out(stack(one token of row 0, layer l's wkv state = backbone layer sel[l]'s))
    logit = w2 · tanh(W1 x + b1)        relevance = σ(logit)

Token-shift states start at zero (the package runs each layer on one token with no shift
state). The stack runs on the same GPU device as the embedding model: the states move by
buffer copies, never through the host.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..formats import read_checkpoint
from ..formats.errors import ModelFormatError
from ..runtime import Run
from ...gpu.graph import Act, StepGraph
from .checkpoint import retrieval_kind, sub_dict, v7_stack
from .embedding import EmbeddingModel
from .stack import GpuStack, StackRunner

#: the pair text the reranker was trained on (the package's online template).
PAIR_TEMPLATE = "Instruct: Given a query, retrieve documents that answer the query\nDocument: {document}\nQuery: {query}"


def layer_selection(tensors: dict[str, np.ndarray], layers: int, backbone_layers: int, source: str) -> list[int]:
    """Which backbone layer each reranker layer reads: `reranker_layer_idx`, else the first ones."""
    chosen = tensors.get("reranker_layer_idx")
    picked = list(range(layers)) if chosen is None else [int(i) for i in np.asarray(chosen).reshape(-1)]
    if len(picked) != layers:
        raise ModelFormatError(f"{source}: reranker_layer_idx names {len(picked)} layers for {layers} reranker layers")
    bad = [i for i in picked if not -backbone_layers <= i < backbone_layers]
    if bad:
        raise ModelFormatError(f"{source}: the reranker reads layer {bad[0]}, the embedding model has {backbone_layers}")
    return [i % backbone_layers for i in picked]


class Reranker:
    def __init__(self, tensors: dict[str, np.ndarray], embedding: EmbeddingModel, precision: str = "fp16",
                 source: str = "reranker") -> None:
        stack, self.info = v7_stack(sub_dict(tensors, "reranker."), source)
        base = embedding.info
        if (self.info.n_head, self.info.head_size) != (base.n_head, base.head_size):
            raise ModelFormatError(
                f"{source}: the reranker's {self.info.n_head} heads of {self.info.head_size} do not match the "
                f"embedding model's {base.n_head} of {base.head_size}")
        self.layers = layer_selection(tensors, self.info.n_layer, base.n_layer, source)
        head = {name: np.asarray(stack.get(f"head.{name}"), np.float32) if f"head.{name}" in stack else None
                for name in ("0.weight", "0.bias", "2.weight")}
        C = self.info.n_embd
        want = {"0.weight": (C, C), "0.bias": (C,), "2.weight": (1, C)}
        for name, shape in want.items():
            if head[name] is None or head[name].shape != shape:
                found = "missing" if head[name] is None else f"shape {head[name].shape}"
                raise ModelFormatError(f"{source}: reranker.head.{name}: expected shape {shape}, {found}")
        self.embedding = embedding
        self.ctx = embedding.ctx
        self.parameters = sum(t.size for t in tensors.values())
        self.stack = GpuStack.upload(stack, self.info, self.ctx, precision, embedding.stack.kernels)
        up = self.stack.up
        self.w1, self.w2 = up.matrix(head["0.weight"]), up.matrix(head["2.weight"])
        self.b1 = up.vectors.add(head["0.bias"])
        self.stack.finish_vectors()
        self.runner = StackRunner(self.stack, embedding.max_batch, embedding.max_batch)
        self._scores = self.ctx.storage(embedding.max_batch * 4)

    def _finish(self, g: StepGraph, hidden: Act) -> None:
        mid = self.runner.workspace.act("score_mid", self.info.n_embd, hidden.t)
        g.matmul(self.w1, hidden, mid)
        g.bias_tanh(mid, self.b1)
        g.matmul(self.w2, mid, Act(self._scores, 1, hidden.t))

    def logits(self, pairs: Sequence[Sequence[int]]) -> np.ndarray:
        """The reranker's logit for each pair's token list (instruction, document, query, EOS)."""
        emb, runner, ctx = self.embedding, self.runner, self.ctx
        layer_bytes = emb.stack.arch.state_size * 4
        wkv_offset, wkv_bytes = self.info.n_embd * 4, self.info.n_head * self.info.head_size ** 2 * 4
        out = []
        for start in range(0, len(pairs), emb.max_batch):
            group = pairs[start:start + emb.max_batch]
            emb.feed(group, pool=False)
            encoder = ctx.device.create_command_encoder()
            runner.zero(encoder, len(group))
            for slot in range(len(group)):
                for layer, source in enumerate(self.layers):
                    encoder.copy_buffer_to_buffer(
                        emb.runner.state, slot * emb.runner.slot_floats * 4 + source * layer_bytes + wkv_offset,
                        runner.state, slot * runner.slot_floats * 4 + layer * layer_bytes + wkv_offset, wkv_bytes)
            runner.step(encoder, [Run(slot, [0]) for slot in range(len(group))], list(range(len(group))),
                        self._finish, ("score",))
            out.append(ctx.read(self._scores, len(group) * 4, encoder=encoder).view(np.float32).copy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def scores(self, pairs: Sequence[Sequence[int]]) -> np.ndarray:
        """Relevance in (0, 1): σ(logit)."""
        return (1.0 / (1.0 + np.exp(-self.logits(pairs).astype(np.float64)))).astype(np.float32)


def load_reranker(path: str | Path, embedding: EmbeddingModel, precision: str = "fp16") -> Reranker:
    """Read a reranker checkpoint (.pth or safetensors) onto the embedding model's GPU."""
    tensors = read_checkpoint(path)
    if retrieval_kind(tensors) != "reranker":
        raise ModelFormatError(f"{path}: not an EmbeddingRWKV reranker checkpoint (no reranker.* tensors)")
    return Reranker(tensors, embedding, precision, str(path))
