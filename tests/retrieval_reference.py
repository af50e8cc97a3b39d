"""EmbeddingRWKV and its reranker stated in float64 numpy, and random checkpoints of their layout.

Read from the `rwkv-emb` package's model (0.2.6): the embedding is the chosen task head,
LN(fc2 relu(fc1 p) + p), of p = the mean of the backbone's LN_out hidden states at EOS tokens;
the reranker runs one token of row 0 through its own RWKV-7 stack, layer l starting from the
backbone's wkv state of layer sel[l] (token shift from zero), then w2 · tanh(W1 LN_out(x) + b1).
The backbone math is tests/reference64.py's v7.
"""
from __future__ import annotations

import numpy as np

from reference64 import Reference64, layer_norm, random_checkpoint

EOS = 65535
VOCAB = 65536
TASK_KEYS = ("retr", "sts", "cls")


def _normal(rng: np.random.Generator, *shape: int, scale: float) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float16).astype(np.float32)


def random_embedding_checkpoint(width: int = 64, layers: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """An EmbeddingRWKV checkpoint of random weights: `rwkv.*` (no LM head) and three task heads
    (fc2 not zero, unlike a fresh head, so that the test sees it)."""
    backbone = random_checkpoint("v7", width, layers, VOCAB, seed=seed)
    del backbone["head.weight"]
    rng = np.random.default_rng(seed + 1)
    d = {f"rwkv.{k}": v for k, v in backbone.items()}
    for key in TASK_KEYS:
        h = f"head.{key}_head."
        d[h + "fc1.weight"] = _normal(rng, width, width, scale=0.3)
        d[h + "fc2.weight"] = _normal(rng, width, width, scale=0.3)
        d[h + "norm.weight"] = (1 + _normal(rng, width, scale=0.1)).astype(np.float32)
        d[h + "norm.bias"] = _normal(rng, width, scale=0.1)
    return d


def _reranker_lora_dims(width: int) -> dict[str, int]:
    """The low-rank widths the package's ReRanker gives a stack of `width` (its "suggestion"
    formulas; the backbone reads its own from the checkpoint)."""
    def rounded(x: float) -> int:
        return max(32, int(round(x / 32)) * 32)
    gate = 128 if width == 1024 else rounded(0.6 * width ** 0.8)
    return {"w": rounded(1.8 * width ** 0.5), "a": rounded(1.8 * width ** 0.5), "v": rounded(1.3 * width ** 0.5),
            "g": gate}


def random_reranker_checkpoint(width: int = 64, layers: int = 2, seed: int = 7,
                               layer_idx: list[int] | None = None) -> dict[str, np.ndarray]:
    """A reranker checkpoint of random weights: `reranker.*` (its one input row as token.weight,
    as published) and, if given, `reranker_layer_idx`."""
    stack = random_checkpoint("v7", width, layers, 1, seed=seed)
    del stack["head.weight"]
    for key, dim in _reranker_lora_dims(width).items():  # the package builds these, not reads them
        for i in range(layers):
            first, second = f"blocks.{i}.att.{key}1", f"blocks.{i}.att.{key}2"
            if first in stack:
                stack[first], stack[second] = stack[first][:, :dim], stack[second][:dim]
    stack["token.weight"] = stack.pop("emb.weight") * 100  # a row of real scale: ln0 follows
    rng = np.random.default_rng(seed + 1)
    stack["head.0.weight"] = _normal(rng, width, width, scale=1.0)
    stack["head.0.bias"] = _normal(rng, width, scale=0.1)
    stack["head.2.weight"] = _normal(rng, 1, width, scale=2.0)
    d = {f"reranker.{k}": v for k, v in stack.items()}
    if layer_idx is not None:
        d["reranker_layer_idx"] = np.asarray(layer_idx, np.int64)
    return d


def _stack(tensors: dict[str, np.ndarray], prefix: str) -> Reference64:
    """A Reference64 over a prefixed v7 stack whose 'logits' are its LN_out hidden states."""
    t = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if "token.weight" in t:
        t["emb.weight"] = t.pop("token.weight")
    t["head.weight"] = np.eye(t["emb.weight"].shape[1], dtype=np.float32)
    return Reference64(t, "v7")


def embed64(tensors: dict[str, np.ndarray], tokens: list[int], task: str = "retr") -> tuple[np.ndarray, list[np.ndarray]]:
    """(the embedding before our L2 normalization, the backbone's wkv states [H, N value, N key])."""
    ref = _stack(tensors, "rwkv.")
    hidden = ref.forward(tokens)
    pooled = hidden[[i for i, t in enumerate(tokens) if t == EOS]].mean(0)
    w = {k: np.asarray(v, np.float64) for k, v in tensors.items() if k.startswith(f"head.{task}_head.")}
    h = f"head.{task}_head."
    mid = np.maximum(pooled @ w[h + "fc1.weight"].T, 0) @ w[h + "fc2.weight"].T
    return layer_norm(mid + pooled, w[h + "norm.weight"], w[h + "norm.bias"]), list(ref.wkv)


def rerank64(reranker: dict[str, np.ndarray], states: list[np.ndarray]) -> float:
    """The reranker's logit over the backbone's wkv states (all of its layers)."""
    ref = _stack(reranker, "reranker.")
    chosen = reranker.get("reranker_layer_idx")
    picked = list(range(ref.layers)) if chosen is None else [int(i) for i in chosen]
    ref.wkv = [np.array(states[i], np.float64) for i in picked]
    x = ref.forward([0])[0]
    w = {k: np.asarray(v, np.float64) for k, v in reranker.items()}
    return float((w["reranker.head.2.weight"] @ np.tanh(w["reranker.head.0.weight"] @ x + w["reranker.head.0.bias"]))[0])
