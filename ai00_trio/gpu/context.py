"""The wgpu device the engine runs on: adapter choice, limits and features."""
from __future__ import annotations

import ctypes
import os
import tempfile
from dataclasses import dataclass, field

import msgspec
import numpy as np
import wgpu

from . import fast_encode


class NoAdapterError(RuntimeError):
    """No WebGPU adapter: no GPU driver and no software Vulkan (install mesa-vulkan-drivers)."""


class AdapterInfo(msgspec.Struct, frozen=True):
    index: int
    name: str
    backend: str
    adapter_type: str
    vendor: str


def _describe(index: int, adapter: wgpu.GPUAdapter) -> AdapterInfo:
    info = adapter.info
    return AdapterInfo(
        index=index,
        name=info.get("device", "?"),
        backend=info.get("backend_type", "?"),
        adapter_type=info.get("adapter_type", "?"),
        vendor=info.get("vendor", "?"),
    )


def _usable(adapters: list[wgpu.GPUAdapter]) -> list[wgpu.GPUAdapter]:
    # Compute shaders with storage buffers need Vulkan, Metal or DX12; GL adapters lack them.
    return [a for a in adapters if a.info.get("backend_type") in ("Vulkan", "Metal", "D3D12")]


def _enumerate_adapters() -> list[wgpu.GPUAdapter]:
    # Mesa's Vulkan drivers probe for a Wayland display and print "XDG_RUNTIME_DIR is invalid or
    # not set" at every start where it is unset (servers, containers, CI); we draw nothing, so a
    # private empty runtime folder of our own quiets the probe.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        folder = os.path.join(tempfile.gettempdir(), f"ai00-trio-runtime-{getattr(os, 'getuid', lambda: 0)()}")
        os.makedirs(folder, mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = folder
    return _usable(wgpu.gpu.enumerate_adapters_sync())


def list_adapters() -> list[AdapterInfo]:
    """Every adapter the engine can run on, in the order `adapter=<index>` refers to."""
    return [_describe(i, a) for i, a in enumerate(_enumerate_adapters())]


def buffer_bytes_in_use() -> int:
    """Bytes of the GPU buffers alive in this process, as wgpu-py counts them (no device reports
    its own memory use)."""
    return int(wgpu.diagnostics.object_counts.get_dict()["Buffer"].get("resource_mem", 0))


def pick_adapter(choice: int | str | None = None) -> wgpu.GPUAdapter:
    """By index, by (part of) the device name, or the high-performance default."""
    adapters = _enumerate_adapters()
    if not adapters:
        raise NoAdapterError(
            "no WebGPU adapter found: install a GPU driver, or Mesa's software Vulkan "
            "(Debian: apt-get install mesa-vulkan-drivers)"
        )
    if choice is None:
        for kind in ("DiscreteGPU", "IntegratedGPU", "VirtualGPU"):
            for adapter in adapters:
                if adapter.info.get("adapter_type") == kind:
                    return adapter
        return adapters[0]
    if isinstance(choice, int) or (isinstance(choice, str) and choice.isdigit()):
        index = int(choice)
        if not 0 <= index < len(adapters):
            raise NoAdapterError(f"adapter index {index} out of range: {len(adapters)} adapter(s)")
        return adapters[index]
    matches = [a for a in adapters if choice.lower() in a.info.get("device", "").lower()]
    if not matches:
        names = ", ".join(a.info.get("device", "?") for a in adapters)
        raise NoAdapterError(f"no adapter named like {choice!r}; found: {names}")
    return matches[0]


def _aligned(nbytes: int) -> int:
    """Copy and map sizes must be multiples of 4 bytes."""
    return (nbytes + 3) // 4 * 4


class Readback:
    """A mappable buffer reused for copies back to the host (a fresh one per read costs
    milliseconds). Not thread-safe: each user holds its own."""

    def __init__(self, device: wgpu.GPUDevice) -> None:
        self._device = device
        self.buffer: wgpu.GPUBuffer | None = None
        self._mapped = ctypes.c_uint32(0)  # where a native map reports (fast_encode.read_back)

    def reserve(self, nbytes: int) -> bool:
        """Make room for `nbytes`; True when that replaced the buffer (commands recorded
        against the old one are void)."""
        size = _aligned(nbytes)
        if self.buffer is not None and self.buffer.size >= size:
            return False
        if self.buffer is not None:
            self.buffer.destroy()
        capacity = max(1 << 16, -(-size // (1 << 20)) * (1 << 20))  # whole MiB
        self.buffer = self._device.create_buffer(
            size=capacity, usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST)
        return True

    def record(self, encoder: wgpu.GPUCommandEncoder, source: wgpu.GPUBuffer, nbytes: int,
               offset: int = 0) -> None:
        """Append the copy of `nbytes` of `source` into this buffer (after `reserve`)."""
        encoder.copy_buffer_to_buffer(source, offset, self.buffer, 0, _aligned(nbytes))

    def fetch(self, nbytes: int) -> np.ndarray:
        """Wait for the submitted copy; its first `nbytes` as a writable uint8 array."""
        size = _aligned(nbytes)
        native = fast_encode.read_back(self._device, self.buffer, size, nbytes, self._mapped)
        if native is not None:
            return native
        self.buffer.map_sync(wgpu.MapMode.READ, 0, size)
        try:
            return np.frombuffer(self.buffer.read_mapped(0, size, copy=False), np.uint8)[:nbytes].copy()
        finally:
            self.buffer.unmap()


@dataclass
class GpuContext:
    """One device and its queue, plus the helpers every buffer upload and readback uses. Not
    thread-safe: one thread uses it at a time (in the server, the GPU executor's)."""

    adapter: wgpu.GPUAdapter
    device: wgpu.GPUDevice
    has_f16: bool
    has_subgroups: bool = False
    allocated_bytes: int = 0  # buffers created through this context (wgpu has no memory query)
    _readback: Readback | None = field(default=None, repr=False)

    @property
    def info(self) -> AdapterInfo:
        return _describe(0, self.adapter)

    def upload(self, array: np.ndarray, usage: int = 0) -> wgpu.GPUBuffer:
        data = np.ascontiguousarray(array)
        usage |= wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST
        if data.nbytes == 0:
            data = np.zeros(4, np.uint8)
        padded = -data.nbytes % 16
        raw = data.tobytes() + bytes(padded)
        self.allocated_bytes += len(raw)
        return self.device.create_buffer_with_data(data=raw, usage=usage)

    def storage(self, nbytes: int) -> wgpu.GPUBuffer:
        usage = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST
        size = max(16, (nbytes + 15) // 16 * 16)
        self.allocated_bytes += size
        return self.device.create_buffer(size=size, usage=usage)

    def uniform(self, raw: bytes) -> wgpu.GPUBuffer:
        raw = raw + bytes(-len(raw) % 16)
        return self.device.create_buffer_with_data(
            data=raw, usage=wgpu.BufferUsage.UNIFORM | wgpu.BufferUsage.COPY_DST
        )

    def read(self, buffer: wgpu.GPUBuffer, nbytes: int, offset: int = 0,
             encoder: wgpu.GPUCommandEncoder | None = None) -> np.ndarray:
        """`nbytes` of `buffer` from `offset` (a writable uint8 array), once all work submitted
        before has run. An open `encoder` gets the copy appended and is submitted here (one
        submit for a whole step)."""
        if self._readback is None:
            self._readback = Readback(self.device)
        self._readback.reserve(nbytes)
        encoder = encoder or self.device.create_command_encoder()
        self._readback.record(encoder, buffer, nbytes, offset)
        self.device.queue.submit([encoder.finish()])
        return self._readback.fetch(nbytes)

    def copy(self, source: wgpu.GPUBuffer, target: wgpu.GPUBuffer, nbytes: int,
             source_offset: int = 0, target_offset: int = 0) -> None:
        """A GPU-side copy, queued after everything submitted before it."""
        encoder = self.device.create_command_encoder()
        encoder.copy_buffer_to_buffer(source, source_offset, target, target_offset, nbytes)
        self.device.queue.submit([encoder.finish()])


def create_context(adapter: int | str | None = None, extra_features: tuple[str, ...] = ()) -> GpuContext:
    """A device on the chosen adapter; `extra_features` (e.g. timestamp queries for profiling)
    are requested when the adapter has them."""
    chosen = pick_adapter(adapter)
    features = [f for f in ("shader-f16", "subgroup", *extra_features) if f in chosen.features]
    limits = chosen.limits
    wanted = {
        "max-storage-buffer-binding-size": limits["max-storage-buffer-binding-size"],
        "max-buffer-size": limits["max-buffer-size"],
        "max-storage-buffers-per-shader-stage": min(16, limits["max-storage-buffers-per-shader-stage"]),
        "max-compute-workgroup-storage-size": limits["max-compute-workgroup-storage-size"],
        "max-compute-invocations-per-workgroup": min(1024, limits["max-compute-invocations-per-workgroup"]),
        "max-compute-workgroup-size-x": min(1024, limits["max-compute-workgroup-size-x"]),
    }
    device = chosen.request_device_sync(required_features=features, required_limits=wanted)
    return GpuContext(adapter=chosen, device=device, has_f16="shader-f16" in features,
                      has_subgroups="subgroup" in features)
