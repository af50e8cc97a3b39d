"""RWKV-6 "Finch" (Peng et al. 2024): data-dependent token shift and decay.

    x̃ = x̂ + (x̂_prev - x̂) ⊙ μ_x
    m_{w,r,k,v,g} = W2_z tanh(W1 x̃)                          (one LoRA, five outputs)
    x_z = x̂ + (x̂_prev - x̂) ⊙ (μ_z + m_z)
    r, k, v, g = W_r x_r, W_k x_k, W_v x_v, W_g x_g
    w = exp(-exp(time_decay + W_d2 tanh(W_d1 x_w)))           (per token)
    x += W_o (GroupNorm(wkv5(r, k, v; w, u = time_faaaa)) ⊙ silu(g))
    x += channel mix (x_{k,r} = x̂ + (x̂_prev - x̂) ⊙ μ_{k,r})
"""
from __future__ import annotations

import numpy as np

from ...gpu.graph import Act, StepGraph
from .common import Architecture, ReceptanceChannelMix, Workspace

# The checkpoint orders the LoRA outputs w, k, v, r, g; we reorder W1's output chunks and W2's
# slices to w, r, k, v, g so that r, k, v, g are consecutive planes fed to one stacked matmul.
LORA_ORDER = (0, 3, 1, 2, 4)
MIX_NAMES = ("w", "r", "k", "v", "g")


class V6(ReceptanceChannelMix, Architecture):
    @property
    def state_size(self) -> int:
        info = self.info
        return 2 * info.n_embd + info.n_head * info.head_size**2

    def load(self, t: dict[str, np.ndarray]) -> None:
        up, info = self.up, self.info
        self.mix_x, self.mix5, self.maa_w1, self.maa_w2 = [], [], [], []
        self.rkvg, self.decay_w1, self.decay_w2 = [], [], []
        self.decay, self.first, self.lnx, self.output = [], [], [], []
        for i in range(info.n_layer):
            a = f"blocks.{i}.att."
            self.mix_x.append(up.vectors.add(t[a + "time_maa_x"]))
            self.mix5.append(up.vectors.add(*(t[a + f"time_maa_{m}"] for m in MIX_NAMES)))
            w1 = t[a + "time_maa_w1"].T.reshape(5, info.maa_dim, -1)
            self.maa_w1.append(up.matrix(np.concatenate([w1[z] for z in LORA_ORDER])))
            w2 = t[a + "time_maa_w2"]
            self.maa_w2.append(up.matrix(*(w2[z].T for z in LORA_ORDER)))
            # r, k, v, g and the decay LoRA's first matrix share their input width: one buffer, so
            # that every step runs them in one pass
            rkvg, decay_w1 = up.matrices([t[a + f"{m}.weight"] for m in ("receptance", "key", "value", "gate")],
                                         [t[a + "time_decay_w1"].T], layer=i)
            self.rkvg.append(rkvg)
            self.decay_w1.append(decay_w1)
            self.decay_w2.append(up.matrix(t[a + "time_decay_w2"].T))
            self.decay.append(up.vectors.add(t[a + "time_decay"]))
            self.first.append(up.vectors.add(t[a + "time_faaaa"]))
            self.lnx.append(up.vectors.add(t[a + "ln_x.weight"], t[a + "ln_x.bias"]))
            self.output.append(up.matrix(t[a + "output.weight"], layer=i))
        f = "blocks.{}.ffn."
        self.load_channel_mix(t, [[t[f.format(i) + f"time_maa_{m}"] for m in "kr"] for i in range(info.n_layer)])

    def time_mix(self, g: StepGraph, ws: Workspace, layer: int, x: Act) -> None:
        info, T = self.info, g.t
        C, D = info.n_embd, info.maa_dim
        x_tilde = ws.act("att_x_tilde", C, T)
        normed = ws.act("att_normed", C, T, 2)                   # x̂, x̂_prev
        self.norm_shift(g, x, x_tilde, layer, self.mix_x[layer], normed=normed)
        lora_h = ws.act("att_maa_h", 5 * D, T)
        g.matmul(self.maa_w1[layer], x_tilde, lora_h, act="tanh")
        lora_m = ws.act("att_maa_m", C, T, 5)                    # m_w, m_r, m_k, m_v, m_g
        g.matmul(self.maa_w2[layer], Act(lora_h.buffer, D, T, 5), lora_m, x_strides=(5 * D, D))
        mixed = ws.act("att_mix", C, T, 5)                       # x_w, x_r, x_k, x_v, x_g
        g.dynamic_mix(normed, lora_m, mixed, self.mix5[layer])
        rkvg, decay_h = ws.packed("att_proj", T, (C, 4), (info.decay_dim, 1))  # r, k, v, g; decay LoRA hidden
        g.matmuls([(self.rkvg[layer], mixed.plane(1, 4), rkvg, "none"),
                   (self.decay_w1[layer], mixed.plane(0), decay_h, "tanh")])
        decay = ws.act("att_decay", C, T)
        g.matmul(self.decay_w2[layer], decay_h, decay)
        y = ws.act("att_y", C, T)
        g.wkv5(rkvg, y, info.head_size, g.state[layer], self.decay[layer], self.first[layer],
               self.lnx[layer], gated=True, decay=decay)
        g.matmul(self.output[layer], y, x, add=True)
