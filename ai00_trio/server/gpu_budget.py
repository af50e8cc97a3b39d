"""Will a model fit on the GPU? An estimate of what loading a checkpoint takes, read from its
header (never its weights), checked against `[adapter] memory_bytes` before the load begins.

wgpu reports no adapter memory, so the budget is the configured one; what is in use is what
wgpu-py counts of this process's live buffers (every model's weights, states and caches).
Without a budget nothing is refused, and the estimate is still told (in the log and errors).
"""
from __future__ import annotations

import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..engine.formats.errors import ModelFormatError
from ..engine.formats.safetensors_file import read_header
from .errors import ApiError

MIB = 1 << 20
DEFAULT_HEAD_SIZE = 64
STORED_BYTES = {"F64": 8, "F32": 4, "I64": 8, "I32": 4, "F16": 2, "BF16": 2, "I16": 2, "U8": 1, "I8": 1, "BOOL": 1}


@dataclass(frozen=True)
class MemoryNeed:
    """Bytes a load asks of the GPU: the weights at the chosen precision, each slot's recurrent
    state and output row, and the prefix cache's GPU budget (chat models)."""
    weights: int
    slots: int
    cache: int

    @property
    def total(self) -> int:
        return self.weights + self.slots + self.cache

    def describe(self) -> str:
        parts = [f"{self.weights / MIB:.1f} MiB of weights", f"{self.slots / MIB:.1f} MiB of slot states"]
        if self.cache:
            parts.append(f"{self.cache / MIB:.1f} MiB of prefix cache")
        return f"about {self.total / MIB:.1f} MiB ({', '.join(parts)})"


@dataclass(frozen=True)
class _Shapes:
    float_elements: int
    other_bytes: int                     # integer tensors, kept as stored
    n_layer: int
    n_embd: int
    n_vocab: int
    head_size: int


def _safetensors_shapes(path: Path) -> _Shapes:
    header = read_header(path)
    floats = other = 0
    layers: set[int] = set()
    n_embd = n_vocab = 0
    head_size = DEFAULT_HEAD_SIZE
    for name, entry in header.tensors.items():
        count = math.prod(entry.shape)
        if entry.dtype in ("F64", "F32", "F16", "BF16"):
            floats += count
        else:
            other += count * STORED_BYTES.get(entry.dtype, 4)
        found = re.search(r"blocks\.(\d+)\.", name)
        if found:
            layers.add(int(found.group(1)))
        if name.endswith("emb.weight") and len(entry.shape) == 2:
            n_vocab, n_embd = entry.shape
        if name.endswith("blocks.0.att.r_k") and len(entry.shape) == 2 and entry.shape[0] > 1:  # [H, N]
            head_size = entry.shape[1]
    # a flattened r_k ([1, C]) hides the head size: the common 64 (an over- rather than underestimate)
    return _Shapes(floats, other, len(layers), n_embd, n_vocab, min(head_size, n_embd or head_size))


def _pth_bytes(path: Path) -> int:
    """A torch zip's stored tensor bytes (its data entries), without unpickling it."""
    try:
        with zipfile.ZipFile(path) as archive:
            return sum(info.file_size for info in archive.infolist() if "/data/" in info.filename)
    except zipfile.BadZipFile:
        return path.stat().st_size


def estimate_need(path: Path, precision: str, max_batch: int, cache_bytes: int = 0) -> MemoryNeed:
    """What loading `path` with `max_batch` slots takes. Float tensors count at the chosen
    precision; a v5+ slot holds per layer two token-shift rows and an H×N×N wkv state (fp32),
    plus a logits row. Torch checkpoints (no header to read) count as stored, with no slot figure."""
    element = 2 if precision == "fp16" else 4
    if not path.is_file():  # nothing to estimate: the load itself refuses it, saying why
        return MemoryNeed(0, 0, cache_bytes)
    if path.suffix == ".pth":
        return MemoryNeed(_pth_bytes(path) * element // 2, 0, cache_bytes)
    try:
        shapes = _safetensors_shapes(path)
    except ModelFormatError:
        return MemoryNeed(path.stat().st_size, 0, cache_bytes)
    weights = shapes.float_elements * element + shapes.other_bytes
    per_slot = shapes.n_layer * (2 * shapes.n_embd + shapes.n_embd * shapes.head_size) * 4 + shapes.n_vocab * 4
    return MemoryNeed(weights, per_slot * max_batch, cache_bytes)


def check_fits(need: MemoryNeed, budget: int | None, in_use: int, what: str) -> None:
    """400 when `need` on top of `in_use` passes `budget` (None: no budget, nothing refused)."""
    if budget is None or in_use + need.total <= budget:
        return
    raise ApiError(400, f"{what} does not fit on the GPU: it needs {need.describe()}; {in_use / MIB:.1f} MiB of "
                        f"the {budget / MIB:.1f} MiB budget ([adapter] memory_bytes) are in use, "
                        f"{max(0, budget - in_use) / MIB:.1f} MiB free. Unload a model first, or load with a "
                        "smaller max_batch or fp16", "invalid_request_error", "model_path", "insufficient_gpu_memory")
