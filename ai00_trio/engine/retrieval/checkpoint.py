"""EmbeddingRWKV checkpoints: what they hold and how their parts are named.

An embedding model has an RWKV-7 backbone under `rwkv.` (a language model's tensors, its
`head.weight` optional) and task heads under `head.<task>_head.` (fc1, fc2, norm). A reranker
has a small RWKV-7 stack under `reranker.` (its one input row as `emb.weight` or
`token.weight`, a scoring head `head.0` (Linear with bias) and `head.2` (Linear to one value)),
and optionally `reranker_layer_idx`: which backbone layers' states its layers read.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np

from ..formats.errors import ModelFormatError
from ..info import ModelInfo, detect_model

RetrievalKind = Literal["embedding", "reranker"]

EOS_TOKEN = 65535  # ends every text the embedding model reads; its hidden states are pooled
#: task names a request may give → the head's key prefix.
TASKS = {"retrieval": "retr", "retr": "retr", "[RETR]": "retr",
         "similarity": "sts", "sts": "sts", "[STS]": "sts",
         "classification": "cls", "cls": "cls", "[CLS]": "cls"}
DEFAULT_TASK = "retrieval"
HEAD_PARTS = ("fc1.weight", "fc2.weight", "norm.weight", "norm.bias")


def retrieval_kind(tensors: Mapping[str, np.ndarray]) -> RetrievalKind | None:
    """"embedding" or "reranker" for an EmbeddingRWKV checkpoint's tensors, else None."""
    if any(name.startswith("reranker.") for name in tensors):
        return "reranker"
    if any(name.startswith("rwkv.") for name in tensors) and any(name.startswith("head.") for name in tensors):
        return "embedding"
    return None


def sub_dict(tensors: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)}


def v7_stack(tensors: dict[str, np.ndarray], what: str) -> tuple[dict[str, np.ndarray], ModelInfo]:
    """An RWKV-7 stack's tensors with a one-row stand-in head (the stack's output is read as
    hidden states, never as logits), and its description, checked like a language model's."""
    tensors = dict(tensors)
    if "token.weight" in tensors and "emb.weight" not in tensors:
        tensors["emb.weight"] = tensors.pop("token.weight")
    if "emb.weight" not in tensors:
        raise ModelFormatError(f"{what}: no emb.weight")
    vocab, width = tensors["emb.weight"].shape
    # detect_model checks the head's shape; a broadcast view costs no memory
    shaped = dict(tensors, **{"head.weight": np.broadcast_to(np.zeros((), np.float32), (vocab, width))})
    try:
        info = detect_model(shaped, what)
    except ModelFormatError:
        raise
    if info.version != "v7":
        raise ModelFormatError(f"{what}: an RWKV-7 stack is expected, found {info.version}")
    tensors["head.weight"] = np.zeros((1, width), np.float32)
    return tensors, info


def task_heads(tensors: Mapping[str, np.ndarray], width: int, source: str) -> dict[str, dict[str, np.ndarray]]:
    """{"retr": {fc1.weight, ...}, ...}: every complete task head, shapes checked."""
    heads: dict[str, dict[str, np.ndarray]] = {}
    for key in sorted(set(TASKS.values())):
        parts = sub_dict(tensors, f"head.{key}_head.")
        if not parts:
            continue
        missing = [p for p in HEAD_PARTS if p not in parts]
        if missing:
            raise ModelFormatError(f"{source}: head.{key}_head lacks {', '.join(missing)}")
        hidden = parts["fc1.weight"].shape[0]
        want = {"fc1.weight": (hidden, width), "fc2.weight": (width, hidden), "norm.weight": (width,),
                "norm.bias": (width,)}
        for part, shape in want.items():
            if tuple(parts[part].shape) != shape:
                raise ModelFormatError(f"{source}: head.{key}_head.{part}: expected shape {shape}, "
                                       f"found {tuple(parts[part].shape)}")
        heads[key] = {p: np.asarray(parts[p], np.float32) for p in HEAD_PARTS}
    if not heads:
        raise ModelFormatError(f"{source}: no task heads (head.retr_head.*, head.sts_head.*, head.cls_head.*)")
    return heads
