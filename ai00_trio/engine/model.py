"""`load_model`: a checkpoint on the GPU, with a simple one-sequence `forward`."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..gpu.context import GpuContext, create_context
from ..gpu.kernels import KernelCache
from ..gpu.tuning import DEFAULT_TUNING, KernelTuning
from .formats import read_checkpoint
from .info import ModelInfo, detect_model
from .hotswap import LoraHandle, LoraSwapper
from .lora import merge_loras
from .runtime import Run, Runtime
from .slots import BufferLimits
from .state import State
from .upload import TensorReads, Uploader
from .versions import ARCHITECTURES

DEFAULT_CHUNK = 256


class Model:
    """An RWKV model on the GPU. `forward` runs one sequence; batched serving uses `runtime()`."""

    def __init__(self, tensors: dict[str, np.ndarray], info: ModelInfo, ctx: GpuContext,
                 precision: str = "fp16", chunk_size: int = DEFAULT_CHUNK,
                 progress: Callable[[float], None] | None = None, quant: int = 0,
                 quant_type: str = "int8", tuning: KernelTuning = DEFAULT_TUNING,
                 nf4_int8_layers: int | None = None) -> None:
        self.info = info
        self.tuning = tuning
        self.ctx = ctx
        self.precision = precision
        self.quant_layers = min(quant, info.n_layer)
        self.quant_type = quant_type
        self.parameters = sum(t.size for t in tensors.values())
        self.chunk_size = chunk_size
        self.kernels = KernelCache(ctx.device)
        total = sum(t.size for t in tensors.values() if t.ndim >= 2)  # roughly the weights to upload
        reads = TensorReads(tensors)
        if nf4_int8_layers is None:
            nf4_int8_layers = ARCHITECTURES[info.version].nf4_int8_layers(info.n_layer)
        up = Uploader(ctx, precision, (lambda done: progress(min(1.0, done / total))) if progress else None,
                      quant, quant_type, reads, nf4_int8_layers)
        self.arch = ARCHITECTURES[info.version](reads, info, up)
        self.vecs = ctx.upload(up.vectors.pack())
        self._loras = LoraSwapper(ctx, self.kernels, self.vecs, reads.unchanged(),
                                  {name: tuple(t.shape) for name, t in tensors.items()}, info.version)
        self.weight_bytes = up.bytes_uploaded
        if progress:
            progress(1.0)
        self._single = Runtime(self.arch, ctx, self.kernels, self.vecs, 1, chunk_size, tuning)

    def runtime(self, max_batch: int, max_tokens: int, tuning: KernelTuning | None = None,
                limits: BufferLimits | None = None) -> Runtime:
        """Slots and steps for batched serving; SlotsDontFit when `max_batch` slots do not fit
        within `limits` (the device's by default) or its memory."""
        return Runtime(self.arch, self.ctx, self.kernels, self.vecs, max_batch, max_tokens, tuning or self.tuning,
                       limits)

    # --- LoRA hot-swap (engine/hotswap.py) -------------------------------------------------
    def apply_lora(self, lora: str | Path | Mapping[str, np.ndarray], alpha: float = 1.0,
                   origin: str | None = None) -> LoraHandle:
        """Merge an adapter (a file or its tensors, named as `load_model(loras=...)` takes them;
        `origin` names it in messages) into the weights on the GPU; HotSwapError or
        ModelFormatError, and no change, when it does not fit."""
        return self._loras.apply(lora, alpha, origin)

    def remove_lora(self, handle: LoraHandle) -> None:
        """Take an applied adapter out again (to fp16 rounding on fp16 weights)."""
        self._loras.remove(handle)

    @property
    def loras(self) -> list[LoraHandle]:
        """The adapters applied since load, in order."""
        return list(self._loras.applied)

    # --- states ------------------------------------------------------------------------------
    def initial_state_array(self) -> np.ndarray:
        return np.tile(self.arch.initial_layer_state(), self.info.n_layer)

    def new_state(self) -> State:
        return State(self, self.ctx.upload(self.initial_state_array()))

    def split_state(self, flat: np.ndarray) -> list[np.ndarray]:
        """Our flat layout as the package's list (the version module knows both)."""
        return [a for layer in flat.reshape(self.info.n_layer, -1) for a in self.arch.layer_to_reference(layer)]

    def state_from_numpy(self, arrays: Sequence[np.ndarray]) -> State:
        """The inverse of `State.to_numpy()` (same list layout)."""
        rows = self.arch.reference_rows
        expected = self.info.n_layer * rows
        if len(arrays) != expected:
            raise ValueError(f"a {self.info.version} state has {expected} arrays, got {len(arrays)}")
        layers = [self.arch.layer_from_reference(list(arrays[i:i + rows])) for i in range(0, expected, rows)]
        return self.state_from_host(np.concatenate(layers))

    def state_from_host(self, flat: np.ndarray) -> State:
        """The inverse of `State.to_host()`: a flat array in the GPU's own layout."""
        if flat.size != self.arch.slot_stride():
            raise ValueError(f"state has {flat.size} floats, expected {self.arch.slot_stride()}")
        return State(self, self.ctx.upload(flat))

    # --- inference ---------------------------------------------------------------------------
    def forward(self, tokens: Sequence[int], state: State, full: bool = False) -> np.ndarray:
        """Feed `tokens` into `state` (advanced in place); logits of the last token, or of every
        token with `full=True` ([len(tokens), n_vocab], float32)."""
        tokens = [int(t) for t in tokens]
        if not tokens:
            raise ValueError("forward needs at least one token")
        bad = [t for t in tokens if not 0 <= t < self.info.n_vocab]
        if bad:
            raise ValueError(f"token id {bad[0]} out of range 0..{self.info.n_vocab - 1}")
        if state.model is not self:
            raise ValueError("state belongs to another model")
        runtime = self._single
        outputs = []
        size = min(self.chunk_size, runtime.logit_rows) if full else self.chunk_size
        chunks = [tokens[i:i + size] for i in range(0, len(tokens), size)]
        # copies and steps run in queue order: state in, the chunks, state out
        runtime.load_slot(0, state.buffer)
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1
            rows = list(range(len(chunk))) if full else ([len(chunk) - 1] if last else [])
            logits = runtime.step([Run(0, chunk)], rows)
            if logits is not None:
                outputs.append(logits)
        runtime.save_slot(0, state.buffer)
        return np.concatenate(outputs) if full else outputs[-1][0]


def load_model(path: str | Path, precision: str = "fp16", adapter: int | str | None = None,
               chunk_size: int = DEFAULT_CHUNK, context: GpuContext | None = None,
               progress: Callable[[float], None] | None = None,
               loras: Sequence[tuple[str | Path, float]] = (), quant: int = 0,
               quant_type: str = "int8", tuning: KernelTuning = DEFAULT_TUNING,
               nf4_int8_layers: int | None = None) -> Model:
    """Read a checkpoint (.pth, safetensors with PyTorch names, or AI00 .st), merge the
    (path, alpha) LoRA adapters into it, detect its version and put it on the GPU. The
    projections of the first `quant` layers are stored as `quant_type`, int8 or nf4
    (`engine/quant.py`; nf4 keeps its first `nf4_int8_layers` layers in int8, by default as many
    as the version module says). `tuning` picks the kernels and their shapes (`gpu/tuning.py`)."""
    tensors = merge_loras(read_checkpoint(path), loras)
    info = detect_model(tensors)
    return Model(tensors, info, context or create_context(adapter), precision, chunk_size, progress,
                 quant, quant_type, tuning, nf4_int8_layers)


def load_copies(path: str | Path, adapters: Sequence[int | str | None],
                progress: Callable[[], Callable[[float], None] | None] = lambda: None,
                loras: Sequence[tuple[str | Path, float]] = (), **options) -> list[Model]:
    """`load_model` once for each of `adapters`, each copy on a device of its own, the checkpoint
    read and its LoRAs merged once for all; `progress()` gives each copy its progress callback,
    `options` are load_model's precision, chunk_size, quant, quant_type, tuning and nf4_int8_layers."""
    tensors = merge_loras(read_checkpoint(path), loras)
    info = detect_model(tensors)
    return [Model(tensors, info, create_context(adapter), progress=progress(), **options) for adapter in adapters]
