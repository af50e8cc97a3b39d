"""What every RWKV version shares: embedding, the residual block structure, LayerNorms, the
v4-v6 channel mix, and the head. A version module supplies its time mix (and its state rows).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...gpu.context import GpuContext
from ...gpu.graph import Act, StepGraph
from ..info import ModelInfo
from ..quant import NF4_INT8_LAYERS
from ..upload import Uploader


def layer_norm_np(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    x = x.astype(np.float64)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


@dataclass(frozen=True)
class Norm:
    w: int  # offset of the weight in the vector table
    b: int


class Workspace:
    """Named activation buffers, each sized for the largest step; reused by every step shape."""

    def __init__(self, ctx: GpuContext, max_tokens: int) -> None:
        self._ctx = ctx
        self._max_tokens = max_tokens
        self._buffers: dict[str, tuple[object, int]] = {}

    def act(self, name: str, width: int, t: int, planes: int = 1) -> Act:
        floats = self._max_tokens * width * planes
        entry = self._buffers.get(name)
        if entry is None:
            entry = (self._ctx.storage(floats * 4), floats)
            self._buffers[name] = entry
        elif entry[1] < t * width * planes:
            raise ValueError(f"workspace buffer {name!r} too small")
        return Act(entry[0], width, t, planes)

    def packed(self, name: str, t: int, *shapes: tuple[int, int]) -> list[Act]:
        """Activations of (width, planes) each, back to back in one buffer: e.g. the outputs of
        one `StepGraph.matmuls` pass."""
        buffer = self.act(name, sum(width * planes for width, planes in shapes), t).buffer
        out, offset = [], 0
        for width, planes in shapes:
            out.append(Act(buffer, width, t, planes, offset))
            offset += width * t * planes
        return out


class Architecture:
    """Weights of one model on the GPU and the recipe that records its forward pass.

    State per slot: for each layer `state_size` floats; the attention and FFN token-shift rows
    sit at `att_row` and `ffn_row` within it.
    """

    att_row = 0

    @staticmethod
    def nf4_int8_layers(n_layer: int) -> int:
        """How many first layers NF4 keeps in int8 (`engine/quant.py`): errors made early grow
        through every later layer."""
        return min(NF4_INT8_LAYERS, n_layer)

    def __init__(self, tensors: dict[str, np.ndarray], info: ModelInfo, up: Uploader) -> None:
        self.info = info
        self.up = up
        C = info.n_embd
        t = tensors
        emb = layer_norm_np(t["emb.weight"], t["blocks.0.ln0.weight"], t["blocks.0.ln0.bias"])
        # LN0 folded into the embedding: x_0 = LN0(emb[token]), kept in f32 (one row read per token):
        # rounded to fp16 it moves a 24-layer RWKV-6's logits by 0.03 (bench/RESULTS.md, run 98's notes)
        self.emb = up.matrix(emb, f32=True)
        self.head = up.matrix(t["head.weight"])
        self.ln_out = self.norm(t, "ln_out")
        self.ln1 = [self.norm(t, f"blocks.{i}.ln1") for i in range(info.n_layer)]
        self.ln2 = [self.norm(t, f"blocks.{i}.ln2") for i in range(info.n_layer)]
        self.ffn_row = self.state_size - C
        self.load(tensors)

    # --- what a version provides --------------------------------------------------------------
    @property
    def state_size(self) -> int:
        raise NotImplementedError

    def initial_layer_state(self) -> np.ndarray:
        return np.zeros(self.state_size, np.float32)

    def load(self, t: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def time_mix(self, g: StepGraph, ws: Workspace, layer: int, x: Act) -> None:
        raise NotImplementedError

    def channel_mix(self, g: StepGraph, ws: Workspace, layer: int, x: Act) -> None:
        raise NotImplementedError

    # --- state layouts: ours and BlinkDL's package's (`State.to_numpy`) ------------------------
    reference_rows = 3  # the package's arrays per layer: att x_prev, wkv (H, N, N), ffn x_prev

    def wkv_reference(self, heads: np.ndarray) -> np.ndarray:
        """One layer's wkv state [H, N, N] from our layout to the package's, and back (the
        versions whose layouts differ transpose it, which is its own inverse)."""
        return heads.copy()

    def wkv_from_time_state(self, heads: np.ndarray) -> np.ndarray:
        """A state-tuning file's `time_state` [H, N value, N key] in the package's layout
        (v5/v6 keep [H, N key, N value])."""
        return heads.transpose(0, 2, 1).copy()

    def layer_to_reference(self, layer: np.ndarray) -> list[np.ndarray]:
        C, H, N = self.info.n_embd, self.info.n_head, self.info.head_size
        return [layer[:C].copy(), self.wkv_reference(layer[C:-C].reshape(H, N, N)), layer[-C:].copy()]

    def layer_from_reference(self, arrays: list[np.ndarray]) -> np.ndarray:
        C, H, N = self.info.n_embd, self.info.n_head, self.info.head_size
        att, wkv, ffn = (np.asarray(a, np.float32) for a in arrays)
        if wkv.size != H * N * N:
            raise ValueError(f"a wkv state has {H * N * N} floats, got {wkv.size}")
        if att.size != C or ffn.size != C:
            raise ValueError(f"a token-shift state has {C} floats")
        return np.concatenate([att.reshape(-1), self.wkv_reference(wkv.reshape(H, N, N)).reshape(-1), ffn.reshape(-1)])

    # --- shared pieces -----------------------------------------------------------------------
    def norm(self, t: dict[str, np.ndarray], name: str) -> Norm:
        return Norm(self.up.vectors.add(t[f"{name}.weight"]), self.up.vectors.add(t[f"{name}.bias"]))

    def slot_stride(self) -> int:
        return self.info.n_layer * self.state_size

    def record(self, g: StepGraph, ws: Workspace, n_out: int) -> None:
        """The whole forward pass for one step; logits for `n_out` gathered rows."""
        C, T = self.info.n_embd, g.t
        x = ws.act("x", C, T)
        g.embed(self.emb, x)
        for layer in range(self.info.n_layer):
            self.time_mix(g, ws, layer, x)      # x += attention(LN1(x))
            self.channel_mix(g, ws, layer, x)   # x += FFN(LN2(x))
        if n_out:
            hidden = ws.act("head_in", C, n_out)
            g.layer_norm_rows(x, hidden, self.ln_out.w, self.ln_out.b)
            logits = Act(g.io.logits, self.info.n_vocab, n_out)
            g.matmul(self.head, hidden, logits)

    def norm_shift(self, g: StepGraph, x: Act, out: Act, layer: int, mix_off: int, ffn: bool = False,
                   normed: Act | None = None) -> None:
        """out = the token-shift mixes of LN1(x) (attention) or LN2(x) (`ffn`)."""
        norm = (self.ln2 if ffn else self.ln1)[layer]
        row = self.ffn_row if ffn else self.att_row
        g.norm_shift(x, out, norm.w, norm.b, mix_off, g.state[layer].at(row), normed)


class ReceptanceChannelMix:
    """v4-v6 FFN:  x += σ(W_r·x_r) ⊙ W_v·relu(W_k·x_k)²."""

    def load_channel_mix(self, t: dict[str, np.ndarray], mixes: list[np.ndarray]) -> None:
        up = self.up
        n = self.info.n_layer
        self.ffn_mix = [up.vectors.add(*mixes[i]) for i in range(n)]
        self.ffn_key = [up.matrix(t[f"blocks.{i}.ffn.key.weight"], layer=i) for i in range(n)]
        self.ffn_value = [up.matrix(t[f"blocks.{i}.ffn.value.weight"], layer=i) for i in range(n)]
        self.ffn_receptance = [up.matrix(t[f"blocks.{i}.ffn.receptance.weight"], layer=i) for i in range(n)]

    def channel_mix(self, g: StepGraph, ws: Workspace, layer: int, x: Act) -> None:
        C, F, T = self.info.n_embd, self.info.n_ffn, g.t
        xkr = ws.act("ffn_mix", C, T, 2)                       # x_k, x_r
        self.norm_shift(g, x, xkr, layer, self.ffn_mix[layer], ffn=True)
        r = ws.act("ffn_r", C, T)
        g.matmul(self.ffn_receptance[layer], xkr.plane(1), r, act="sigmoid")
        k = ws.act("ffn_k", F, T)
        g.matmul(self.ffn_key[layer], xkr.plane(0), k, act="relu_sq")
        g.matmul(self.ffn_value[layer], k, x, gate=r, add=True)
