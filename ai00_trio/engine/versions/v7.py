"""RWKV-7 "Goose" (Peng et al. 2025): the generalized delta rule.

    x_{r,k,v,w,a,g} = x̂ + (x̂_prev - x̂) ⊙ μ_{r,k,v,w,a,g}
    r, k, v = W_r x_r, W_k x_k, W_v x_v
    ν = V2 V1 x_v (layers > 0),  d = W2 tanh(W1 x_w),  α = A2 A1 x_a,  g = G2 σ(G1 x_g)
        (the four LoRAs run as two stacked matmuls: their first and second halves; the first
         shares a pass with r, k, v)
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
LORAS = ("v", "w", "a", "g")                        # mixes 2..5, in this order
LORA_ACTIVATIONS = ("none", "tanh", "none", "sigmoid")  # between each LoRA's two matrices
WKV_SPLIT_MIN_RUN = 32  # runs this long on average: parallel prepare / serial scan / parallel output


def padded(matrix: np.ndarray, rows: int, cols: int) -> np.ndarray:
    out = np.zeros((rows, cols), np.float32)
    out[: matrix.shape[0], : matrix.shape[1]] = matrix
    return out


class V7(Architecture):
    @property
    def state_size(self) -> int:
        info = self.info
        return 2 * info.n_embd + info.n_head * info.head_size**2

    def wkv_reference(self, heads: np.ndarray) -> np.ndarray:
        """wkv7.wgsl keeps each head's state transposed: [H, N key, N value]."""
        return heads.transpose(0, 2, 1).copy()

    def wkv_from_time_state(self, heads: np.ndarray) -> np.ndarray:
        return heads.copy()  # the package's v7 layout is the file's

    def load(self, t: dict[str, np.ndarray]) -> None:
        up, info = self.up, self.info
        n = info.n_layer
        self.att_mix, self.rkv, self.output, self.params = [], [], [], []
        self.lora_down, self.lora_up = [], []
        C = info.n_embd
        self.lora_dim = -(-max(info.w_dim, info.a_dim, info.g_dim, info.v_dim) // 8) * 8  # whole 16-byte f16 words
        for i in range(n):
            a = f"blocks.{i}.att."
            self.att_mix.append(up.vectors.add(*(t[a + f"x_{m}"] for m in MIX_NAMES)))
            self.output.append(up.matrix(t[a + "output.weight"], layer=i))
            v0 = t[a + "v0"] if i > 0 else np.zeros(info.n_embd, np.float32)
            self.params.append(up.vectors.add(t[a + "w0"], t[a + "a0"], v0, t[a + "k_k"], t[a + "k_a"],
                                              t[a + "r_k"], t[a + "ln_x.weight"], t[a + "ln_x.bias"]))
            # layer 0 has no value LoRA: zeros keep the stacked shape (its ν is not used)
            down = [t[a + f"{m}1"].T if m != "v" or i > 0 else np.zeros((1, C), np.float32) for m in LORAS]
            up_ = [t[a + f"{m}2"].T if m != "v" or i > 0 else np.zeros((C, 1), np.float32) for m in LORAS]
            # r, k, v and the LoRAs' first matrices share their input width: one buffer, so that
            # every step runs them in one pass
            rkv, lora_down = up.matrices([t[a + f"{m}.weight"] for m in ("receptance", "key", "value")],
                                         [padded(m, self.lora_dim, C) for m in down], layer=i)
            self.rkv.append(rkv)
            self.lora_down.append(lora_down)
            self.lora_up.append(up.matrix(*(padded(m, C, self.lora_dim) for m in up_)))
        self.ffn_mix = [up.vectors.add(t[f"blocks.{i}.ffn.x_k"]) for i in range(n)]
        self.ffn_key = [up.matrix(t[f"blocks.{i}.ffn.key.weight"], layer=i) for i in range(n)]
        self.ffn_value = [up.matrix(t[f"blocks.{i}.ffn.value.weight"], layer=i) for i in range(n)]

    def time_mix(self, g: StepGraph, ws: Workspace, layer: int, x: Act) -> None:
        info, T = self.info, g.t
        C = info.n_embd
        mixed = ws.act("att_mix", C, T, 6)                       # x_r, x_k, x_v, x_w, x_a, x_g
        self.norm_shift(g, x, mixed, layer, self.att_mix[layer])
        rkv, hidden = ws.packed("att_proj", T, (C, 3), (self.lora_dim, 4))  # r, k, v; the LoRA hidden h_z
        g.matmuls([(self.rkv[layer], mixed.plane(0, 3), rkv, "none"),
                   (self.lora_down[layer], mixed.plane(2, 4), hidden, LORA_ACTIVATIONS)])
        lora = ws.act("att_lora", C, T, 4)                       # ν, d, α, g
        g.matmul(self.lora_up[layer], hidden, lora)
        v_first = ws.act("v_first", C, T)
        y = ws.act("att_y", C, T)
        split = T >= WKV_SPLIT_MIN_RUN * g.n_runs
        g.wkv7(rkv, lora, v_first, y, info.head_size, g.state[layer], self.params[layer], first_layer=layer == 0,
               prep=ws.act("att_prep", C, T, 5) if split else None,
               y_raw=ws.act("att_y_raw", C, T) if split else None)
        g.matmul(self.output[layer], y, x, add=True)

    def channel_mix(self, g: StepGraph, ws: Workspace, layer: int, x: Act) -> None:
        C, F, T = self.info.n_embd, self.info.n_ffn, g.t
        xk = ws.act("ffn_mix", C, T)
        self.norm_shift(g, x, xk, layer, self.ffn_mix[layer], ffn=True)
        k = ws.act("ffn_k", F, T)
        g.matmul(self.ffn_key[layer], xk, k, act="relu_sq")
        g.matmul(self.ffn_value[layer], k, x, add=True)
