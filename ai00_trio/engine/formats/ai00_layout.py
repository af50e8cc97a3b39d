"""Recognise the AI00 / web-rwkv ``.st`` layout and convert it back to PyTorch names and shapes.

What web-rwkv's converter (``convert_safetensors.py``) does to a BlinkDL ``.pth``:

* every tensor becomes float16 and every name is lower-cased;
* names are renamed ``time_faaaa -> time_first`` and ``time_maa -> time_mix``;
* the last two dims are swapped for the LoRA-style matrices ``time_mix_w1``,
  ``time_mix_w2``, ``time_decay_w1``, ``time_decay_w2`` (v6), ``w1, w2, a1, a2, g1, g2,
  v1, v2`` (v7) and state-tuning ``time_state``, so each is stored ``[out, in]``;
* a gated v5 model with per-head ``time_decay`` / ``time_faaaa`` of shape ``[H]``
  (ChatRWKV 5.1) gets both repeated to ``[H, N]`` and then runs as a 5.2 model.

Detection (the converter leaves no marker, so it is inferred from names and shapes):

* **v6**: a ``time_mix_x`` tensor. PyTorch v6 checkpoints call it ``time_maa_x`` and
  no other version has it.
* **v7**: ``att.w1`` (likewise ``a1, g1, v1``) is ``[C, D]`` in PyTorch and ``[D, C]`` in
  AI00, with C = ``emb.weight.shape[1]``; ``w2, a2, g2, v2`` the other way round. Each
  non-square matrix votes; conflicting votes are an error. If every one is square
  (LoRA rank == n_embd, which no released model has) the file is taken as PyTorch
  layout; pass ``layout="ai00"`` to :func:`read_checkpoint` to override.
* **v5**: ``att.time_first`` together with a 2-D ``att.time_decay``. In PyTorch files a
  ``time_first`` bonus only comes per head (``[H]``, log form, the model uses
  ``exp(time_first)``; ChatRWKV's "5.0"), and per-channel models name theirs
  ``time_faaaa``; so a ``[H, N]`` ``time_first`` is AI00's renamed raw bonus.
* Everything else (v4, and a per-head v5 whose converter output keeps its PyTorch
  names and shapes) is identical in both layouts, so no conversion is needed.

Conversion back (:func:`ai00_to_canonical`): the renames are undone (``time_mix`` ->
``time_maa`` only for v6, whose PyTorch names use ``time_maa``; ``time_first`` ->
``time_faaaa`` for v5 and v6) and the swapped matrices are swapped back (matched on the
exact last name component, not a substring). For v5:

* gated (``att.gate.weight`` present): the ``[H, N]`` decay and bonus are kept as
  ``time_decay`` / ``time_faaaa`` ``[H, N]``. A model that was per-head before conversion
  (ChatRWKV 5.1) thus comes back in the equivalent per-channel (5.2) form.
* ungated (ChatRWKV 5.0, rwkv.cpp's "5.1"): project convention for such AI00 files
  (web-rwkv itself cannot run them): both tensors repeated to ``[H, N]`` and the bonus
  stored raw, i.e. ``time_first = exp(log-form time_first)``. They are collapsed back
  to ``[H]`` (every row must be constant) and the bonus returned as
  ``time_first = log(bonus)`` in **float32**. The fp16 rounding of the raw bonus means
  this one tensor is not bit-identical to the PyTorch file's; ``exp`` of it is the
  stored fp16 bonus to float32 precision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np

from .errors import ModelFormatError

Layout = Literal["pytorch", "ai00"]

#: last name components whose last two dims AI00 swaps (names as they are in AI00 files).
AI00_TRANSPOSED = frozenset(
    {"time_mix_w1", "time_mix_w2", "time_decay_w1", "time_decay_w2", "time_state",
     "w1", "w2", "a1", "a2", "g1", "g2", "v1", "v2"}
)
#: v7 LoRA matrices stored [C, D] in PyTorch (their partners ``*2`` are [D, C]).
_V7_DOWN = ("w1", "a1", "g1", "v1")
_V7_UP = ("w2", "a2", "g2", "v2")


def _leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _v7_votes(tensors: Mapping[str, np.ndarray]) -> tuple[int, int]:
    """(PyTorch votes, AI00 votes) from the orientation of v7 LoRA matrices."""
    emb = tensors.get("emb.weight")
    if emb is None or emb.ndim != 2:
        return 0, 0
    C = emb.shape[1]
    pytorch = ai00 = 0
    for name, array in tensors.items():
        leaf = _leaf(name)
        if not name.startswith("blocks.") or ".att." not in name or array.ndim != 2:
            continue
        rows, cols = array.shape
        if rows == cols:
            continue
        if leaf in _V7_DOWN:
            pytorch += rows == C
            ai00 += cols == C
        elif leaf in _V7_UP:
            pytorch += cols == C
            ai00 += rows == C
    return pytorch, ai00


def detect_layout(tensors: Mapping[str, np.ndarray]) -> Layout:
    """Whether a safetensors checkpoint uses AI00's layout (see the module docstring)."""
    leaves = {_leaf(name) for name in tensors}
    if "time_mix_x" in leaves:
        return "ai00"
    pytorch, ai00 = _v7_votes(tensors)
    if pytorch and ai00:
        raise ModelFormatError(
            f"the v7 LoRA matrices are oriented inconsistently ({pytorch} look like PyTorch "
            f"[C, D] layout, {ai00} like AI00 [D, C] layout)"
        )
    if ai00:
        return "ai00"
    for name in tensors:
        if name.endswith(".att.time_first"):
            decay = tensors.get(name[: -len("time_first")] + "time_decay")
            if decay is not None and decay.ndim == 2:
                return "ai00"
    return "pytorch"


