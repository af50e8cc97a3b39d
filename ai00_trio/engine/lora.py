"""LoRA adapters merged into a checkpoint's tensors at load time, as AI00 blends them.

A LoRA file (safetensors or ``.pth``) holds, for some linear layers ``W`` (``[out, in]``),
a low-rank pair, and it may hold whole vectors or matrices trained alongside it:

* ``{stem}.lora_A`` ``[r, in]`` and ``{stem}.lora_B`` ``[out, r]`` (BlinkDL's and PEFT's
  names), or AI00's converted ``{stem}.lora.0`` / ``{stem}.lora.1`` (either orientation,
  told apart by the shapes). The layer is ``{stem}.weight`` (or ``{stem}`` when the stem
  already ends in ``.weight``), and it becomes  W + (alpha / r) · B A.
* any other tensor replaces the model's tensor of that name, which must exist with the same
  shape (AI00's renames ``time_mix → time_maa`` and ``time_first → time_faaaa`` are undone).

Several adapters apply in order. The merge runs once, on the host, before the weights go to
the GPU, so a merged model runs exactly as fast as the base model.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .formats import ModelFormatError, read_checkpoint

PAIR_SUFFIXES = ((".lora_A", ".lora_B"), (".lora.0", ".lora.1"))
AI00_RENAMES = ((".time_mix", ".time_maa"), (".time_first", ".time_faaaa"))


def merge_loras(tensors: dict[str, np.ndarray], loras: Sequence[tuple[str | Path, float]]) -> dict[str, np.ndarray]:
    """`tensors` (the canonical checkpoint) with every (path, alpha) adapter merged in order."""
    merged = dict(tensors)
    for path, alpha in loras:
        _merge_one(merged, Path(path), float(alpha))
    return merged


def _merge_one(tensors: dict[str, np.ndarray], path: Path, alpha: float) -> None:
    lora = read_checkpoint(path, layout="pytorch")
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    paired: set[str] = set()  # the names those pairs came from
    for name in sorted(lora):
        for down, up in PAIR_SUFFIXES:
            if name.endswith(down):
                stem = name[: -len(down)]
                if stem + up not in lora:
                    raise ModelFormatError(f"{path}: {name} has no partner {stem + up}")
                pairs[stem] = (lora[name], lora[stem + up])
                paired.update((name, stem + up))
    for stem, (a, b) in pairs.items():
        target = stem if stem.endswith(".weight") else stem + ".weight"
        if target not in tensors:
            raise ModelFormatError(f"{path}: LoRA {stem} names no layer of the model ({target} is missing)")
        base = tensors[target]
        product, rank = _product(path, stem, a, b, base.shape)
        tensors[target] = (base.astype(np.float32) + alpha / rank * product).astype(base.dtype)
    for name, array in lora.items():
        if name in paired:
            continue
        target = _model_name(tensors, name)
        if target is None:
            raise ModelFormatError(f"{path}: tensor {name} matches no tensor of the model")
        if tensors[target].shape != array.shape:
            raise ModelFormatError(f"{path}: tensor {name} is {list(array.shape)}, "
                                   f"the model's {target} is {list(tensors[target].shape)}")
        tensors[target] = array.astype(tensors[target].dtype)


def _product(path: Path, stem: str, a: np.ndarray, b: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, int]:
    """(B A as [out, in] in float32, the rank r) from a pair stored either way round."""
    if a.ndim != 2 or b.ndim != 2 or len(shape) != 2:
        raise ModelFormatError(f"{path}: LoRA {stem} must be two matrices for a matrix layer")
    out, inp = shape
    a = a if a.shape[1] == inp else a.T      # → [r, in]
    b = b if b.shape[0] == out else b.T      # → [out, r]
    if a.shape[1] != inp or b.shape[0] != out or a.shape[0] != b.shape[1]:
        raise ModelFormatError(f"{path}: LoRA {stem} shapes {list(a.shape)} and {list(b.shape)} "
                               f"do not make a [{out}, {inp}] layer")
    return b.astype(np.float32) @ a.astype(np.float32), a.shape[0]


def _model_name(tensors: dict[str, np.ndarray], name: str) -> str | None:
    if name in tensors:
        return name
    for ai00, canonical in AI00_RENAMES:
        renamed = name.replace(ai00, canonical)
        if renamed in tensors:
            return renamed
    return None
