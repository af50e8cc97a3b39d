"""LoRA adapters merged into a checkpoint's tensors at load time, as AI00 blends them.

A LoRA file (safetensors or ``.pth``) holds, for some linear layers ``W`` (``[out, in]``),
a low-rank pair, and it may hold whole vectors or matrices trained alongside it:

* ``{stem}.lora_A`` ``[r, in]`` and ``{stem}.lora_B`` ``[out, r]`` (BlinkDL's and PEFT's
  names), or AI00's converted ``{stem}.lora.0`` / ``{stem}.lora.1`` (either orientation,
  told apart by the shapes). The layer is ``{stem}.weight`` (or ``{stem}`` when the stem
  already ends in ``.weight``), and it becomes  W + (alpha / r) · B A.
* any other tensor replaces the model's tensor of that name, which must exist with the same
  shape (AI00's renames ``time_mix → time_maa`` and ``time_first → time_faaaa`` are undone).

Several adapters apply in order. `merge_loras` runs once, on the host, before the weights go
to the GPU, so a merged model runs exactly as fast as the base model; `engine/hotswap.py`
applies the same `LoraPlan` to a model already on the GPU.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .formats import ModelFormatError, read_checkpoint

PAIR_SUFFIXES = ((".lora_A", ".lora_B"), (".lora.0", ".lora.1"))
AI00_RENAMES = ((".time_mix", ".time_maa"), (".time_first", ".time_faaaa"))


@dataclass(frozen=True)
class LoraDelta:
    """W_target += scale · B A, with A [r, in] and B [out, r] in float32 and scale = alpha / r."""
    target: str
    a: np.ndarray
    b: np.ndarray
    scale: float

    def product(self) -> np.ndarray:
        return self.b @ self.a


@dataclass(frozen=True)
class LoraPlan:
    """What one adapter does to a model: low-rank deltas, then whole tensors replaced."""
    origin: str                                # the file (or "tensors"), for messages
    deltas: list[LoraDelta]
    replacements: dict[str, np.ndarray]        # model tensor name -> its new value


def merge_loras(tensors: dict[str, np.ndarray], loras: Sequence[tuple[str | Path, float]]) -> dict[str, np.ndarray]:
    """`tensors` (the canonical checkpoint) with every (path, alpha) adapter merged in order."""
    merged = dict(tensors)
    for path, alpha in loras:
        shapes = {name: tuple(array.shape) for name, array in merged.items()}
        plan = plan_lora(read_lora(path), float(alpha), shapes, str(path))
        for delta in plan.deltas:
            base = merged[delta.target]
            merged[delta.target] = (base.astype(np.float32) + delta.scale * delta.product()).astype(base.dtype)
        for name, array in plan.replacements.items():
            merged[name] = array.astype(merged[name].dtype)
    return merged


def read_lora(path: str | Path) -> dict[str, np.ndarray]:
    return read_checkpoint(Path(path), layout="pytorch")


def plan_lora(lora: Mapping[str, np.ndarray], alpha: float, shapes: Mapping[str, tuple[int, ...]],
              origin: str) -> LoraPlan:
    """The adapter `lora` checked against a model whose tensors have `shapes`; a ModelFormatError
    names `origin` and the tensor for anything that does not fit."""
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    paired: set[str] = set()  # the names those pairs came from
    for name in sorted(lora):
        for down, up in PAIR_SUFFIXES:
            if name.endswith(down):
                stem = name[: -len(down)]
                if stem + up not in lora:
                    raise ModelFormatError(f"{origin}: {name} has no partner {stem + up}")
                pairs[stem] = (lora[name], lora[stem + up])
                paired.update((name, stem + up))
    deltas = []
    for stem, (a, b) in pairs.items():
        target = stem if stem.endswith(".weight") else stem + ".weight"
        if target not in shapes:
            raise ModelFormatError(f"{origin}: LoRA {stem} names no layer of the model ({target} is missing)")
        a, b = _oriented(origin, stem, a, b, shapes[target])
        deltas.append(LoraDelta(target, a, b, alpha / a.shape[0]))
    replacements = {}
    for name, array in lora.items():
        if name in paired:
            continue
        target = _model_name(shapes, name)
        if target is None:
            raise ModelFormatError(f"{origin}: tensor {name} matches no tensor of the model")
        if shapes[target] != tuple(array.shape):
            raise ModelFormatError(f"{origin}: tensor {name} is {list(array.shape)}, "
                                   f"the model's {target} is {list(shapes[target])}")
        replacements[target] = np.asarray(array)
    return LoraPlan(origin, deltas, replacements)


def _oriented(origin: str, stem: str, a: np.ndarray, b: np.ndarray,
              shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(A [r, in], B [out, r]) in float32 from a pair stored either way round."""
    if a.ndim != 2 or b.ndim != 2 or len(shape) != 2:
        raise ModelFormatError(f"{origin}: LoRA {stem} must be two matrices for a matrix layer")
    out, inp = shape
    a = a if a.shape[1] == inp else a.T      # → [r, in]
    b = b if b.shape[0] == out else b.T      # → [out, r]
    if a.shape[1] != inp or b.shape[0] != out or a.shape[0] != b.shape[1]:
        raise ModelFormatError(f"{origin}: LoRA {stem} shapes {list(a.shape)} and {list(b.shape)} "
                               f"do not make a [{out}, {inp}] layer")
    return np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.float32)


def _model_name(shapes: Mapping[str, tuple[int, ...]], name: str) -> str | None:
    if name in shapes:
        return name
    for ai00, canonical in AI00_RENAMES:
        renamed = name.replace(ai00, canonical)
        if renamed in shapes:
            return renamed
    return None
