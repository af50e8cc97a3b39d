"""RWKV-4 "Dove" (Peng et al. 2023): token shift, WKV with per-channel decay, receptance gate.

    x_{k,v,r} = lerp(x̂_prev, x̂, μ_{k,v,r})
    k, v, r = W_k x_k, W_v x_v, W_r x_r
    x += W_o (σ(r) ⊙ wkv(k, v; w = -exp(time_decay), u = time_first))
    x += channel mix
State per layer: [att shift, a, b, p, ffn shift] (C each); p starts at -1e30.
"""
from __future__ import annotations

import numpy as np

from ...gpu.graph import Act, StepGraph
from ..quant import NF4_INT8_LAYERS
from .common import Architecture, ReceptanceChannelMix, Workspace


def keep_previous(mu: np.ndarray) -> np.ndarray:
    """v4/v5 mix x̂·μ + x̂_prev·(1-μ); the kernel computes x̂ + (x̂_prev - x̂)·μ', so μ' = 1-μ."""
    return 1.0 - mu.astype(np.float64).reshape(-1)


class V4(ReceptanceChannelMix, Architecture):
    @staticmethod
    def nf4_int8_layers(n_layer: int) -> int:
        """A third of the layers: v4's NF4 error is spread over every layer (one layer's share
        falls only as ~1/(i+1)^0.8), where v5-v7's is mostly in the first three. On the host
        (C 1024, 24 layers) the first 8 in int8 halve the KL of the first 3, for +0.9 bits a
        weight (bench/RESULTS.md, "v4's NF4 mix")."""
        return max(min(NF4_INT8_LAYERS, n_layer), -(-n_layer // 3))

    @property
    def state_size(self) -> int:
        return 5 * self.info.n_embd

    def initial_layer_state(self) -> np.ndarray:
        state = np.zeros((5, self.info.n_embd), np.float32)
        state[3] = -1e30
        return state.reshape(-1)

    reference_rows = 5  # att x_prev, a, b, p, ffn x_prev: our layout too

    def layer_to_reference(self, layer: np.ndarray) -> list[np.ndarray]:
        return [row.copy() for row in layer.reshape(5, -1)]

    def layer_from_reference(self, arrays: list[np.ndarray]) -> np.ndarray:
        rows = [np.asarray(a, np.float32).reshape(-1) for a in arrays]
        if any(row.size != self.info.n_embd for row in rows):
            raise ValueError(f"each v4 state array has {self.info.n_embd} floats")
        return np.concatenate(rows)

    def wkv_from_time_state(self, heads: np.ndarray) -> np.ndarray:
        raise ValueError("RWKV-4 has no state-tuning files")

    def load(self, t: dict[str, np.ndarray]) -> None:
        up, n = self.up, self.info.n_layer
        self.att_mix, self.kvr, self.decay, self.first, self.output = [], [], [], [], []
        for i in range(n):
            a = f"blocks.{i}.att."
            self.att_mix.append(up.vectors.add(*(keep_previous(t[a + f"time_mix_{m}"]) for m in "kvr")))
            self.kvr.append(up.matrix(*(t[a + f"{m}.weight"] for m in ("key", "value", "receptance")), layer=i))
            self.decay.append(up.vectors.add(-np.exp(t[a + "time_decay"].astype(np.float64))))
            self.first.append(up.vectors.add(t[a + "time_first"]))
            self.output.append(up.matrix(t[a + "output.weight"], layer=i))
        f = "blocks.{}.ffn."
        self.load_channel_mix(t, [[keep_previous(t[f.format(i) + f"time_mix_{m}"]) for m in "kr"] for i in range(n)])

    def time_mix(self, g: StepGraph, ws: Workspace, layer: int, x: Act) -> None:
        C, T = self.info.n_embd, g.t
        mixed = ws.act("att_mix", C, T, 3)                       # x_k, x_v, x_r
        self.norm_shift(g, x, mixed, layer, self.att_mix[layer])
        kvr = ws.act("att_kvr", C, T, 3)
        g.matmul(self.kvr[layer], mixed, kvr)                    # k, v, r
        y = ws.act("att_y", C, T)
        g.wkv4(kvr, y, g.state[layer], self.decay[layer], self.first[layer])
        g.matmul(self.output[layer], y, x, add=True)
