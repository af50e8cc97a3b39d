"""Writer for safetensors files, without the ``safetensors`` package (see safetensors_file.py
for the layout). The header is padded with spaces to a multiple of 8 bytes, as the reference
implementation does, so every tensor's data stays aligned."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .errors import ModelFormatError

#: numpy dtype -> safetensors dtype tag.
TAGS: dict[np.dtype, str] = {
    np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
    np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.int16): "I16", np.dtype(np.int8): "I8",
    np.dtype(np.uint64): "U64", np.dtype(np.uint32): "U32", np.dtype(np.uint16): "U16", np.dtype(np.uint8): "U8",
    np.dtype(np.bool_): "BOOL",
}


def write_safetensors(path: str | os.PathLike[str], tensors: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None) -> None:
    """Write `tensors` (little-endian, in the given order) to `path`, through a temporary file
    next to it, so a failed write never leaves half a checkpoint under the final name."""
    path = Path(path)
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    arrays: list[np.ndarray] = []
    offset = 0
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        tag = TAGS.get(array.dtype.newbyteorder("="))
        if tag is None:
            raise ModelFormatError(f"{name}: dtype {array.dtype} cannot be stored in safetensors")
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        header[name] = {"dtype": tag, "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
        arrays.append(array)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("wb") as fh:
            fh.write(len(raw).to_bytes(8, "little"))
            fh.write(raw)
            for array in arrays:
                fh.write(memoryview(array.reshape(-1).view(np.uint8)))
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
