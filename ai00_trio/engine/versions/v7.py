"""RWKV-7 "Goose" (Peng et al. 2025): the generalized delta rule.

    x_{r,k,v,w,a,g} = x̂ + (x̂_prev - x̂) ⊙ μ_{r,k,v,w,a,g}
    r, k, v = W_r x_r, W_k x_k, W_v x_v
    d = W2 tanh(W1 x_w),  α = A2 A1 x_a,  ν = V2 V1 x_v (layers > 0),  g = G2 σ(G1 x_g)
    y = wkv7(r, k, v, d, α, ν)            (decay, ICLR, value residual, κ, state update: wkv7.wgsl)
    x += W_o ((GroupNorm(y) + bonus) ⊙ g)
    x += W_v relu(W_k (x̂ + (x̂_prev - x̂) ⊙ μ_k))²
State per layer: [att shift (C), S (H, N value, N key), ffn shift (C)].
"""
from __future__ import annotations

import numpy as np

from ...gpu.graph import Act, StepGraph
from .common import Architecture, Workspace

MIX_NAMES = ("r", "k", "v", "w", "a", "g")


class V7(Architecture):
    @property
    def state_size(self) -> int:
        info = self.info
        return 2 * info.n_embd + info.n_head * info.head_size**2

    def load(self, t: dict[str, np.ndarray]) -> None:
        up, info = self.up, self.info
        n = info.n_layer
        self.att_mix, self.rkv, self.output, self.params = [], [], [], []
        self.w1, self.w2, self.a1, self.a2, self.v1, self.v2, self.g1, self.g2 = ([] for _ in range(8))
        for i in range(n):
            a = f"blocks.{i}.att."
            self.att_mix.append(up.vectors.add(*(t[a + f"x_{m}"] for m in MIX_NAMES)))
            self.rkv.append(up.matrix(*(t[a + f"{m}.weight"] for m in ("receptance", "key", "value"))))
            self.output.append(up.matrix(t[a + "output.weight"]))
            v0 = t[a + "v0"] if i > 0 else np.zeros(info.n_embd, np.float32)
            self.params.append(up.vectors.add(t[a + "w0"], t[a + "a0"], v0, t[a + "k_k"], t[a + "k_a"],
                                              t[a + "r_k"], t[a + "ln_x.weight"], t[a + "ln_x.bias"]))
            for name in ("w1", "w2", "a1", "a2", "g1", "g2") + (("v1", "v2") if i > 0 else ()):
                getattr(self, name).append(up.matrix(t[a + name].T))
            if i == 0:
                self.v1.append(None)
                self.v2.append(None)
        self.ffn_mix = [up.vectors.add(t[f"blocks.{i}.ffn.x_k"]) for i in range(n)]
        self.ffn_key = [up.matrix(t[f"blocks.{i}.ffn.key.weight"]) for i in range(n)]
        self.ffn_value = [up.matrix(t[f"blocks.{i}.ffn.value.weight"]) for i in range(n)]

    def time_mix(self, g: StepGraph, ws: Workspace, layer: int, x: Act, xn: Act) -> None:
        info, T = self.info, g.t
        C = info.n_embd
        mixed = ws.act("att_mix", C, T, 6)                       # x_r, x_k, x_v, x_w, x_a, x_g
        self.shift(g, xn, mixed, self.att_mix[layer], layer, self.att_row)
        rkv = ws.act("att_rkv", C, T, 3)
        g.matmul(self.rkv[layer], mixed.plane(0, 3), rkv)        # r, k, v
        lora = ws.act("att_lora", C, T, 3)                       # d, α, ν
        hidden = ws.act("att_w_h", info.w_dim, T)
        g.matmul(self.w1[layer], mixed.plane(3), hidden, act="tanh")
        g.matmul(self.w2[layer], hidden, lora.plane(0))
        hidden = ws.act("att_a_h", info.a_dim, T)
        g.matmul(self.a1[layer], mixed.plane(4), hidden)
        g.matmul(self.a2[layer], hidden, lora.plane(1))
        if layer > 0:
            hidden = ws.act("att_v_h", info.v_dim, T)
            g.matmul(self.v1[layer], mixed.plane(2), hidden)
            g.matmul(self.v2[layer], hidden, lora.plane(2))
        hidden = ws.act("att_g_h", info.g_dim, T)
        g.matmul(self.g1[layer], mixed.plane(5), hidden, act="sigmoid")
        gate = ws.act("att_gate", C, T)
        g.matmul(self.g2[layer], hidden, gate)
        v_first = ws.act("v_first", C, T)
        y = ws.act("att_y", C, T)
        g.wkv7(rkv, lora, gate, v_first, y, info.head_size, self.layer_base(layer), self.slot_stride(),
               self.params[layer], first_layer=layer == 0)
        g.matmul(self.output[layer], y, x, add=True)

    def channel_mix(self, g: StepGraph, ws: Workspace, layer: int, x: Act, xn: Act) -> None:
        C, F, T = self.info.n_embd, self.info.n_ffn, g.t
        xk = ws.act("ffn_mix", C, T)
        self.shift(g, xn, xk, self.ffn_mix[layer], layer, self.ffn_row)
        k = ws.act("ffn_k", F, T)
        g.matmul(self.ffn_key[layer], xk, k, act="relu_sq")
        g.matmul(self.ffn_value[layer], k, x, add=True)