def ai00_to_canonical(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Undo AI00's renames, transposes and v5 repeats (see the module docstring)."""
    leaves = {_leaf(name) for name in tensors}
    is_v6 = "time_mix_x" in leaves
    is_v5 = not is_v6 and "r_k" not in leaves and any(".att.ln_x." in name for name in tensors)
    gated = any(name.endswith(".att.gate.weight") for name in tensors)
    out: dict[str, np.ndarray] = {}
    for name, array in tensors.items():
        stem, _, leaf = name.rpartition(".")
        if leaf in AI00_TRANSPOSED and array.ndim >= 2:
            array = np.ascontiguousarray(np.swapaxes(array, -1, -2))
        if is_v6 and leaf.startswith("time_mix"):
            leaf = "time_maa" + leaf[len("time_mix"):]
        if leaf == "time_first" and (is_v6 or (is_v5 and array.ndim == 2)):
            leaf = "time_faaaa"
        out[f"{stem}.{leaf}" if stem else leaf] = array
    if is_v5 and not gated:
        for name in [n for n in out if n.endswith(".att.time_faaaa")]:
            _collapse_ungated_v5(out, name[: -len("time_faaaa")])
    return out


def _per_head(name: str, array: np.ndarray) -> np.ndarray:
    """The one value per head of an [H, N] tensor that repeats it across each row."""
    if array.ndim != 2 or not np.all(array == array[:, :1]):
        raise ModelFormatError(
            f"{name}: an ungated v5 model in AI00 layout must hold [H, N] tensors that repeat "
            f"one value per head, but this one (shape {array.shape}) does not"
        )
    return array[:, 0].copy()


def _collapse_ungated_v5(tensors: dict[str, np.ndarray], stem: str) -> None:
    """[H, N] repeated decay and raw bonus -> PyTorch's per-head [H] decay and log-form bonus."""
    bonus = _per_head(stem + "time_first", tensors.pop(stem + "time_faaaa")).astype(np.float32)
    if stem + "time_decay" in tensors:
        tensors[stem + "time_decay"] = _per_head(stem + "time_decay", tensors[stem + "time_decay"])
    if np.any(bonus <= 0):
        raise ModelFormatError(f"{stem}time_first: an ungated v5 bonus stored raw must be positive to take its log")
    tensors[stem + "time_first"] = np.log(bonus)


def canonical_to_ai00(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What web-rwkv's converter makes of a canonical dict (see the module docstring): float16,
    lower-case names, the renames, the swapped matrices, and a per-head v5 decay and bonus
    repeated to ``[H, N]`` (an ungated model's log-form ``time_first`` stored raw, as ``exp``)."""
    leaves = {_leaf(name) for name in tensors}
    is_v5 = any(".att.ln_x." in name for name in tensors) and not (
        any(leaf.startswith("time_maa") for leaf in leaves) or "r_k" in leaves)
    emb = tensors.get("emb.weight")
    n_embd = int(emb.shape[1]) if emb is not None and emb.ndim == 2 else 0
    out: dict[str, np.ndarray] = {}
    for name, array in tensors.items():
        value = np.asarray(array).astype(np.float16)
        stem, _, leaf = name.rpartition(".")
        if is_v5 and leaf in ("time_decay", "time_faaaa", "time_first") and value.ndim == 1:
            if leaf == "time_first":  # log-form bonus -> the raw bonus the kernels use
                value = np.exp(value.astype(np.float32)).astype(np.float16)
            if not n_embd or n_embd % value.shape[0]:
                raise ModelFormatError(f"{name}: {value.shape[0]} heads do not divide n_embd {n_embd}")
            value = np.repeat(value[:, None], n_embd // value.shape[0], axis=1)
        leaf = leaf.replace("time_faaaa", "time_first").replace("time_maa", "time_mix").lower()
        if leaf in AI00_TRANSPOSED and value.ndim >= 2:
            value = np.swapaxes(value, -1, -2)
        out[f"{stem.lower()}.{leaf}" if stem else leaf] = np.ascontiguousarray(value)
    return out
