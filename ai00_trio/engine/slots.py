"""A runtime's per-slot GPU buffers: the slots' states, logits and sampling tables, laid out
within the device's buffer limits and checked to fit when they are created.

Layout choice. A device binds at most `BufferLimits.binding_bytes` of one buffer to a kernel
(2 GiB on NVIDIA, 128 MiB on lavapipe), and a 1.5B-class RWKV-7 keeps 13.0 MB of state per slot:
256 slots need 3.3 GB. The states are therefore split by *layer*: each buffer holds a run of
consecutive layers for every slot, as [slot][layer of the run][layer's state], which is the
single-buffer layout when everything fits in one. Every kernel reads one layer's state as
`base + slot * stride`, so a step records exactly the dispatches it records with one buffer and
still advances all of its slots in each of them; only which buffer a layer's kernels bind
changes. (Splitting by *slot* would cost each layer one dispatch of each kernel per group of
slots.) One layer of every slot must fit in one binding: 528 KiB a slot for the 1.5B model, so
3,971 slots under 2 GiB (52 GB of states). A slot's state is one copy per buffer to load or save.

The logits stay one buffer: at most `logit_rows` rows per step, as many as one binding holds
(the batch planner asks for no more). Each slot's repetition penalties and logit bias, a vocab
row each, are bound whole by the sampling kernel, so at most binding / (4 * vocab) slots fit:
8,192 for a 65,536-token vocab under 2 GiB. `plan_slots` says which limit binds first; GPU
memory, which wgpu cannot query, is checked by allocating (`allocate_slots`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import wgpu

from ..gpu.graph import StateRef

MIB = 1 << 20


class SlotsDontFit(ValueError):
    """`max_batch` slots do not fit on the device; the message says how many do."""


@dataclass(frozen=True)
class BufferLimits:
    """The largest buffer a kernel may bind, in bytes (tests force a small one)."""

    binding_bytes: int

    @classmethod
    def of(cls, device: wgpu.GPUDevice) -> BufferLimits:
        limits = device.limits
        return cls(min(limits["max-storage-buffer-binding-size"], limits["max-buffer-size"]))


@dataclass(frozen=True)
class SlotShape:
    """What one slot holds: the model's state (`n_layer` layers of `layer_floats` floats) and
    a vocab row of each sampling table."""

    n_layer: int
    layer_floats: int
    n_vocab: int

    @property
    def slot_floats(self) -> int:
        return self.n_layer * self.layer_floats

    def slot_bytes(self) -> int:
        """Bytes one slot adds: its state, penalties, bias, seen bits and one logits row."""
        return 4 * self.slot_floats + 4 * 3 * self.n_vocab + 4 * -(-self.n_vocab // 32)


def _size(nbytes: int) -> str:
    if nbytes >= 1 << 30:
        return f"{nbytes / (1 << 30):,.2f} GiB"
    return f"{nbytes / MIB:,.1f} MiB" if nbytes >= MIB else f"{nbytes / 1024:,.1f} KiB"


def plan_slots(shape: SlotShape, max_batch: int, limits: BufferLimits) -> int:
    """Layers per state buffer for `max_batch` slots; SlotsDontFit when one layer of every
    slot, or a sampling table, is more than one binding holds."""
    binding = limits.binding_bytes
    layer_bytes = 4 * shape.layer_floats
    row_bytes = 4 * shape.n_vocab
    fit = min(binding // layer_bytes, binding // row_bytes)
    if max_batch > fit:
        what = (f"one layer's state for {max_batch} slots takes {_size(max_batch * layer_bytes)}"
                if binding // layer_bytes <= binding // row_bytes
                else f"the sampling tables (a {shape.n_vocab}-token row per slot) take {_size(max_batch * row_bytes)}")
        raise SlotsDontFit(f"max_batch {max_batch} does not fit: {what}, more than the {_size(binding)} the "
                           f"device binds in one buffer; at most {fit} slots fit")
    per_buffer = min(shape.n_layer, binding // (max_batch * layer_bytes))
    buffers = -(-shape.n_layer // per_buffer)
    return -(-shape.n_layer // buffers)  # the same number of layers in each buffer, give or take one


class Allocator(Protocol):
    def storage(self, nbytes: int) -> wgpu.GPUBuffer: ...


class SlotStates:
    """Every slot's state, in buffers of consecutive layers (see the module docstring)."""

    def __init__(self, ctx: Allocator, shape: SlotShape, max_batch: int, layers_per_buffer: int) -> None:
        self.shape = shape
        self.groups: list[tuple[int, int, wgpu.GPUBuffer]] = []  # (first layer, layers, buffer)
        self.layers: list[StateRef] = []  # where each layer's state sits
        try:
            for first in range(0, shape.n_layer, layers_per_buffer):
                count = min(layers_per_buffer, shape.n_layer - first)
                buffer = ctx.storage(max_batch * count * shape.layer_floats * 4)
                self.groups.append((first, count, buffer))
                stride = count * shape.layer_floats
                self.layers += [StateRef(buffer, i * shape.layer_floats, stride) for i in range(count)]
        except BaseException:
            self.destroy()
            raise

    def destroy(self) -> None:
        for _, _, buffer in self.groups:
            buffer.destroy()

    def _copies(self, slot: int) -> list[tuple[int, wgpu.GPUBuffer, int, int]]:
        """(offset in a flat state, group buffer, offset there, bytes) per buffer, for `slot`."""
        floats = self.shape.layer_floats
        return [(first * floats * 4, buffer, slot * count * floats * 4, count * floats * 4)
                for first, count, buffer in self.groups]

    def load(self, device: wgpu.GPUDevice, slot: int, source: wgpu.GPUBuffer) -> None:
        """Copy a flat state (`State`'s layout: layer after layer) into `slot`, queued after
        everything submitted before."""
        encoder = device.create_command_encoder()
        for flat, buffer, offset, nbytes in self._copies(slot):
            encoder.copy_buffer_to_buffer(source, flat, buffer, offset, nbytes)
        device.queue.submit([encoder.finish()])

    def save(self, device: wgpu.GPUDevice, slot: int, target: wgpu.GPUBuffer) -> None:
        """Copy `slot`'s state into a flat state buffer."""
        encoder = device.create_command_encoder()
        for flat, buffer, offset, nbytes in self._copies(slot):
            encoder.copy_buffer_to_buffer(buffer, offset, target, flat, nbytes)
        device.queue.submit([encoder.finish()])


