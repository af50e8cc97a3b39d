"""A sequence's recurrent state, kept on the GPU between calls."""
from __future__ import annotations

import numpy as np
import wgpu


class State:
    """One slot's worth of state: per layer the version's rows (see each version module).

    `to_numpy()` gives the list layout of BlinkDL's `rwkv` package: per layer
    v4: att x_prev, a, b, p, ffn x_prev; v5-v7: att x_prev, wkv (H, N, N), ffn x_prev.
    """

    def __init__(self, model, buffer: wgpu.GPUBuffer) -> None:
        self.model = model
        self.buffer = buffer

    def copy(self) -> "State":
        ctx = self.model.ctx
        clone = ctx.storage(self.buffer.size)
        ctx.copy(self.buffer, clone, self.buffer.size)
        return State(self.model, clone)

    def to_numpy(self) -> list[np.ndarray]:
        model = self.model
        floats = model.arch.slot_stride()
        flat = np.frombuffer(model.ctx.read(self.buffer, floats * 4), np.float32)
        return model.split_state(flat)
