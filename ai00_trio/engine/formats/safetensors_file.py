"""Reader for safetensors files, without the ``safetensors`` package.

Layout: an 8-byte little-endian header length ``n``, ``n`` bytes of JSON mapping each
tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to
the end of the header), an optional ``"__metadata__"`` string map, then the raw data.

Parsing the header here lets every problem name the file and tensor, and handles
bfloat16, which numpy cannot represent (it is widened exactly to float32).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import msgspec
import numpy as np

from .dtypes import bf16_to_f32, to_canonical
from .errors import ModelFormatError

#: Longest header accepted (the format's reference implementation uses the same cap).
MAX_HEADER_BYTES = 100 * 1024 * 1024

#: safetensors dtype tag -> little-endian numpy dtype of the stored bytes.
STORED_DTYPES: dict[str, str] = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "<u2",  # decoded to float32 by bf16_to_f32
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U64": "<u8",
    "U32": "<u4",
    "U16": "<u2",
    "U8": "u1",
    "BOOL": "?",
}


class TensorEntry(msgspec.Struct, frozen=True):
    """One tensor's header entry."""

    dtype: str
    shape: tuple[int, ...]
    data_offsets: tuple[int, int]


class SafetensorsHeader(msgspec.Struct, frozen=True):
    """The parsed header: entries in file order, metadata, and where the data starts."""

    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]
    data_start: int


def read_header(path: Path) -> SafetensorsHeader:
    """Parse and check the header of ``path`` (every entry must fit inside the file)."""
    file_size = path.stat().st_size
    if file_size < 8:
        raise ModelFormatError(f"{path}: not a safetensors file ({file_size} bytes, too short for a header)")
    with path.open("rb") as fh:
        header_len = int.from_bytes(fh.read(8), "little")
        if header_len > MAX_HEADER_BYTES or 8 + header_len > file_size:
            raise ModelFormatError(
                f"{path}: not a safetensors file, or truncated "
                f"(header length {header_len} does not fit in {file_size} bytes)"
            )
        raw = fh.read(header_len)
    try:
        decoded = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: not a safetensors file (header is not JSON: {exc})") from None
    if not isinstance(decoded, dict):
        raise ModelFormatError(f"{path}: not a safetensors file (header is not a JSON object)")

    data_start = 8 + header_len
    data_size = file_size - data_start
    metadata_raw = decoded.pop("__metadata__", None) or {}
    try:
        metadata = msgspec.convert(metadata_raw, dict[str, str])
    except msgspec.ValidationError as exc:
        raise ModelFormatError(f"{path}: bad __metadata__ in the safetensors header: {exc}") from None

    tensors: dict[str, TensorEntry] = {}
    for name, value in decoded.items():
        try:
            entry = msgspec.convert(value, TensorEntry)
        except msgspec.ValidationError as exc:
            raise ModelFormatError(f"{path}: bad header entry for tensor {name!r}: {exc}") from None
        _check_entry(path, name, entry, data_size)
        tensors[name] = entry
    return SafetensorsHeader(tensors=tensors, metadata=metadata, data_start=data_start)


def _check_entry(path: Path, name: str, entry: TensorEntry, data_size: int) -> None:
    if entry.dtype not in STORED_DTYPES:
        raise ModelFormatError(f"{path}: tensor {name!r} has unsupported dtype {entry.dtype}")
    if any(d < 0 for d in entry.shape):
        raise ModelFormatError(f"{path}: tensor {name!r} has a negative dimension {entry.shape}")
    begin, end = entry.data_offsets
    expected = math.prod(entry.shape) * np.dtype(STORED_DTYPES[entry.dtype]).itemsize
    if begin < 0 or end < begin or end - begin != expected:
        raise ModelFormatError(
            f"{path}: tensor {name!r} ({entry.dtype}, shape {list(entry.shape)}) needs {expected} bytes "
            f"but its data_offsets are [{begin}, {end}]"
        )
    if end > data_size:
        raise ModelFormatError(
            f"{path}: truncated: tensor {name!r} ends at byte {end} of the data section, "
            f"which holds only {data_size} bytes"
        )


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Read every tensor of a safetensors file (bf16 -> float32, f64 -> float32)."""
    header = read_header(path)
    out: dict[str, np.ndarray] = {}
    with path.open("rb") as fh:
        for name, entry in header.tensors.items():
            stored = np.dtype(STORED_DTYPES[entry.dtype])
            count = math.prod(entry.shape)
            fh.seek(header.data_start + entry.data_offsets[0])
            flat = np.fromfile(fh, dtype=stored, count=count)
            if flat.size != count:
                raise ModelFormatError(f"{path}: truncated while reading tensor {name!r}")
            array = flat.reshape(entry.shape)
            out[name] = bf16_to_f32(array) if entry.dtype == "BF16" else to_canonical(array)
    return out
