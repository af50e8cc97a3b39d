"""Reader for PyTorch ``torch.save`` checkpoints that does not need (or import) torch.

A ``.pth`` written by torch >= 1.6 is a zip archive (entries stored uncompressed)::

    <prefix>/data.pkl       pickle of the state dict; tensors refer to storages by key
    <prefix>/data/<key>     raw bytes of one storage
    <prefix>/byteorder      "little" or "big" (absent in older files: little)

The pickle is loaded with a restricted unpickler. Its ``find_class`` hands out only
stand-ins for the handful of globals a tensor state dict refers to (the tensor and
parameter rebuild functions, the storage classes, ``collections.OrderedDict``,
``torch.Size``); any other global, ``os.system`` say, raises :class:`UnsafePickleError`
before it is imported, so loading a checkpoint never runs code from the file.
``persistent_load`` resolves ``('storage', type, key, location, numel)`` ids to numpy
arrays read from the archive, and tensors are built from (storage, offset, size, stride)
with the view's bounds checked first. bfloat16 is widened exactly to float32, float64
narrowed to float32; float16/float32 are returned as stored.

The legacy (pre-1.6, non-zip) torch format and TorchScript archives are rejected with
a message saying so.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import numpy as np

from .dtypes import bf16_to_f32, to_canonical
from .errors import ModelFormatError, UnsafePickleError

ZIP_MAGIC = b"PK\x03\x04"
#: torch's legacy format starts with a pickled magic number: protocol 2, LONG1 of 10 bytes.
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a"
#: keys under which training scripts commonly nest the state dict.
WRAPPER_KEYS = ("state_dict", "model", "module")


@dataclass(frozen=True, slots=True)
class StorageType:
    """Stand-in for a ``torch.<X>Storage`` class: how its bytes are laid out."""

    name: str
    dtype: str  # numpy dtype of one stored element, without byte order
    bf16: bool = False


STORAGE_TYPES: Mapping[str, StorageType] = {
    t.name: t
    for t in (
        StorageType("FloatStorage", "f4"),
        StorageType("HalfStorage", "f2"),
        StorageType("BFloat16Storage", "u2", bf16=True),
        StorageType("DoubleStorage", "f8"),
        StorageType("LongStorage", "i8"),
        StorageType("IntStorage", "i4"),
        StorageType("ShortStorage", "i2"),
        StorageType("CharStorage", "i1"),
        StorageType("ByteStorage", "u1"),
        StorageType("BoolStorage", "?"),
    )
}


@dataclass(frozen=True, slots=True)
class _Storage:
    data: np.ndarray  # 1-D, stored dtype and byte order
    bf16: bool


@dataclass(frozen=True, slots=True)
class _TypeMarker:
    """Stand-in for ``torch.Tensor`` / ``torch.nn.Parameter`` in ``_rebuild_from_type_v2``."""

    name: str


class _Tensor:
    """A tensor rebuilt from the pickle; unwrapped to its array once loading is done."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __setstate__(self, state: object) -> None:
        raise ModelFormatError("the pickle tries to set Python state on a tensor, which this reader does not support")


def _as_int_tuple(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple | list) or not all(type(v) is int for v in value):
        raise ModelFormatError(f"tensor {what} must be a tuple of ints, got {value!r:.80}")
    return tuple(value)


