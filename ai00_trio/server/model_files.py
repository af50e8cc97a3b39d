"""The files of a folder inside the models folder, as AI00 lists them: size, SHA-256 (of sampled
blocks for big files) and the model description of files that are RWKV safetensors models."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..engine.formats.ai00_layout import ai00_to_canonical, detect_layout
from ..engine.formats.errors import ModelFormatError
from ..engine.formats.safetensors_file import STORED_DTYPES, read_header
from ..engine.info import ModelInfo, detect_model
from .admin_schemas import FileInfo, ai00_model_info

SAMPLED_ABOVE = 10_000_000   # bytes; bigger files are hashed from samples, as AI00 does
SAMPLES, SAMPLE_BYTES = 10, 1_000_000


def sampled_sha256(path: Path) -> str:
    """AI00's file hash: SHA-256 of the whole file up to 10 MB; above, of 1 MB read at every
    tenth of the file (10 samples, concatenated)."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        if size <= SAMPLED_ABOVE:
            digest.update(fh.read())
        else:
            for index in range(SAMPLES):
                fh.seek(index * (size // SAMPLES))
                digest.update(fh.read(SAMPLE_BYTES))
    return digest.hexdigest()


def header_model_info(path: Path) -> ModelInfo | None:
    """The model a safetensors file holds, from its header alone (the weights are not read:
    stand-in arrays of ones carry each tensor's shape and dtype); None if it is not one."""
    try:
        header = read_header(path)
        stand_ins = {}
        for name, entry in header.tensors.items():
            dtype = np.float16 if entry.dtype == "F16" else (
                np.float32 if entry.dtype in ("F32", "F64", "BF16") else STORED_DTYPES[entry.dtype])
            stand_ins[name] = np.broadcast_to(np.ones((), dtype), entry.shape)
        if detect_layout(stand_ins) == "ai00":
            stand_ins = ai00_to_canonical(stand_ins)
        return detect_model(stand_ins)
    except (ModelFormatError, OSError):
        return None


def list_folder(root: Path, folder: Path, with_sha: bool) -> list[FileInfo]:
    """The files of `folder` (a real path inside the real `root`), by name; entries whose
    symlinks lead out of `root`, and sub-folders, are left out."""
    files = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        target = Path(entry.path).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            continue
        info = header_model_info(target)
        files.append(FileInfo(
            path=Path(entry.path).relative_to(root).as_posix(), name=entry.name, size=target.stat().st_size,
            sha=sampled_sha256(target) if with_sha else "", info=ai00_model_info(info) if info else None))
    return files
