"""Checkpoint conversion: a ``.pth`` or PyTorch-named safetensors file to AI00's ``.st`` layout,
and an AI00 ``.st`` back to PyTorch-named safetensors (`python -m ai00_trio convert`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from . import read_checkpoint
from .ai00_layout import canonical_to_ai00, detect_layout
from .errors import ModelFormatError
from .pth import ZIP_MAGIC
from .safetensors_file import read_safetensors
from .safetensors_writer import write_safetensors

Target = Literal["auto", "ai00", "pytorch"]


def source_layout(path: Path) -> Literal["pth", "pytorch", "ai00"]:
    with path.open("rb") as fh:
        if fh.read(4) == ZIP_MAGIC:
            return "pth"
    return detect_layout(read_safetensors(path))


def convert_checkpoint(source: str | os.PathLike[str], target: str | os.PathLike[str], to: Target = "auto") -> str:
    """Write `source` to `target` in AI00's layout or with PyTorch names; "auto" converts to
    the other layout than the source's (a ``.pth`` becomes AI00). Returns the layout written."""
    source, target = Path(source), Path(target)
    if source.is_file() and target.exists() and source.resolve() == target.resolve():
        raise ModelFormatError(f"{target}: the output would overwrite the input")
    canonical = read_checkpoint(source)
    if to == "auto":
        to = "pytorch" if source_layout(source) == "ai00" else "ai00"
    tensors = canonical_to_ai00(canonical) if to == "ai00" else canonical
    write_safetensors(target, tensors, {"format": "pt"})
    return to
