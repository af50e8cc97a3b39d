"""Quantized weights, made on the host at load time and read by matmul.wgsl.

* **int8** (`W_INT8`): each block of 64 consecutive weights (of the flattened matrices) keeps
  its min and max as f16, and every weight becomes q = round(255 (w - min) / (max - min)), read
  back as min + q / 255 · (max - min). Half the bytes of f16; error ≤ (max - min) / 510.
* **nf4** (`W_NF4`, QLoRA's NormalFloat, Dettmers et al. 2023): each block of 64 weights keeps
  its absolute maximum as f16, and every weight becomes the index of the nearest of 16 levels
  (NF4_LEVELS, quantiles of a normal distribution scaled to [-1, 1]) to w / absmax, read back
  as level[q] · absmax. A quarter of the bytes of f16. Weight e of each group of 8 sits in bits
  4e..4e+3 of its u32.

quant_type "nf4" stores the first layers' projections as int8 and the rest as NF4 (`stored_as`;
how many is the version module's `nf4_int8_layers`: NF4_INT8_LAYERS, a third of v4's), as
llama.cpp's 4-bit mixes keep some tensors at more bits: an error made early is carried and
grown by every later layer, so on random weights of real scale layer 0 alone
causes about half of an all-NF4 model's KL divergence (bench/RESULTS.md, "NF4 mixes").
"""
from __future__ import annotations

import numpy as np

QUANT_BLOCK = 64  # weights per scale; matmul.wgsl reads block (4 · vec4 index) / 64
QUANT_TYPES = ("int8", "nf4")
NF4_INT8_LAYERS = 3
NF4_LEVELS = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                       -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                       0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                       0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], np.float32)
NF4_MIDPOINTS = (NF4_LEVELS[:-1] + NF4_LEVELS[1:]) / 2


def _blocks(weights: np.ndarray, group: int, kind: str) -> tuple[np.ndarray, int]:
    flat = np.asarray(weights, np.float32).reshape(-1)
    if flat.size % group:
        raise ValueError(f"{flat.size} weights: {kind} packs them {group} to a word")
    padded = np.zeros(-(-flat.size // QUANT_BLOCK) * QUANT_BLOCK, np.float32)
    padded[: flat.size] = flat
    return padded.reshape(-1, QUANT_BLOCK), flat.size


def quantize_int8(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat weights (a multiple of 4) → (uint32 words, 4 weights each; uint32 scales, one
    (min, max) f16 pair per block)."""
    blocks, count = _blocks(weights, 4, "int8")
    low = blocks.min(axis=1).astype(np.float16)
    high = blocks.max(axis=1).astype(np.float16)
    # the GPU decodes with the f16-rounded bounds, so quantize against those
    lo, hi = low.astype(np.float32)[:, None], high.astype(np.float32)[:, None]
    span = np.where(hi > lo, hi - lo, 1.0)
    q = np.clip(np.rint((blocks - lo) / span * 255.0), 0, 255).astype(np.uint8).reshape(-1)[:count]
    return q.view(np.uint32), np.stack([low, high], axis=1).view(np.uint32).reshape(-1)


def dequantize_int8(words: np.ndarray, scales: np.ndarray, count: int) -> np.ndarray:
    """What the GPU reads back from `quantize_int8`'s output (for tests)."""
    q = words.view(np.uint8)[:count].astype(np.float32)
    pairs = scales.view(np.float16).reshape(-1, 2).astype(np.float32)
    block = np.arange(count) // QUANT_BLOCK
    return pairs[block, 0] + q / 255.0 * (pairs[block, 1] - pairs[block, 0])


def quantize_nf4(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat weights (a multiple of 8) → (uint32 words, 8 weights each; uint32 scales, the f16
    absmax of blocks 2b and 2b+1 in word b)."""
    blocks, count = _blocks(weights, 8, "nf4")
    absmax = np.abs(blocks).max(axis=1).astype(np.float16)
    scale = absmax.astype(np.float32)[:, None]
    normed = blocks / np.where(scale > 0, scale, 1.0)
    # the nearest level: how many midpoints between neighbouring levels lie at or below the
    # value (one exactly between two levels goes to the larger)
    flat = normed.reshape(-1)[:count]
    q = np.zeros(count, np.uint8)
    for midpoint in NF4_MIDPOINTS:
        q += flat >= midpoint
    groups = q.reshape(-1, 8)
    words = np.zeros(len(groups), np.uint32)
    for e in range(8):
        words |= groups[:, e].astype(np.uint32) << np.uint32(4 * e)
    if absmax.size % 2:
        absmax = np.append(absmax, np.float16(0))
    return words, absmax.view(np.uint32)


def dequantize_nf4(words: np.ndarray, scales: np.ndarray, count: int) -> np.ndarray:
    """What the GPU reads back from `quantize_nf4`'s output (for tests)."""
    q = (words[:, None] >> (4 * np.arange(8, dtype=np.uint32))) & 15
    absmax = scales.view(np.float16).astype(np.float32)
    return NF4_LEVELS[q.reshape(-1)[:count]] * absmax[np.arange(count) // QUANT_BLOCK]


def stored_as(quant_type: str, layer: int, nf4_int8_layers: int = NF4_INT8_LAYERS) -> str:
    """The code of a quantized layer's projections under `quant_type`: "int8" or "nf4" (whose
    first `nf4_int8_layers` layers are int8)."""
    return "int8" if quant_type == "int8" or layer < nf4_int8_layers else "nf4"


def quantize(kind: str, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return {"int8": quantize_int8, "nf4": quantize_nf4}[kind](weights)
