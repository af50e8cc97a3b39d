"""Read RWKV checkpoints in any supported format into one canonical form.

The canonical form is ``dict[str, np.ndarray]`` keyed by BlinkDL's PyTorch checkpoint
names, with the shapes a ``.pth`` has (e.g. ``blocks.0.att.time_maa_w1`` ``[C, 5D]``,
``blocks.3.att.w1`` ``[C, Dw]``, ``att.time_faaaa`` ``[H, N]``). Floats come back as
float16 or float32 as stored; bfloat16 is widened exactly to float32, float64 narrowed
to float32.

Supported files:

* ``torch.save`` zip checkpoints (``.pth``), read without torch: :mod:`.pth`;
* plain safetensors with PyTorch names: :mod:`.safetensors_file`;
* AI00 / web-rwkv ``.st`` (safetensors in AI00's layout), recognised and converted
  back: :mod:`.ai00_layout`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np

from .ai00_layout import ai00_to_canonical, detect_layout
from .errors import ModelFormatError, UnsafePickleError
from .pth import LEGACY_TORCH_MAGIC, ZIP_MAGIC, read_pth
from .safetensors_file import read_safetensors

__all__ = ["ModelFormatError", "UnsafePickleError", "read_checkpoint"]

#: file name suffixes that mean "a torch checkpoint" even when the content is not a zip.
TORCH_SUFFIXES = (".pth", ".pt")


def read_checkpoint(
    path: str | os.PathLike[str],
    *,
    layout: Literal["auto", "pytorch", "ai00"] = "auto",
) -> dict[str, np.ndarray]:
    """Read the checkpoint at ``path`` into the canonical form.

    A zip archive (or a file named ``*.pth``) goes to the torch-free ``.pth`` reader,
    anything else to the safetensors reader. For safetensors, ``layout="auto"`` detects
    AI00's layout and converts it; ``"pytorch"`` or ``"ai00"`` force the choice.
    Raises :class:`ModelFormatError` (naming the file) for anything unreadable.
    """
    if layout not in ("auto", "pytorch", "ai00"):
        raise ValueError(f"layout must be 'auto', 'pytorch' or 'ai00', not {layout!r}")
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(f"{path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise ModelFormatError(f"{path}: empty file")
    with path.open("rb") as fh:
        magic = fh.read(8)
    if magic.startswith(ZIP_MAGIC) or magic.startswith(LEGACY_TORCH_MAGIC) or path.suffix.lower() in TORCH_SUFFIXES:
        tensors = read_pth(path)
        is_safetensors = False
    else:
        tensors = read_safetensors(path)
        is_safetensors = True
    if not tensors:
        raise ModelFormatError(f"{path}: the file holds no tensors")
    if layout == "auto":
        try:
            layout = detect_layout(tensors) if is_safetensors else "pytorch"
        except ModelFormatError as exc:
            raise ModelFormatError(f"{path}: {exc}") from None
    if layout == "ai00":
        try:
            return ai00_to_canonical(tensors)
        except ModelFormatError as exc:
            raise ModelFormatError(f"{path}: {exc}") from None
    return tensors
