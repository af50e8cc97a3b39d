"""Recording dispatches, and submitting and waiting for steps, through wgpu-native's C API directly.

wgpu-py's wrapper costs ~4-5 µs of Python per set_pipeline/set_bind_group/dispatch; a token
of a 24-layer model needs ~300 dispatches, so we call the same C functions ourselves (~1 µs).

The calls go through ctypes' `PyDLL`, which keeps the GIL during each call, rather than through
wgpu-py's cffi functions, which let it go around every call. Recording one step makes ~900 of
these calls, each taking a microsecond: letting the GIL go 900 times while the event loop thread
runs Python (streaming tokens to 64 clients) hands it back and forth 900 times, and each handoff
wakes a thread. On an H200 that turned a 0.6 ms recording into ~8 ms at 64 clients.

This leans on wgpu-py internals (`_internal` handles, the library's path), so it lives here alone
and `tests/test_fast_encode.py` fails loudly when wgpu-py changes them.
"""
from __future__ import annotations

import ctypes
from typing import Sequence

import wgpu


def _load():
    try:
        from wgpu.backends.wgpu_native import ffi
        from wgpu.backends.wgpu_native._ffi import lib_path
    except ImportError:  # another backend, or wgpu-py moved these
        return None
    try:
        native = ctypes.PyDLL(lib_path)
    except OSError:
        return None
    pointer, u32 = ctypes.c_void_p, ctypes.c_uint32
    set_pipeline = native.wgpuComputePassEncoderSetPipeline
    set_pipeline.argtypes, set_pipeline.restype = (pointer, pointer), None
    set_bind_group = native.wgpuComputePassEncoderSetBindGroup
    set_bind_group.argtypes, set_bind_group.restype = (pointer, u32, pointer, ctypes.c_size_t, pointer), None
    dispatch = native.wgpuComputePassEncoderDispatchWorkgroups
    dispatch.argtypes, dispatch.restype = (pointer, u32, u32, u32), None
    waiting = ctypes.CDLL(lib_path)  # these two may take a while: they let the GIL go
    submit = waiting.wgpuQueueSubmitForIndex
    submit.argtypes, submit.restype = (pointer, ctypes.c_size_t, ctypes.POINTER(pointer)), ctypes.c_uint64
    poll = waiting.wgpuDevicePoll
    poll.argtypes, poll.restype = (pointer, u32, ctypes.POINTER(ctypes.c_uint64)), u32
    return ffi, set_pipeline, set_bind_group, dispatch, submit, poll


_NATIVE = _load()
AVAILABLE = _NATIVE is not None


def _address(handle) -> int:
    return int(_NATIVE[0].cast("uintptr_t", handle))


def native_handles(pipeline: wgpu.GPUComputePipeline, group: wgpu.GPUBindGroup) -> tuple[int, int] | None:
    """The C addresses of a pipeline and a bind group (which must outlive their use)."""
    if not AVAILABLE:
        return None
    try:
        return _address(pipeline._internal), _address(group._internal)
    except AttributeError:
        return None


def encode_dispatches(compute: wgpu.GPUComputePassEncoder,
                      dispatches: Sequence[tuple[object, object, tuple[int, int, int], tuple | None]]) -> None:
    """Replay (pipeline, bind group, workgroups, native handles) into an open compute pass."""
    handle = getattr(compute, "_internal", None) if AVAILABLE else None
    if handle is None or any(native is None for *_, native in dispatches):
        for pipeline, group, (x, y, z), _ in dispatches:
            compute.set_pipeline(pipeline)
            compute.set_bind_group(0, group)
            compute.dispatch_workgroups(x, y, z)
        return
    _, set_pipeline, set_bind_group, dispatch, _, _ = _NATIVE
    address = _address(handle)
    for _, _, (x, y, z), (pipeline, group) in dispatches:
        set_pipeline(address, pipeline)
        set_bind_group(address, 0, group, 0, None)
        dispatch(address, x, y, z)


def submit(queue: wgpu.GPUQueue, command: wgpu.GPUCommandBuffer) -> int | None:
    """Submit one command buffer; its submission index (None where the native call is missing)."""
    if AVAILABLE:
        try:
            commands = (ctypes.c_void_p * 1)(_address(command._internal))
            return int(_NATIVE[4](_address(queue._internal), 1, commands))
        except AttributeError:
            pass
    queue.submit([command])
    return None


def wait_for(device: wgpu.GPUDevice, submission: int | None) -> None:
    """Block until the GPU has finished `submission` (not the ones submitted after it).

    wgpu-py resolves a buffer map by polling the device until *every* submitted command has run,
    so reading a step's results back would also wait for the step launched after it; waiting
    for this submission first lets the map resolve at once."""
    if AVAILABLE and submission is not None:
        index = ctypes.c_uint64(submission)
        _NATIVE[5](_address(device._internal), 1, ctypes.byref(index))