def _build_array(storage: object, offset: object, size: object, stride: object) -> np.ndarray:
    """The numpy array of a (storage, offset, size, stride) view, bounds-checked first."""
    if not isinstance(storage, _Storage):
        raise ModelFormatError(f"tensor storage is not a storage reference: {storage!r:.80}")
    shape = _as_int_tuple(size, "size")
    strides = _as_int_tuple(stride, "stride")
    if type(offset) is not int or offset < 0 or len(shape) != len(strides):
        raise ModelFormatError(f"bad tensor view: offset {offset!r}, size {shape}, stride {strides}")
    if any(n < 0 for n in shape) or any(s < 0 for s in strides):
        raise ModelFormatError(f"bad tensor view: size {shape}, stride {strides}")
    data = storage.data
    if math.prod(shape) == 0:
        array = np.zeros(shape, dtype=data.dtype)
    else:
        last = offset + sum((n - 1) * s for n, s in zip(shape, strides, strict=True))
        if last >= data.size:
            raise ModelFormatError(
                f"tensor view (offset {offset}, size {shape}, stride {strides}) reaches element {last} "
                f"of a storage holding only {data.size}"
            )
        if _is_c_contiguous(shape, strides):
            array = data[offset : offset + math.prod(shape)].reshape(shape)
        else:
            item = data.dtype.itemsize
            view = np.lib.stride_tricks.as_strided(
                data[offset:], shape=shape, strides=[s * item for s in strides], writeable=False
            )
            array = np.array(view, order="C")
    return bf16_to_f32(array) if storage.bf16 else to_canonical(array)


def _is_c_contiguous(shape: tuple[int, ...], strides: tuple[int, ...]) -> bool:
    expected = 1
    for n, s in zip(reversed(shape), reversed(strides), strict=True):
        if n != 1 and s != expected:
            return False
        expected *= n
    return True


def _rebuild_tensor(storage: object, storage_offset: object, size: object, stride: object) -> _Tensor:
    return _Tensor(_build_array(storage, storage_offset, size, stride))


def _rebuild_tensor_v2(
    storage: object,
    storage_offset: object,
    size: object,
    stride: object,
    requires_grad: object = False,
    backward_hooks: object = None,
    metadata: object = None,
) -> _Tensor:
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data: object, requires_grad: object = False, backward_hooks: object = None) -> _Tensor:
    if not isinstance(data, _Tensor):
        raise ModelFormatError(f"a parameter must wrap a tensor, got {data!r:.80}")
    return data


def _rebuild_parameter_with_state(
    data: object, requires_grad: object, backward_hooks: object, state: object
) -> _Tensor:
    return _rebuild_parameter(data)


_TENSOR_BUILDERS: tuple[Callable[..., _Tensor], ...] = (
    _rebuild_tensor,
    _rebuild_tensor_v2,
    _rebuild_parameter,
    _rebuild_parameter_with_state,
)


def _rebuild_from_type_v2(func: object, new_type: object, args: object, state: object) -> _Tensor:
    if func not in _TENSOR_BUILDERS or not isinstance(new_type, _TypeMarker) or not isinstance(args, tuple):
        raise ModelFormatError("unsupported tensor subclass in the pickle")
    return func(*args)  # type: ignore[operator]


