"""LoRA adapters applied to, and removed from, a model already on the GPU.

Each low-rank pair is merged in place by `lora.wgsl` (W += (alpha / r) · B A, `engine/lora.py`'s
formula) and unmerged by the same kernel with the opposite sign, so nothing of the base weights
is kept: each unmerged weight is within half an ulp of the merged weight plus half an ulp of the
base weight of where it started (one fp16 ulp where the delta is small against the weight, as in
trained adapters; far less on fp32 weights). Tensors an adapter replaces whole are small (vectors,
or now and then a matrix): their previous values are read back and kept in host memory, and
written back exactly on removal.

A tensor can be changed in place only where the version module uploaded it unchanged
(`upload.TensorReads`): every layer projection and the head. The embedding (LayerNorm 0 folded
in) and the tensors a version transforms at load (v4/v5 mixes and decays, v6/v7's own LoRA
matrices) are refused, as are quantized matrices (int8 / NF4 are not re-quantized on the GPU):
those adapters merge at load time (`load_model(loras=...)`, `[[lora]]` in the config).

Adapters may be applied in any number and removed in any order: a new adapter may not replace
a tensor that an applied one changes, nor merge into one that an applied one replaced, so the
deltas commute and the replacements never overlap.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import wgpu

from ..gpu.context import GpuContext
from ..gpu.kernels import KernelCache, pack_params
from .lora import LoraDelta, LoraPlan, plan_lora, read_lora
from .upload import MatrixSlot, VectorSlot

MERGE_THREADS = 256      # lora.wgsl's WG
MAX_GROUPS_X = 32768


class HotSwapError(ValueError):
    """An adapter that cannot be applied to (or removed from) the model on the GPU."""


@dataclass
class LoraHandle:
    """One applied adapter: what `Model.remove_lora` needs to take it out again."""
    id: int
    origin: str
    alpha: float
    plan: LoraPlan
    saved: dict[str, list[bytes]] = field(default_factory=dict)  # replaced tensors: their previous bytes per slot

    @property
    def touched(self) -> set[str]:
        return {delta.target for delta in self.plan.deltas} | set(self.plan.replacements)


class LoraSwapper:
    """The applied adapters of one model, and the GPU work of applying and removing them."""

    def __init__(self, ctx: GpuContext, kernels: KernelCache, vecs: wgpu.GPUBuffer,
                 slots: dict[str, list[MatrixSlot | VectorSlot]], shapes: dict[str, tuple[int, ...]],
                 version: str) -> None:
        self._ctx = ctx
        self._kernels = kernels
        self._vecs = vecs
        self._slots = slots
        self._shapes = shapes
        self._version = version
        self._ids = itertools.count(1)
        self.applied: list[LoraHandle] = []

    def apply(self, lora: str | Path | Mapping[str, np.ndarray], alpha: float, origin: str | None = None) -> LoraHandle:
        """Merge the adapter (a file, or its tensors, from `origin`) into the weights; nothing
        changes when it is refused."""
        origin = origin or (str(lora) if isinstance(lora, (str, Path)) else "tensors")
        tensors = read_lora(lora) if isinstance(lora, (str, Path)) else lora
        plan = plan_lora(tensors, float(alpha), self._shapes, origin)
        # a pair and a whole tensor for one target: the tensor wins, as when merged at load
        plan = LoraPlan(origin, [d for d in plan.deltas if d.target not in plan.replacements], plan.replacements)
        self._check(plan)
        handle = LoraHandle(next(self._ids), origin, float(alpha), plan)
        for name, array in plan.replacements.items():
            handle.saved[name] = [self._read(slot) for slot in self._slots[name]]
        encoder = self._ctx.device.create_command_encoder()
        for delta in plan.deltas:
            self._record_merge(encoder, delta, delta.scale)
        self._ctx.device.queue.submit([encoder.finish()])
        for name, array in plan.replacements.items():
            for slot in self._slots[name]:
                self._write(slot, self._encode(slot, array))
        self._finish()
        self.applied.append(handle)
        return handle

    def remove(self, handle: LoraHandle) -> None:
        """Unmerge the adapter's deltas and write back what it replaced."""
        if handle not in self.applied:
            raise HotSwapError(f"the LoRA {handle.origin} is not applied to this model")
        encoder = self._ctx.device.create_command_encoder()
        for delta in handle.plan.deltas:
            self._record_merge(encoder, delta, -delta.scale)
        self._ctx.device.queue.submit([encoder.finish()])
        for name, saved in handle.saved.items():
            for slot, raw in zip(self._slots[name], saved):
                self._write(slot, raw)
        self._finish()
        self.applied.remove(handle)

    # --- checks ----------------------------------------------------------------------------
    def _check(self, plan: LoraPlan) -> None:
        replaced = {name for h in self.applied for name in h.plan.replacements}
        touched = {name for h in self.applied for name in h.touched}
        for delta in plan.deltas:
            self._check_target(plan.origin, delta.target)
            if any(isinstance(slot, VectorSlot) for slot in self._slots[delta.target]):
                raise HotSwapError(f"{plan.origin}: {delta.target} is held as vectors on the GPU; "
                                   "this LoRA can only be merged at load time")
            if delta.target in replaced:
                raise HotSwapError(f"{plan.origin}: {delta.target} was replaced whole by an applied LoRA; "
                                   "remove that one first")
        for name in plan.replacements:
            self._check_target(plan.origin, name)
            if name in touched:
                raise HotSwapError(f"{plan.origin}: {name} is changed by an applied LoRA; remove that one first")

    def _check_target(self, origin: str, name: str) -> None:
        slots = self._slots.get(name)
        if slots is None:
            raise HotSwapError(
                f"{origin}: {name} is kept on the GPU in another form than the checkpoint's (folded, "
                f"transposed or transformed when the RWKV-{self._version[1:]} model was loaded), so this "
                "LoRA can only be merged at load time ([[lora]] in the config, load_model(loras=...))")
        for slot in slots:
            if isinstance(slot, MatrixSlot) and slot.matrix.fmt in ("int8", "nf4"):
                raise HotSwapError(
                    f"{origin}: {name} is quantized ({slot.matrix.fmt}) and quantized weights are not "
                    "re-quantized on the GPU; load the model with fewer quantized layers, or merge this "
                    "LoRA at load time")

    # --- GPU work --------------------------------------------------------------------------
    def _record_merge(self, encoder: wgpu.GPUCommandEncoder, delta: LoraDelta, scale: float) -> None:
        device = self._ctx.device
        a = device.create_buffer_with_data(data=delta.a.tobytes(), usage=wgpu.BufferUsage.STORAGE)
        b = device.create_buffer_with_data(data=delta.b.tobytes(), usage=wgpu.BufferUsage.STORAGE)
        for slot in self._slots[delta.target]:
            matrix = slot.matrix
            kernel = self._kernels.get("lora.wgsl", "lora_merge", ["W_F32" if matrix.fmt == "f32" else "W_F16"])
            groups = -(-matrix.m * matrix.k // 2 // MERGE_THREADS)
            groups_x = min(groups, MAX_GROUPS_X)
            params = pack_params(matrix.m, matrix.k, delta.a.shape[0], matrix.offset + slot.z * matrix.m * matrix.k,
                                 float(scale), groups_x, 0, 0)
            resources = [self._ctx.uniform(params), matrix.buffer, a, b]
            group = device.create_bind_group(layout=kernel.layout, entries=[
                {"binding": index, "resource": {"buffer": buf, "offset": 0, "size": buf.size}}
                for index, buf in zip(kernel.bindings, resources)])
            compute = encoder.begin_compute_pass()
            compute.set_pipeline(kernel.pipeline)
            compute.set_bind_group(0, group)
            compute.dispatch_workgroups(groups_x, -(-groups // groups_x), 1)
            compute.end()

    def _place(self, slot: MatrixSlot | VectorSlot) -> tuple[wgpu.GPUBuffer, int, int]:
        """(buffer, byte offset, bytes) of a slot."""
        if isinstance(slot, VectorSlot):
            return self._vecs, slot.offset * 4, slot.size * 4
        matrix = slot.matrix
        itemsize = 4 if matrix.fmt == "f32" else 2
        count = matrix.m * matrix.k
        return matrix.buffer, (matrix.offset + slot.z * count) * itemsize, count * itemsize

    @staticmethod
    def _encode(slot: MatrixSlot | VectorSlot, array: np.ndarray) -> bytes:
        f32 = isinstance(slot, VectorSlot) or slot.matrix.fmt == "f32"
        return np.ascontiguousarray(array, np.float32 if f32 else np.float16).tobytes()

    def _read(self, slot: MatrixSlot | VectorSlot) -> bytes:
        buffer, offset, nbytes = self._place(slot)
        return self._ctx.read(buffer, nbytes, offset).tobytes()

    def _write(self, slot: MatrixSlot | VectorSlot, raw: bytes) -> None:
        buffer, offset, _ = self._place(slot)
        self._ctx.device.queue.write_buffer(buffer, offset, raw)

    def _finish(self) -> None:
        """Wait until the GPU has done it all (so that a caller's timing and the next step see it)."""
        self._ctx.read(self._vecs, 4)
