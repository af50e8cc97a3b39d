"""Model version detection and checkpoint validation for RWKV v4, v5, v6 and v7.

:func:`detect_model` takes a canonical tensor dict (see :mod:`ai00_trio.engine.formats`),
tells the version from the tensor names (v7 > v6 > v5 > v4, first match wins), reads the
dimensions from a few anchor tensors, then checks that every tensor the version needs is
there with the right shape in every layer (:data:`LAYER_TENSORS`, :data:`TOP_LEVEL_TENSORS`).
Unknown extra tensors are ignored.

v5 sub-versions, following ChatRWKV (rwkv.cpp numbers them differently: its "5.1" is
the ungated 5.0 here, its "5.2" any gated model):

====  =====  ========================  ==========================================
sub   gate   time_decay / bonus shape  bonus tensor
====  =====  ========================  ==========================================
5.0   no     ``[H]``                    ``time_first`` (u = exp) or ``time_faaaa`` (u as is)
5.1   yes    ``[H]``                    ``time_first`` or ``time_faaaa``
5.2   yes    ``[H, N]``                 ``time_faaaa`` (u as is)
====  =====  ========================  ==========================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

import msgspec
import numpy as np

from .formats.dtypes import CANONICAL_FLOATS
from .formats.errors import ModelFormatError

__all__ = ["LAYER_TENSORS", "ModelFormatError", "ModelInfo", "TOP_LEVEL_TENSORS", "detect_model"]

Version = Literal["v4", "v5", "v6", "v7"]
#: a dimension in a shape template: a literal size or a symbol resolved per model
#: (C n_embd, V n_vocab, F n_ffn, H n_head, N head_size, D/5D v6 mix LoRA, Dd v6 decay
#: LoRA, Dw/Da/Dg/Dv v7 LoRAs).
Dim = int | str
Spec = tuple[str, tuple[Dim, ...]]

#: stands for the v5 bonus tensor, ``time_first`` or ``time_faaaa``, whichever block 0 has.
BONUS = "att.<bonus>"


class ModelInfo(msgspec.Struct, frozen=True):
    """What the engine needs to know about a checkpoint's architecture.

    ``gated``: the attention output is multiplied by a gate from ``att.gate.weight``
    (v5.1, v5.2, v6). v4 has no heads: ``n_head`` is 1 and ``head_size`` is ``n_embd``.
    LoRA ranks are 0 where the version has none; ``v_dim`` is 0 for a one-layer v7.
    """

    version: Version
    subversion: str
    n_layer: int
    n_embd: int
    n_head: int
    head_size: int
    n_vocab: int
    n_ffn: int
    gated: bool = False
    maa_dim: int = 0
    decay_dim: int = 0
    w_dim: int = 0
    a_dim: int = 0
    g_dim: int = 0
    v_dim: int = 0


_MIX: tuple[Dim, ...] = (1, 1, "C")
_SQUARE: tuple[Dim, ...] = ("C", "C")

#: tensors outside the per-layer blocks, the same for every version.
TOP_LEVEL_TENSORS: tuple[Spec, ...] = (
    ("emb.weight", ("V", "C")),
    ("head.weight", ("V", "C")),
    ("ln_out.weight", ("C",)),
    ("ln_out.bias", ("C",)),
    ("blocks.0.ln0.weight", ("C",)),
    ("blocks.0.ln0.bias", ("C",)),
)

_EVERY_LAYER: tuple[Spec, ...] = (
    ("ln1.weight", ("C",)),
    ("ln1.bias", ("C",)),
    ("ln2.weight", ("C",)),
    ("ln2.bias", ("C",)),
    ("att.receptance.weight", _SQUARE),
    ("att.key.weight", _SQUARE),
    ("att.value.weight", _SQUARE),
    ("att.output.weight", _SQUARE),
    ("ffn.key.weight", ("F", "C")),
    ("ffn.value.weight", ("C", "F")),
)
_FFN_V4: tuple[Spec, ...] = (
    ("ffn.time_mix_k", _MIX),
    ("ffn.time_mix_r", _MIX),
    ("ffn.receptance.weight", _SQUARE),
)
_ATT_V5: tuple[Spec, ...] = (
    ("att.time_mix_k", _MIX),
    ("att.time_mix_v", _MIX),
    ("att.time_mix_r", _MIX),
    ("att.ln_x.weight", ("C",)),
    ("att.ln_x.bias", ("C",)),
)
_GATE_V5: tuple[Spec, ...] = (("att.time_mix_g", _MIX), ("att.gate.weight", _SQUARE))

#: every tensor ``blocks.<i>.*`` must have, per (sub)version, with its shape.
LAYER_TENSORS: Mapping[str, tuple[Spec, ...]] = {
    "4": _EVERY_LAYER + _FFN_V4 + (
        ("att.time_decay", ("C",)),
        ("att.time_first", ("C",)),
        ("att.time_mix_k", _MIX),
        ("att.time_mix_v", _MIX),
        ("att.time_mix_r", _MIX),
    ),
    "5.0": _EVERY_LAYER + _FFN_V4 + _ATT_V5 + (("att.time_decay", ("H",)), (BONUS, ("H",))),
    "5.1": _EVERY_LAYER + _FFN_V4 + _ATT_V5 + _GATE_V5 + (("att.time_decay", ("H",)), (BONUS, ("H",))),
    "5.2": _EVERY_LAYER + _FFN_V4 + _ATT_V5 + _GATE_V5 + (
        ("att.time_decay", ("H", "N")),
        ("att.time_faaaa", ("H", "N")),
    ),
    "6": _EVERY_LAYER + (
        *((f"att.time_maa_{m}", _MIX) for m in "xwkvrg"),
        ("att.time_maa_w1", ("C", "5D")),
        ("att.time_maa_w2", (5, "D", "C")),
        ("att.time_decay", _MIX),
        ("att.time_decay_w1", ("C", "Dd")),
        ("att.time_decay_w2", ("Dd", "C")),
        ("att.time_faaaa", ("H", "N")),
        ("att.gate.weight", _SQUARE),
        ("att.ln_x.weight", ("C",)),
        ("att.ln_x.bias", ("C",)),
        ("ffn.time_maa_k", _MIX),
        ("ffn.time_maa_r", _MIX),
        ("ffn.receptance.weight", _SQUARE),
    ),
    "7": _EVERY_LAYER + (
        *((f"att.x_{m}", _MIX) for m in "rwkvag"),
        ("att.w0", _MIX),
        ("att.w1", ("C", "Dw")),
        ("att.w2", ("Dw", "C")),
        ("att.a0", _MIX),
        ("att.a1", ("C", "Da")),
        ("att.a2", ("Da", "C")),
        ("att.g1", ("C", "Dg")),
        ("att.g2", ("Dg", "C")),
        ("att.v0", _MIX),
        ("att.v1", ("C", "Dv")),
        ("att.v2", ("Dv", "C")),
        ("att.k_k", _MIX),
        ("att.k_a", _MIX),
        ("att.r_k", ("H", "N")),
        ("att.ln_x.weight", ("C",)),
        ("att.ln_x.bias", ("C",)),
        ("ffn.x_k", _MIX),
    ),
}

#: tensors of LAYER_TENSORS that block 0 does without (v7's value residual starts at layer 1).
NOT_IN_LAYER_0: Mapping[str, frozenset[str]] = {"7": frozenset({"att.v0", "att.v1", "att.v2"})}

#: per version, layer tensor names any one of which identifies it; checked in this order.
VERSION_MARKERS: tuple[tuple[Version, frozenset[str]], ...] = (
    ("v7", frozenset({"att.r_k", "att.k_k", "att.k_a", "att.x_r", "att.w0", "att.a0"})),
    ("v6", frozenset({"att.time_maa_x", "att.time_maa_w1", "att.time_maa_w2", "att.time_decay_w1"})),
    ("v5", frozenset({"att.ln_x.weight", "att.ln_x.bias", "att.gate.weight"})),
    ("v4", frozenset({"att.time_first", "att.time_decay", "att.time_mix_k"})),
)

_BLOCK_NAME = re.compile(r"blocks\.(\d+)\.(.+)")
_MAX_LISTED_PROBLEMS = 5


def detect_model(tensors: Mapping[str, np.ndarray], source: str | None = None) -> ModelInfo:
    """Detect the RWKV version of a canonical tensor dict, validate it, and describe it.

    Raises :class:`ModelFormatError` naming every missing or misshapen tensor (expected
    vs found shape), or saying why the tensors are not an RWKV model. ``source`` (a file
    name, say) prefixes the messages.
    """
    prefix = f"{source}: " if source else ""
    layers: dict[int, set[str]] = {}
    for name in tensors:
        match = _BLOCK_NAME.fullmatch(name)
        if match:
            layers.setdefault(int(match.group(1)), set()).add(match.group(2))
    if "emb.weight" not in tensors and not layers:
        sample = ", ".join(sorted(tensors)[:5]) or "none"
        raise ModelFormatError(
            f"{prefix}not an RWKV model: no emb.weight and no blocks.<i>.* tensors (tensors: {sample})"
        )
    suffixes = set().union(*layers.values()) if layers else set()
    if "att.time_mix_x" in suffixes:
        raise ModelFormatError(
            f"{prefix}these tensors use the AI00/web-rwkv layout (att.time_mix_x); "
            "read the file with read_checkpoint, which converts it to PyTorch names"
        )
    version = next((v for v, markers in VERSION_MARKERS if markers & suffixes), None)
    if version is None:
        raise ModelFormatError(
            f"{prefix}not an RWKV model: none of the v4-v7 attention tensors found in blocks.<i>.att"
        )
    n_layer = max(layers) + 1
    try:
        info = _describe(version, tensors, n_layer)
    except ModelFormatError as exc:
        raise ModelFormatError(f"{prefix}invalid RWKV {version} checkpoint: {exc}") from None
    problems = _validate(info, tensors)
    if problems:
        listed = "; ".join(problems[:_MAX_LISTED_PROBLEMS])
        more = len(problems) - _MAX_LISTED_PROBLEMS
        raise ModelFormatError(
            f"{prefix}invalid RWKV {version} checkpoint ({n_layer} layers, n_embd {info.n_embd}): "
            f"{listed}" + (f"; and {more} more" if more > 0 else ""),
            tuple(problems),
        )
    return info


def _shape(tensors: Mapping[str, np.ndarray], name: str, ndim: int) -> tuple[int, ...]:
    array = tensors.get(name)
    if array is None:
        raise ModelFormatError(f"{name}: missing")
    if array.ndim != ndim:
        raise ModelFormatError(f"{name}: expected {ndim} dims, found shape {array.shape}")
    return tuple(int(d) for d in array.shape)


def _head_size(C: int, H: int, source: str) -> int:
    if H <= 0 or C % H:
        raise ModelFormatError(f"{source} gives {H} heads, which do not divide n_embd {C}")
    return C // H


def _describe(version: Version, tensors: Mapping[str, np.ndarray], n_layer: int) -> ModelInfo:
    """Version and dimensions from the anchor tensors (checked in full by _validate)."""
    V, C = _shape(tensors, "emb.weight", 2)
    F = _shape(tensors, "blocks.0.ffn.key.weight", 2)[0]
    gated = "blocks.0.att.gate.weight" in tensors
    if version == "v4":
        return ModelInfo(version=version, subversion="4", n_layer=n_layer, n_embd=C, n_head=1, head_size=C,
                         n_vocab=V, n_ffn=F, gated=gated)
    if version == "v5":
        subversion = _v5_subversion(tensors)
        H = _shape(tensors, "blocks.0.att.time_decay", 2 if subversion == "5.2" else 1)[0]
        return ModelInfo(version=version, subversion=subversion, n_layer=n_layer, n_embd=C, n_head=H,
                         head_size=_head_size(C, H, "blocks.0.att.time_decay"), n_vocab=V, n_ffn=F, gated=gated)
    if version == "v6":
        H = _shape(tensors, "blocks.0.att.time_faaaa", 2)[0]
        maa = _shape(tensors, "blocks.0.att.time_maa_w1", 2)[1]
        if maa % 5:
            raise ModelFormatError(f"blocks.0.att.time_maa_w1: second dim {maa} is not a multiple of 5")
        return ModelInfo(version=version, subversion="6", n_layer=n_layer, n_embd=C, n_head=H,
                         head_size=_head_size(C, H, "blocks.0.att.time_faaaa"), n_vocab=V, n_ffn=F, gated=gated,
                         maa_dim=maa // 5, decay_dim=_shape(tensors, "blocks.0.att.time_decay_w1", 2)[1])
    H = _shape(tensors, "blocks.0.att.r_k", 2)[0]
    return ModelInfo(
        version=version, subversion="7", n_layer=n_layer, n_embd=C, n_head=H,
        head_size=_head_size(C, H, "blocks.0.att.r_k"), n_vocab=V, n_ffn=F, gated=gated,
        w_dim=_shape(tensors, "blocks.0.att.w1", 2)[1],
        a_dim=_shape(tensors, "blocks.0.att.a1", 2)[1],
        g_dim=_shape(tensors, "blocks.0.att.g1", 2)[1],
        v_dim=_shape(tensors, "blocks.1.att.v1", 2)[1] if n_layer > 1 else 0,
    )


def _v5_subversion(tensors: Mapping[str, np.ndarray]) -> str:
    """5.0 ungated; 5.1 gated with per-head decay; 5.2 gated with per-channel decay."""
    decay = tensors.get("blocks.0.att.time_decay")
    if decay is None:
        raise ModelFormatError("blocks.0.att.time_decay: missing")
    first = tensors.get("blocks.0.att.time_first")
    if decay.ndim == 2 and first is not None and first.ndim == 2:
        raise ModelFormatError(
            "blocks.0.att.time_first has shape [H, N]: that is AI00/web-rwkv's renamed time_faaaa; "
            "read the file with read_checkpoint, which converts it to PyTorch names"
        )
    if "blocks.0.att.gate.weight" not in tensors:
        return "5.0"
    return "5.2" if decay.ndim == 2 else "5.1"


def _symbols(info: ModelInfo) -> dict[str, int]:
    return {
        "C": info.n_embd, "V": info.n_vocab, "F": info.n_ffn, "H": info.n_head, "N": info.head_size,
        "D": info.maa_dim, "5D": 5 * info.maa_dim, "Dd": info.decay_dim,
        "Dw": info.w_dim, "Da": info.a_dim, "Dg": info.g_dim, "Dv": info.v_dim,
    }


def _validate(info: ModelInfo, tensors: Mapping[str, np.ndarray]) -> list[str]:
    """Every problem with the tensors the model needs, as ``name: what is wrong``."""
    symbols = _symbols(info)
    bonus = "att.time_faaaa" if "blocks.0.att.time_faaaa" in tensors else "att.time_first"
    skipped_in_0 = NOT_IN_LAYER_0.get(info.subversion, frozenset())
    problems: list[str] = []
    expected: list[tuple[str, tuple[Dim, ...]]] = list(TOP_LEVEL_TENSORS)
    for layer in range(info.n_layer):
        for suffix, template in LAYER_TENSORS[info.subversion]:
            suffix = bonus if suffix == BONUS else suffix
            if layer == 0 and suffix in skipped_in_0:
                continue
            expected.append((f"blocks.{layer}.{suffix}", template))
    for name, template in expected:
        want = tuple(symbols[d] if isinstance(d, str) else d for d in template)
        array = tensors.get(name)
        if array is None:
            problems.append(f"{name}: missing (expected shape {want})")
        elif tuple(array.shape) != want:
            problems.append(f"{name}: expected shape {want}, found {tuple(array.shape)}")
        elif array.dtype not in CANONICAL_FLOATS:
            problems.append(f"{name}: expected float16 or float32, found {array.dtype}")
    return problems
