"""RWKV-5 "Eagle" (Peng et al. 2024): multi-head matrix-valued state.

    x_{r,k,v,g} = lerp(x̂_prev, x̂, μ_{r,k,v,g})
    r, k, v, g = W_r x_r, W_k x_k, W_v x_v, W_g x_g
    y = wkv5(r, k, v; w = exp(-exp(time_decay)), u)      u = time_faaaa (5.2) or exp(time_first) (5.0)
    x += W_o (GroupNorm(y) ⊙ silu(g))                    (5.0 checkpoints have no gate)
    x += channel mix
State per layer: [att shift (C), S (H, N key, N value), ffn shift (C)].
"""
from __future__ import annotations

import numpy as np

from ...gpu.graph import Act, StepGraph
from .common import Architecture, ReceptanceChannelMix, Workspace
from .v4 import keep_previous


def per_channel(values: np.ndarray, n_head: int, head_size: int) -> np.ndarray:
    """A per-head [H] or per-channel [H, N] tensor as [H·N]."""
    values = values.astype(np.float64).reshape(n_head, -1)
    return np.broadcast_to(values, (n_head, head_size)).reshape(-1)


class V5(ReceptanceChannelMix, Architecture):
    @property
    def state_size(self) -> int:
        info = self.info
        return 2 * info.n_embd + info.n_head * info.head_size**2

    def load(self, t: dict[str, np.ndarray]) -> None:
        up, info = self.up, self.info
        H, N = info.n_head, info.head_size
        self.gated = info.gated
        mixes = "rkvg" if self.gated else "rkv"
        self.att_mix, self.rkvg, self.decay, self.first, self.lnx, self.output = [], [], [], [], [], []
        for i in range(info.n_layer):
            a = f"blocks.{i}.att."
            self.att_mix.append(up.vectors.add(*(keep_previous(t[a + f"time_mix_{m}"]) for m in mixes)))
            names = ("receptance", "key", "value", "gate")[: len(mixes)]
            self.rkvg.append(up.matrix(*(t[a + f"{m}.weight"] for m in names), layer=i))
            self.decay.append(up.vectors.add(np.exp(-np.exp(per_channel(t[a + "time_decay"], H, N)))))
            if a + "time_faaaa" in t:
                bonus = per_channel(t[a + "time_faaaa"], H, N)
            else:
                bonus = np.exp(per_channel(t[a + "time_first"], H, N))
            self.first.append(up.vectors.add(bonus))
            self.lnx.append(up.vectors.add(t[a + "ln_x.weight"], t[a + "ln_x.bias"]))
            self.output.append(up.matrix(t[a + "output.weight"], layer=i))
        f = "blocks.{}.ffn."
        self.load_channel_mix(t, [[keep_previous(t[f.format(i) + f"time_mix_{m}"]) for m in "kr"]
                                  for i in range(info.n_layer)])

    def time_mix(self, g: StepGraph, ws: Workspace, layer: int, x: Act) -> None:
        C, T, planes = self.info.n_embd, g.t, 4 if self.gated else 3
        mixed = ws.act("att_mix", C, T, planes)                  # x_r, x_k, x_v[, x_g]
        self.norm_shift(g, x, mixed, layer, self.att_mix[layer])
        rkvg = ws.act("att_rkvg", C, T, planes)
        g.matmul(self.rkvg[layer], mixed, rkvg)                  # r, k, v[, g]
        y = ws.act("att_y", C, T)
        g.wkv5(rkvg, y, self.info.head_size, g.state[layer], self.decay[layer], self.first[layer],
               self.lnx[layer], self.gated)
        g.matmul(self.output[layer], y, x, add=True)
