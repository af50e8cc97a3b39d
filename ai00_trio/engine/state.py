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
        return self.model.split_state(self.to_host())

    def to_host(self) -> np.ndarray:
        """The state as the GPU holds it, one flat float32 array (`Model.state_from_host`):
        the cheap way to park a state in host memory (no per-layer relayout)."""
        floats = self.model.arch.slot_stride()
        return np.frombuffer(self.model.ctx.read(self.buffer, floats * 4), np.float32)
