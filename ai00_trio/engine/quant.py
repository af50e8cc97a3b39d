"""Int8 weights: each block of INT8_BLOCK consecutive weights (of the flattened matrices) keeps
its min and max as f16, and every weight becomes q = round(255 (w - min) / (max - min)), read
back on the GPU as min + q / 255 · (max - min) (matmul.wgsl `W_INT8`). Half the bytes of f16,
with an error of at most (max - min) / 510 per weight."""
from __future__ import annotations

import numpy as np

INT8_BLOCK = 64  # weights per (min, max) pair; matmul.wgsl reads scales[word / 16]
QUANT_TYPES = ("None", "Int8")


def quantize_int8(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat weights (a multiple of 4 long) → (uint32 words, 4 weights each; uint32 scales,
    one (min, max) f16 pair per block)."""
    flat = np.asarray(weights, np.float32).reshape(-1)
    if flat.size % 4:
        raise ValueError(f"{flat.size} weights: int8 packs them 4 to a word")
    padded = np.zeros(-(-flat.size // INT8_BLOCK) * INT8_BLOCK, np.float32)
    padded[: flat.size] = flat
    blocks = padded.reshape(-1, INT8_BLOCK)
    low = blocks.min(axis=1).astype(np.float16)
    high = blocks.max(axis=1).astype(np.float16)
    # the GPU decodes with the f16-rounded bounds, so quantize against those
    lo, hi = low.astype(np.float32)[:, None], high.astype(np.float32)[:, None]
    span = np.where(hi > lo, hi - lo, 1.0)
    q = np.clip(np.rint((blocks - lo) / span * 255.0), 0, 255).astype(np.uint8).reshape(-1)[: flat.size]
    scales = np.stack([low, high], axis=1).view(np.uint32).reshape(-1)
    return q.view(np.uint32), scales


def dequantize_int8(words: np.ndarray, scales: np.ndarray, count: int) -> np.ndarray:
    """What the GPU reads back from `quantize_int8`'s output (for tests)."""
    q = words.view(np.uint8)[:count].astype(np.float32)
    pairs = scales.view(np.float16).reshape(-1, 2).astype(np.float32)
    block = np.arange(count) // INT8_BLOCK
    low, high = pairs[block, 0], pairs[block, 1]
    return low + q / 255.0 * (high - low)
