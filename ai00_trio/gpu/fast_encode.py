"""Recording dispatches, and submitting and waiting for steps, through wgpu-native's C API directly.

wgpu-py's wrapper costs ~4-5 µs of Python per set_pipeline/set_bind_group/dispatch; a token
of a 24-layer model needs ~300 dispatches, so we call the same C functions ourselves (~1 µs).

The calls go through ctypes' `PyDLL`, which keeps the GIL during each call, rather than through
wgpu-py's cffi functions, which let it go around every call. Recording one step makes ~900 of
these calls, each taking a microsecond: letting the GIL go 900 times while the event loop thread
runs Python (streaming tokens to 64 clients) hands it back and forth 900 times, and each handoff
wakes a thread. On an H200 that turned a 0.6 ms recording into ~8 ms at 64 clients.

The rest of a decoding step goes the same way: the command encoder, its passes and copies, the
buffer writes, the submission and the readback's map (`NativeEncoder`, `write_buffer`,
`read_back`), so a steady step lets the GIL go only while it waits for the GPU. Each time it
lets go, the step thread waits to get it back while the event loop runs: with the server's
fake engine on this project's 2-core CI machine, a step holding the GIL for 0.6 ms took
2.7 ms of wall time letting go once, 7.3 ms letting go 20 times and 16.8 ms letting go 100 times
(`bench/fake_engine.py --launch-ms 0.6 --releases N`, bench/RESULTS.md, session 22).

This leans on wgpu-py internals (`_internal` handles, the library's path), so it lives here alone
and `tests/test_fast_encode.py` fails loudly when wgpu-py changes them.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import wgpu


class _MapCallbackInfo(ctypes.Structure):  # WGPUBufferMapCallbackInfo
    _fields_ = [("next_in_chain", ctypes.c_void_p), ("mode", ctypes.c_uint32), ("callback", ctypes.c_void_p),
                ("userdata1", ctypes.c_void_p), ("userdata2", ctypes.c_void_p)]


class _Future(ctypes.Structure):  # WGPUFuture
    _fields_ = [("id", ctypes.c_uint64)]


_POINTER, _U32, _U64, _SIZE = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_size_t
# (argument types, result type) of each wgpu-native function called here, keeping the GIL
_SIGNATURES = {
    "ComputePassEncoderSetPipeline": ((_POINTER, _POINTER), None),
    "ComputePassEncoderSetBindGroup": ((_POINTER, _U32, _POINTER, _SIZE, _POINTER), None),
    "ComputePassEncoderDispatchWorkgroups": ((_POINTER, _U32, _U32, _U32), None),
    "DeviceCreateCommandEncoder": ((_POINTER, _POINTER), _POINTER),
    "CommandEncoderBeginComputePass": ((_POINTER, _POINTER), _POINTER),
    "ComputePassEncoderEnd": ((_POINTER,), None),
    "ComputePassEncoderRelease": ((_POINTER,), None),
    "CommandEncoderCopyBufferToBuffer": ((_POINTER, _POINTER, _U64, _POINTER, _U64, _U64), None),
    "CommandEncoderFinish": ((_POINTER, _POINTER), _POINTER),
    "CommandEncoderRelease": ((_POINTER,), None),
    "CommandBufferRelease": ((_POINTER,), None),
    "QueueWriteBuffer": ((_POINTER, _POINTER, _U64, _POINTER, _SIZE), None),
    "QueueSubmitForIndex": ((_POINTER, _SIZE, ctypes.POINTER(_POINTER)), _U64),  # tens of µs: less than a handoff
    "BufferMapAsync": ((_POINTER, _U64, _SIZE, _SIZE, _MapCallbackInfo), _Future),
    "BufferGetConstMappedRange": ((_POINTER, _SIZE, _SIZE), _POINTER),
    "BufferUnmap": ((_POINTER,), None),
    "DevicePoll": ((_POINTER, _U32, ctypes.POINTER(_U64)), _U32),  # only without waiting
}


@dataclass(frozen=True)
class _Native:
    ffi: Any
    call: dict[str, Any]   # _SIGNATURES' functions, through PyDLL
    wait: Any              # wgpuDevicePoll through CDLL: waiting for the GPU lets the GIL go
    on_mapped: Any         # the cffi callback a map reports to (kept alive here)
    on_mapped_address: int
    map_read: int
    process_events: int
    map_success: int
    # wgpu-native reports a failed call through the device's error callback; wgpu-py's handler
    # catches it for the call that captures it (`_checked`), and its classes name the error
    error_handler: Any
    error_types: dict[str, type]


def _load() -> _Native | None:
    try:
        from wgpu.backends.wgpu_native import ffi, lib
        from wgpu.backends.wgpu_native._api import error_handler
        from wgpu.backends.wgpu_native._ffi import lib_path
        from wgpu.backends.wgpu_native._helpers import ERROR_TYPES
    except ImportError:  # another backend, or wgpu-py moved these
        return None
    try:
        native, waiting = ctypes.PyDLL(lib_path), ctypes.CDLL(lib_path)
        call = {name: getattr(native, "wgpu" + name) for name in _SIGNATURES}
        wait = waiting.wgpuDevicePoll
    except (OSError, AttributeError):
        return None
    for name, (argtypes, restype) in _SIGNATURES.items():
        call[name].argtypes, call[name].restype = argtypes, restype
    wait.argtypes, wait.restype = _SIGNATURES["DevicePoll"]

    @ffi.callback("void(WGPUMapAsyncStatus, WGPUStringView, void *, void *)")
    def on_mapped(status, _message, outcome, _unused):  # outcome: a uint32, 0 until the map is done
        ffi.cast("uint32_t *", outcome)[0] = status

    return _Native(ffi, call, wait, on_mapped, int(ffi.cast("uintptr_t", on_mapped)), int(lib.WGPUMapMode_Read),
                   int(lib.WGPUCallbackMode_AllowProcessEvents), int(lib.WGPUMapAsyncStatus_Success),
                   error_handler, ERROR_TYPES)


_NATIVE = _load()
AVAILABLE = _NATIVE is not None


def _address(handle) -> int:
    return int(_NATIVE.ffi.cast("uintptr_t", handle))


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
    set_pipeline, set_bind_group, dispatch = (_NATIVE.call[name] for name in (
        "ComputePassEncoderSetPipeline", "ComputePassEncoderSetBindGroup", "ComputePassEncoderDispatchWorkgroups"))
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
            return int(_checked("wgpuQueueSubmitForIndex", _NATIVE.call["QueueSubmitForIndex"],
                                _address(queue._internal), 1, commands))
        except AttributeError:
            pass
    queue.submit([command])
    return None


def _checked(name: str, function, *args):
    """`function(*args)`, raising what wgpu-native reported during it as wgpu-py would (a
    command buffer recorded with an error must never be submitted: wgpu-native aborts the
    process on a failed submission, and a lost device fails every call)."""
    handler = _NATIVE.error_handler
    handler.capture(name)
    try:
        result = function(*args)
    finally:
        error = handler.release(name)
    if error is not None:
        raise _NATIVE.error_types.get(error[0], wgpu.GPUError)(error[1])
    return result


class NativeCommands:
    """A recorded command buffer (`NativeEncoder.finish`), released when dropped."""

    def __init__(self, handle: int, release) -> None:
        self._internal = handle
        self._release = release

    def __del__(self) -> None:
        if self._internal:
            self._release(self._internal)


class NativePass:
    def __init__(self, handle: int, functions: dict) -> None:
        self._internal = handle
        self._functions = functions

    def end(self) -> None:
        try:
            _checked("wgpuComputePassEncoderEnd", self._functions["ComputePassEncoderEnd"], self._internal)
        finally:
            self._functions["ComputePassEncoderRelease"](self._internal)


class NativeEncoder:
    """The part of `GPUCommandEncoder` a step's recording uses (compute passes, buffer copies,
    finish), through C calls that keep the GIL: wgpu-py's let it go around each, and a step
    thread that lets the GIL go waits to get it back while the event loop runs (bench/RESULTS.md,
    session 22)."""

    def __init__(self, device: wgpu.GPUDevice, functions: dict) -> None:
        self._functions = functions
        self._internal = _checked("wgpuDeviceCreateCommandEncoder", functions["DeviceCreateCommandEncoder"],
                                  _address(device._internal), None)

    def __del__(self) -> None:
        if self._internal is not None:  # never finished (an error while recording)
            self._functions["CommandEncoderRelease"](self._internal)

    def begin_compute_pass(self) -> NativePass:
        return NativePass(_checked("wgpuCommandEncoderBeginComputePass",
                                   self._functions["CommandEncoderBeginComputePass"], self._internal, None),
                          self._functions)

    def copy_buffer_to_buffer(self, source: wgpu.GPUBuffer, source_offset: int, destination: wgpu.GPUBuffer,
                              destination_offset: int, size: int) -> None:
        _checked("wgpuCommandEncoderCopyBufferToBuffer", self._functions["CommandEncoderCopyBufferToBuffer"],
                 self._internal, _address(source._internal), source_offset, _address(destination._internal),
                 destination_offset, size)

    def finish(self) -> NativeCommands:
        """The command buffer; what went wrong while recording (wgpu-native keeps an encoder's
        errors for its finish, its dispatches' too) is raised here."""
        encoder, self._internal = self._internal, None
        try:
            handle = _checked("wgpuCommandEncoderFinish", self._functions["CommandEncoderFinish"], encoder, None)
        finally:
            self._functions["CommandEncoderRelease"](encoder)
        return NativeCommands(handle, self._functions["CommandBufferRelease"])


def command_encoder(device: wgpu.GPUDevice) -> NativeEncoder | wgpu.GPUCommandEncoder:
    """An encoder for a step: native where it can be, else wgpu-py's."""
    if AVAILABLE and getattr(device, "_internal", None) is not None:
        return NativeEncoder(device, _NATIVE.call)
    return device.create_command_encoder()


def write_buffer(queue: wgpu.GPUQueue, buffer: wgpu.GPUBuffer, data: bytes) -> None:
    """`queue.write_buffer(buffer, 0, data)`, keeping the GIL."""
    try:
        handles = (_address(queue._internal), _address(buffer._internal)) if AVAILABLE else None
    except AttributeError:
        handles = None
    if handles is None:
        queue.write_buffer(buffer, 0, data)
    else:
        _checked("wgpuQueueWriteBuffer", _NATIVE.call["QueueWriteBuffer"], *handles, 0, data, len(data))


def read_back(device: wgpu.GPUDevice, buffer: wgpu.GPUBuffer, size: int, nbytes: int,
              outcome: ctypes.c_uint32) -> np.ndarray | None:
    """The first `nbytes` of a MAP_READ buffer whose copies have finished (`wait_for`), mapped
    for `size` bytes, as a new uint8 array; None where the native path is missing (then map
    through wgpu-py). `outcome` is where the map's callback writes: its owner keeps it as long
    as the buffer, since a map given up on may still report. wgpu-py's map waits on its poller
    thread, which hands the GIL between three threads for every readback; here the step thread
    maps and copies on its own."""
    if not AVAILABLE:
        return None
    try:
        handle, device_handle = _address(buffer._internal), _address(device._internal)
    except AttributeError:
        return None
    native = _NATIVE
    unmap = native.call["BufferUnmap"]
    outcome.value = 0
    _checked("wgpuBufferMapAsync", native.call["BufferMapAsync"], handle, native.map_read, 0, size,
             _MapCallbackInfo(None, native.process_events, native.on_mapped_address, ctypes.addressof(outcome), None))
    if outcome.value == 0:
        native.call["DevicePoll"](device_handle, 0, None)
    for _ in range(3):  # the copy had not finished after all: wait for it, letting the GIL go
        if outcome.value != 0:
            break
        native.wait(device_handle, 1, None)
    if outcome.value != native.map_success:
        unmap(handle)  # gives up a map still pending, so the buffer can be mapped again
        raise RuntimeError(f"could not map a readback buffer (status {outcome.value})")
    try:
        out = np.empty(nbytes, np.uint8)
        ctypes.memmove(out.ctypes.data, native.call["BufferGetConstMappedRange"](handle, 0, size), nbytes)
        return out
    finally:
        unmap(handle)


def wait_for(device: wgpu.GPUDevice, submission: int | None) -> None:
    """Block until the GPU has finished `submission` (not the ones submitted after it).

    wgpu-py resolves a buffer map by polling the device until *every* submitted command has run,
    so reading a step's results back would also wait for the step launched after it; waiting
    for this submission first lets the map resolve at once."""
    if AVAILABLE and submission is not None:
        index = ctypes.c_uint64(submission)
        _NATIVE.wait(_address(device._internal), 1, ctypes.byref(index))
