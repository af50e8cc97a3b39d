"""Moving prepared numpy weights onto the GPU in the engine's precision."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..gpu.context import GpuContext
from ..gpu.graph import Matrix
from .quant import NF4_INT8_LAYERS, QUANT_TYPES, quantize, stored_as

PRECISIONS = ("fp16", "fp32")


@dataclass(frozen=True)
class MatrixSlot:
    """Where a checkpoint matrix went unchanged: matrix `z` of the stack `matrix`."""
    matrix: Matrix
    z: int


@dataclass(frozen=True)
class VectorSlot:
    """Where a checkpoint tensor went unchanged into the vector table: `size` floats from `offset`."""
    offset: int
    size: int


class TensorReads(dict):
    """A checkpoint as a version module reads it: each `t[name]` is counted, so that the uploader
    can tell the tensors that went to the GPU unchanged at every use (those a LoRA can change
    in place, `engine/hotswap.py`) from those transformed first (folded, transposed, exp'd)."""

    def __init__(self, tensors: dict[str, np.ndarray]) -> None:
        super().__init__(tensors)
        self.reads: Counter[str] = Counter()
        self._names = {id(array): name for name, array in tensors.items()}
        self.placed: dict[str, list[MatrixSlot | VectorSlot]] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        self.reads[name] += 1
        return super().__getitem__(name)

    def note(self, array: object, slot: MatrixSlot | VectorSlot) -> None:
        """`array` was uploaded as it is, at `slot` (a checkpoint tensor, or something derived)."""
        name = self._names.get(id(array))
        if name is not None:
            self.placed.setdefault(name, []).append(slot)

    def unchanged(self) -> dict[str, list[MatrixSlot | VectorSlot]]:
        """The tensors every read of which was uploaded unchanged, and where."""
        return {name: slots for name, slots in self.placed.items() if len(slots) == self.reads[name]}


class VectorTable:
    """All small per-channel vectors of a model in one f32 buffer; kernels get float offsets."""

    def __init__(self, sources: TensorReads | None = None) -> None:
        self._parts: list[np.ndarray] = []
        self._size = 0
        self._sources = sources

    def add(self, *vectors: np.ndarray) -> int:
        """Append the vectors back to back; returns the offset of the first."""
        offset = self._size
        for v in vectors:
            flat = np.asarray(v, dtype=np.float32).reshape(-1)
            if self._sources is not None:
                self._sources.note(v, VectorSlot(self._size, flat.size))
            self._parts.append(flat)
            self._size += flat.size
        return offset

    def pack(self) -> np.ndarray:
        return np.concatenate(self._parts) if self._parts else np.zeros(4, np.float32)


class Uploader:
    """Uploads matrices as f16 (native or packed, by device) or f32, per the chosen precision;
    a layer's big matrices as `quant_type` (int8 or nf4, the latter with its first layers in int8:
    `quant.stored_as`) when the layer is below `quant_layers`.
    With `sources` (the tensors the version module reads), it notes where each went unchanged."""

    def __init__(self, ctx: GpuContext, precision: str,
                 progress: Callable[[int], None] | None = None, quant_layers: int = 0,
                 quant_type: str = "int8", sources: TensorReads | None = None,
                 nf4_int8_layers: int = NF4_INT8_LAYERS) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.ctx = ctx
        self.precision = precision
        self.vectors = VectorTable(sources)
        self.sources = sources
        self.bytes_uploaded = 0
        self.progress = progress  # called with the number of matrix weights uploaded so far
        self.weights_uploaded = 0
        if quant_type not in QUANT_TYPES:
            raise ValueError(f"quant_type must be one of {QUANT_TYPES}, not {quant_type!r}")
        self.quant_layers = quant_layers
        self.quant_type = quant_type
        self.nf4_int8_layers = nf4_int8_layers

    def matrix(self, *mats: np.ndarray, layer: int | None = None, f32: bool = False) -> Matrix:
        """One matrix [m, k], or a stack of equally shaped ones as [z, m, k]. `layer` marks a
        layer's projection, which may be quantized (LoRAs, embedding and head never are); `f32`
        keeps it in f32 whatever the precision."""
        return self.matrices(mats, layer=layer, f32=f32)[0]

    def matrices(self, *stacks: Sequence[np.ndarray], layer: int | None = None, f32: bool = False) -> list[Matrix]:
        """Several stacks (each as `matrix` takes them) of the same input width k in one buffer,
        so that a step can run them all in one pass (`StepGraph.matmuls`)."""
        stacks = [list(mats) for mats in stacks]
        arrays = [np.stack([np.asarray(m) for m in mats]) for mats in stacks]
        k = arrays[0].shape[2]
        if any(a.shape[2] != k for a in arrays):
            raise ValueError("matrices sharing a buffer need one input width")
        if k % 4:
            raise ValueError(f"matrix input width {k} is not a multiple of 4")
        scales = None
        if layer is not None and layer < self.quant_layers:
            fmt = stored_as(self.quant_type, layer, self.nf4_int8_layers)
            words, packed_scales = quantize(fmt, np.concatenate([a.reshape(-1) for a in arrays]))
            buffer, scales = self.ctx.upload(words), self.ctx.upload(packed_scales)
            self.bytes_uploaded += words.nbytes + packed_scales.nbytes
        else:
            if self.precision == "fp16" and not f32:
                dtype, fmt = np.float16, "f16" if self.ctx.has_f16 else "f16_packed"
            else:
                dtype, fmt = np.float32, "f32"
            data = np.concatenate([a.astype(dtype).reshape(-1) for a in arrays])
            self.bytes_uploaded += data.nbytes
            buffer = self.ctx.upload(data)
        out, offset = [], 0
        for mats, a in zip(stacks, arrays):
            z, m, _ = a.shape
            matrix = Matrix(buffer, z, m, k, fmt, offset, scales)
            out.append(matrix)
            offset += a.size
            if self.sources is not None:
                for index, source in enumerate(mats):
                    self.sources.note(source, MatrixSlot(matrix, index))
        self.weights_uploaded += sum(a.size for a in arrays)
        if self.progress:
            self.progress(self.weights_uploaded)
        return out