#: (module, name) -> what find_class returns. Nothing else is ever resolved.
ALLOWED_GLOBALS: Mapping[tuple[str, str], object] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Tensor"): _TypeMarker("Tensor"),
    ("torch.nn.parameter", "Parameter"): _TypeMarker("Parameter"),
    ("torch", "Size"): tuple,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("torch", name): storage_type for name, storage_type in STORAGE_TYPES.items()},
}


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickler that resolves only ``ALLOWED_GLOBALS`` and reads storages from the archive."""

    def __init__(self, file: IO[bytes], archive: zipfile.ZipFile, prefix: str, byteorder: str,
                 pickle_name: str) -> None:
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._byteorder = byteorder
        self._pickle_name = pickle_name
        self._storages: dict[tuple[str, str], _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._pickle_name} references the global {module}.{name}, which a tensor state "
                "dict never needs; refusing to load it (unpickling it could run arbitrary code)"
            ) from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise ModelFormatError(f"unsupported persistent id in the pickle: {pid!r:.100}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, StorageType):
            raise ModelFormatError(f"persistent id names a non-storage type: {storage_type!r:.80}")
        if not isinstance(key, str) or type(numel) is not int or numel < 0:
            raise ModelFormatError(f"bad storage reference: key {key!r:.40}, numel {numel!r:.40}")
        cache_key = (key, storage_type.name)
        if cache_key not in self._storages:
            self._storages[cache_key] = self._read_storage(storage_type, key, numel)
        return self._storages[cache_key]

    def _read_storage(self, storage_type: StorageType, key: str, numel: int) -> _Storage:
        member = f"{self._prefix}data/{key}"
        dtype = np.dtype(storage_type.dtype).newbyteorder("<" if self._byteorder == "little" else ">")
        nbytes = numel * dtype.itemsize
        try:
            info = self._archive.getinfo(member)
        except KeyError:
            raise ModelFormatError(f"storage {member} is missing from the archive") from None
        if info.file_size < nbytes:
            raise ModelFormatError(f"storage {member} holds {info.file_size} bytes, {nbytes} expected")
        buffer = bytearray(nbytes)
        with self._archive.open(info) as fh:
            got = cast(io.BufferedIOBase, fh).readinto(buffer)
        if got != nbytes:
            raise ModelFormatError(f"storage {member} is truncated ({got} of {nbytes} bytes)")
        return _Storage(np.frombuffer(buffer, dtype=dtype), storage_type.bf16)


def _archive_prefix(path: Path, names: list[str]) -> str:
    candidates = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if "data.pkl" in names:
        candidates.append("data.pkl")
    if len(candidates) != 1:
        what = "no data.pkl" if not candidates else f"several data.pkl ({', '.join(candidates[:4])})"
        raise ModelFormatError(f"{path}: zip archive with {what}: not a torch.save checkpoint")
    return candidates[0][: -len("data.pkl")]


def _read_byteorder(path: Path, archive: zipfile.ZipFile, prefix: str) -> str:
    name = f"{prefix}byteorder"
    if name not in archive.namelist():
        return "little"
    order = archive.read(name).decode("ascii", "replace").strip()
    if order not in ("little", "big"):
        raise ModelFormatError(f"{path}: unknown byteorder {order!r} in {name}")
    return order


def _extract_state_dict(path: Path, obj: object) -> dict[str, np.ndarray]:
    """The str -> tensor mapping at the top, or nested under one of ``WRAPPER_KEYS``."""
    candidates = [obj] + [obj.get(k) for k in WRAPPER_KEYS if isinstance(obj, Mapping)]
    for candidate in candidates:
        if not isinstance(candidate, Mapping):
            continue
        tensors = {k: v.array for k, v in candidate.items() if isinstance(v, _Tensor)}
        if tensors:
            bad = [k for k in tensors if not isinstance(k, str)]
            if bad:
                raise ModelFormatError(f"{path}: state dict has a non-string key {bad[0]!r:.60}")
            return tensors
    raise ModelFormatError(
        f"{path}: the checkpoint holds no tensor state dict "
        f"(top-level object: {type(obj).__name__}; looked also under {', '.join(WRAPPER_KEYS)})"
    )


def read_pth(path: Path) -> dict[str, np.ndarray]:
    """Read a zip-format ``torch.save`` state dict into numpy arrays, without torch."""
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic == LEGACY_TORCH_MAGIC:
        raise ModelFormatError(
            f"{path}: legacy (pre-1.6, non-zip) torch checkpoint; re-save it with a current torch.save"
        )
    if magic != ZIP_MAGIC:
        raise ModelFormatError(f"{path}: not a torch.save checkpoint (no zip signature)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            prefix = _archive_prefix(path, names)
            if f"{prefix}constants.pkl" in names:
                raise ModelFormatError(f"{path}: a TorchScript archive, not a state dict")
            byteorder = _read_byteorder(path, archive, prefix)
            pickle_name = f"{prefix}data.pkl"
            try:
                with archive.open(pickle_name) as pickle_file:
                    obj = _StateDictUnpickler(pickle_file, archive, prefix, byteorder, pickle_name).load()
            except ModelFormatError as exc:
                raise type(exc)(f"{path}: {exc}") from None
            except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError,
                    IndexError, KeyError, RecursionError, MemoryError) as exc:
                raise ModelFormatError(f"{path}: corrupt pickle in {pickle_name}: {exc!r:.200}") from None
    except ModelFormatError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise ModelFormatError(f"{path}: unreadable zip archive (truncated or corrupt?): {exc}") from None
    return _extract_state_dict(path, obj)
