"""Numeric helpers shared by the readers: bfloat16 decoding and the canonical dtypes."""

from __future__ import annotations

import numpy as np

#: dtypes a canonical tensor may have (plus integer/bool tensors that models never need).
CANONICAL_FLOATS = (np.dtype(np.float32), np.dtype(np.float16))


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """Widen raw bfloat16 bit patterns (any integer array of 16-bit values) to float32.

    bfloat16 is the upper half of a float32, so shifting the bits left by 16 is exact.
    """
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def to_canonical(array: np.ndarray) -> np.ndarray:
    """Native byte order; float64 narrowed to float32; everything else unchanged."""
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    return array