@dataclass
class SlotBuffers:
    """Every buffer whose size grows with the slots: states, logits rows and sampling tables."""

    states: SlotStates
    logit_rows: int
    logits: wgpu.GPUBuffer
    penalties: wgpu.GPUBuffer  # f32 [slot, vocab]
    seen: wgpu.GPUBuffer       # u32 [slot, vocab / 32]: tokens with a penalty
    biases: wgpu.GPUBuffer     # f32 [slot, vocab]

    def destroy(self) -> None:
        self.states.destroy()
        for buffer in (self.logits, self.penalties, self.seen, self.biases):
            buffer.destroy()


def _allocate(ctx: Allocator, shape: SlotShape, max_batch: int, max_tokens: int,
              limits: BufferLimits) -> SlotBuffers:
    layers_per_buffer = plan_slots(shape, max_batch, limits)
    row_bytes = 4 * shape.n_vocab
    logit_rows = min(max_tokens, limits.binding_bytes // row_bytes)
    states = SlotStates(ctx, shape, max_batch, layers_per_buffer)
    made: list[wgpu.GPUBuffer] = []
    try:
        for nbytes in (logit_rows * row_bytes, max_batch * row_bytes, max_batch * 4 * -(-shape.n_vocab // 32),
                       max_batch * row_bytes):
            made.append(ctx.storage(nbytes))
    except BaseException:
        states.destroy()
        for buffer in made:
            buffer.destroy()
        raise
    return SlotBuffers(states, logit_rows, *made)


def _cause(error: BaseException) -> str:
    """An error's type and the last line of its message (wgpu's ends with the reason)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1]}" if lines else type(error).__name__


def allocate_slots(ctx: Allocator, shape: SlotShape, max_batch: int, max_tokens: int,
                   limits: BufferLimits) -> SlotBuffers:
    """The buffers of `max_batch` slots and steps of up to `max_tokens` tokens. SlotsDontFit
    when the layout breaks the binding limit, or when the device runs out of memory: then it
    tries fewer slots, to say how many fit beside what the device holds already."""
    try:
        return _allocate(ctx, shape, max_batch, max_tokens, limits)
    except (MemoryError, wgpu.GPUError) as error:
        cause = _cause(error)
    fit, low, high = 0, 1, max_batch - 1
    while low <= high:  # what fits, to the slot: at most log2(max_batch) tries
        middle = (low + high) // 2
        try:
            _allocate(ctx, shape, middle, max_tokens, limits).destroy()
        except (MemoryError, wgpu.GPUError):
            high = middle - 1
        else:
            fit, low = middle, middle + 1
    raise SlotsDontFit(f"max_batch {max_batch} does not fit in GPU memory: its states, logits and sampling "
                       f"tables take {_size(max_batch * shape.slot_bytes())} ({_size(shape.slot_bytes())} a slot) "
                       f"and the device could not allocate them ({cause}); at most {fit} slots fit beside what "
                       f"it holds now")
