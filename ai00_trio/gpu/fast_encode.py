"""Recording dispatches through wgpu-native's C API directly.

wgpu-py's wrapper costs ~4-5 µs of Python per set_pipeline/set_bind_group/dispatch; a token
of a 24-layer model needs ~400 dispatches, so we call the same C functions through wgpu-py's
own cffi handles (~1 µs). This leans on wgpu-py internals (`_internal` handles), so it lives
here alone and `tests/test_fast_encode.py` fails loudly when wgpu-py changes them.
"""
from __future__ import annotations

from typing import Sequence

import wgpu

try:
    from wgpu.backends.wgpu_native import ffi, lib

    _SET_PIPELINE = lib.wgpuComputePassEncoderSetPipeline
    _SET_BIND_GROUP = lib.wgpuComputePassEncoderSetBindGroup
    _DISPATCH = lib.wgpuComputePassEncoderDispatchWorkgroups
    AVAILABLE = True
except (ImportError, AttributeError):  # another backend, or wgpu-py moved these
    AVAILABLE = False


def native_handles(pipeline: wgpu.GPUComputePipeline, group: wgpu.GPUBindGroup) -> tuple | None:
    if not AVAILABLE:
        return None
    try:
        return pipeline._internal, group._internal
    except AttributeError:
        return None


def encode_dispatches(compute: wgpu.GPUComputePassEncoder,
                      dispatches: Sequence[tuple[object, object, tuple[int, int, int], tuple | None]]) -> None:
    """Replay (pipeline, bind group, workgroups, native handles) into an open compute pass."""
    handle = getattr(compute, "_internal", None) if AVAILABLE else None
    null = ffi.NULL if AVAILABLE else None
    for pipeline, group, (x, y, z), native in dispatches:
        if handle is not None and native is not None:
            _SET_PIPELINE(handle, native[0])
            _SET_BIND_GROUP(handle, 0, native[1], 0, null)
            _DISPATCH(handle, x, y, z)
        else:
            compute.set_pipeline(pipeline)
            compute.set_bind_group(0, group)
            compute.dispatch_workgroups(x, y, z)
