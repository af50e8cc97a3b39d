"""RWKV v4, v5.2, v6 and v7 stated in float64 numpy, and random-weight checkpoints of any shape.

The statement follows BlinkDL's `rwkv` package (ChatRWKV's `rwkv/model.py`) formula by formula, in
sequence form: every matrix product over all tokens at once, the recurrences token by token. It is
slow and exact, the yardstick for our kernels at real widths (tests/test_fidelity.py) and beside the
reference package on the lent GPU (bench/fidelity.py). Checkpoints use BlinkDL's tensor names;
matrices are (out, in), so a projection is `x @ W.T`.
"""
from __future__ import annotations

import numpy as np

LN_EPS = 1e-5
GROUP_NORM_EPS = 64e-5


# --- random checkpoints -----------------------------------------------------------------------
def random_checkpoint(version: str, width: int, layers: int, vocab: int, head_size: int = 64,
                      seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights of real scale for `version` ("v4", "v5", "v6", "v7"; v5 is 5.2), rounded
    to fp16 (as published checkpoints are) but held as float32. FFN widths follow the published
    models: 4C for v4 and v7, 3.5C for v5 and v6."""
    rng = np.random.default_rng(seed)
    C, H, N = width, width // head_size, head_size
    F = 4 * C if version in ("v4", "v7") else int(C * 3.5) // 32 * 32

    def normal(*shape: int, scale: float = 0.02) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float16).astype(np.float32)

    def uniform(*shape: int, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
        return rng.uniform(lo, hi, shape).astype(np.float16).astype(np.float32)

    ones, zeros = np.ones(C, np.float32), np.zeros(C, np.float32)
    d = {"emb.weight": normal(vocab, C, scale=1e-3), "blocks.0.ln0.weight": ones, "blocks.0.ln0.bias": zeros,
         "ln_out.weight": ones, "ln_out.bias": zeros, "head.weight": normal(vocab, C)}
    for i in range(layers):
        b, a, f = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn."
        for n in ("ln1", "ln2"):
            d[b + n + ".weight"], d[b + n + ".bias"] = uniform(C, lo=0.8, hi=1.2), normal(C, scale=0.05)
        for m in ("receptance", "key", "value", "output"):
            d[a + m + ".weight"] = normal(C, C)
        d[f + "key.weight"], d[f + "value.weight"] = normal(F, C), normal(C, F)
        if version != "v4":
            d[a + "ln_x.weight"], d[a + "ln_x.bias"] = uniform(C, lo=0.8, hi=1.2), normal(C, scale=0.05)
        if version == "v4":
            d[a + "time_decay"] = uniform(C, lo=-6, hi=2)
            d[a + "time_first"] = normal(C, scale=0.5)
            for m in "kvr":
                d[a + "time_mix_" + m] = uniform(1, 1, C)
        elif version == "v5":
            d[a + "gate.weight"] = normal(C, C)
            d[a + "time_decay"] = uniform(H, N, lo=-6, hi=1)
            d[a + "time_faaaa"] = normal(H, N, scale=0.1)
            for m in "kvrg":
                d[a + "time_mix_" + m] = uniform(1, 1, C)
        elif version == "v6":
            d[a + "gate.weight"] = normal(C, C)
            for m in "xwkvrg":
                d[a + "time_maa_" + m] = uniform(1, 1, C)
            d[a + "time_maa_w1"], d[a + "time_maa_w2"] = normal(C, 5 * 32), normal(5, 32, C)
            d[a + "time_decay"] = uniform(1, 1, C, lo=-6, hi=-1)
            d[a + "time_decay_w1"], d[a + "time_decay_w2"] = normal(C, 64), normal(64, C)
            d[a + "time_faaaa"] = normal(H, N, scale=0.1)
        elif version == "v7":
            for m in "rwkvag":
                d[a + "x_" + m] = uniform(1, 1, C)
            d[a + "w0"], d[a + "w1"], d[a + "w2"] = uniform(1, 1, C, lo=-3, hi=0), normal(C, 64), normal(64, C)
            d[a + "a0"], d[a + "a1"], d[a + "a2"] = uniform(1, 1, C, lo=-1, hi=1), normal(C, 64), normal(64, C)
            if i > 0:
                d[a + "v0"], d[a + "v1"], d[a + "v2"] = uniform(1, 1, C), normal(C, 32), normal(32, C)
            d[a + "g1"], d[a + "g2"] = normal(C, 128), normal(128, C)
            d[a + "k_k"], d[a + "k_a"] = uniform(1, 1, C), uniform(1, 1, C)
            d[a + "r_k"] = normal(H, N, scale=0.1)
        else:
            raise ValueError(f"unknown version {version!r}")
        if version in ("v4", "v5"):
            d[f + "time_mix_k"], d[f + "time_mix_r"] = uniform(1, 1, C), uniform(1, 1, C)
        elif version == "v6":
            d[f + "time_maa_k"], d[f + "time_maa_r"] = uniform(1, 1, C), uniform(1, 1, C)
        else:
            d[f + "x_k"] = uniform(1, 1, C)
        if version != "v7":
            d[f + "receptance.weight"] = normal(C, C)
    return d


# --- the math ---------------------------------------------------------------------------------
def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = LN_EPS) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps) * w + b


def group_norm(y: np.ndarray, heads: int, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """GroupNorm over each head of y [T, C]."""
    g = y.reshape(len(y), heads, -1)
    mean = g.mean(-1, keepdims=True)
    g = (g - mean) / np.sqrt(((g - mean) ** 2).mean(-1, keepdims=True) + GROUP_NORM_EPS)
    return g.reshape(y.shape) * w + b


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def shifted(xx: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """The previous token's x̂ for every token: the saved one, then the sequence's own."""
    return np.concatenate([prev[None], xx[:-1]])


class Reference64:
    """One sequence through a checkpoint in float64; `forward` keeps the state between calls.

    `f16_embedding` rounds the LN0-normalized embedding to fp16, as BlinkDL's package does for
    v4-v6 when the checkpoint is fp16 (its loader layer-norms the fp16 tensor in fp16 and keeps
    the result, whatever the strategy): the one place its fp32 differs from this statement."""

    def __init__(self, tensors: dict[str, np.ndarray], version: str, f16_embedding: bool = False) -> None:
        self.version = version
        self.f16_embedding = f16_embedding
        self.w = {k: np.asarray(v, np.float64) for k, v in tensors.items()}
        for k, v in self.w.items():
            if v.ndim == 3 and v.shape[:2] == (1, 1):   # mixes and decays stored as (1, 1, C)
                self.w[k] = v.reshape(-1)
        w = self.w
        self.layers = 1 + max(int(k.split(".")[1]) for k in w if k.startswith("blocks."))
        self.C = w["emb.weight"].shape[1]
        if version == "v4":
            self.H = 1
        elif version == "v7":
            self.H = w["blocks.0.att.r_k"].shape[0]
        else:
            self.H = w["blocks.0.att.time_faaaa"].shape[0]
        self.N = self.C // self.H
        C, H, N = self.C, self.H, self.N
        self.att_prev = [np.zeros(C) for _ in range(self.layers)]
        self.ffn_prev = [np.zeros(C) for _ in range(self.layers)]
        if version == "v4":  # (a, b, p): numerator, denominator, exponent of the running sums
            self.wkv = [(np.zeros(C), np.zeros(C), np.full(C, -1e38)) for _ in range(self.layers)]
        else:
            self.wkv = [np.zeros((H, N, N)) for _ in range(self.layers)]

    def forward(self, tokens: list[int]) -> np.ndarray:
        """Logits [T, vocab] of every token."""
        w = self.w
        x = layer_norm(w["emb.weight"][tokens], w["blocks.0.ln0.weight"], w["blocks.0.ln0.bias"])
        if self.f16_embedding:
            x = x.astype(np.float16).astype(np.float64)
        v_first = None
        for i in range(self.layers):
            b = f"blocks.{i}."
            xx = layer_norm(x, w[b + "ln1.weight"], w[b + "ln1.bias"])
            prev = shifted(xx, self.att_prev[i])
            self.att_prev[i] = xx[-1]
            if self.version == "v7":
                out, v_first = self.time_mix_v7(i, xx, prev, v_first)
            else:
                out = getattr(self, f"time_mix_{self.version}")(i, xx, prev)
            x = x + out
            xx = layer_norm(x, w[b + "ln2.weight"], w[b + "ln2.bias"])
            prev = shifted(xx, self.ffn_prev[i])
            self.ffn_prev[i] = xx[-1]
            x = x + self.channel_mix(i, xx, prev)
        return layer_norm(x, w["ln_out.weight"], w["ln_out.bias"]) @ w["head.weight"].T

    def mat(self, name: str, x: np.ndarray) -> np.ndarray:
        return x @ self.w[name].T

    def channel_mix(self, i: int, xx: np.ndarray, prev: np.ndarray) -> np.ndarray:
        w, f = self.w, f"blocks.{i}.ffn."
        if self.version == "v7":                       # x + (x_prev - x) ⊙ μ
            k = xx + (prev - xx) * w[f + "x_k"]
            return self.mat(f + "value.weight", np.maximum(self.mat(f + "key.weight", k), 0) ** 2)
        if self.version == "v6":
            k, r = (xx + (prev - xx) * w[f + f"time_maa_{m}"] for m in "kr")
        else:                                          # v4/v5: x ⊙ μ + x_prev ⊙ (1 - μ)
            k, r = (xx * w[f + f"time_mix_{m}"] + prev * (1 - w[f + f"time_mix_{m}"]) for m in "kr")
        k = np.maximum(self.mat(f + "key.weight", k), 0) ** 2
        return sigmoid(self.mat(f + "receptance.weight", r)) * self.mat(f + "value.weight", k)

    def time_mix_v4(self, i: int, xx: np.ndarray, prev: np.ndarray) -> np.ndarray:
        w, a = self.w, f"blocks.{i}.att."
        k, v, r = (xx * w[a + f"time_mix_{m}"] + prev * (1 - w[a + f"time_mix_{m}"]) for m in "kvr")
        k, v, r = self.mat(a + "key.weight", k), self.mat(a + "value.weight", v), self.mat(a + "receptance.weight", r)
        decay, first = -np.exp(w[a + "time_decay"]), w[a + "time_first"]
        num, den, p = self.wkv[i]
        y = np.empty_like(v)
        for t in range(len(v)):
            ww = first + k[t]
            q = np.maximum(p, ww)
            e1, e2 = np.exp(p - q), np.exp(ww - q)
            y[t] = (e1 * num + e2 * v[t]) / (e1 * den + e2)
            ww = decay + p
            q = np.maximum(ww, k[t])
            e1, e2 = np.exp(ww - q), np.exp(k[t] - q)
            num, den, p = e1 * num + e2 * v[t], e1 * den + e2, q
        self.wkv[i] = (num, den, p)
        return self.mat(a + "output.weight", sigmoid(r) * y)

    def heads_wkv(self, i: int, r: np.ndarray, k: np.ndarray, v: np.ndarray, decay: np.ndarray,
                  first: np.ndarray) -> np.ndarray:
        """y_j = Σ_i r_i (u_i k_i v_j + S_ij), S ← diag(w) S + k vᵀ per head; decay [T, C] or [C]."""
        H, N, T = self.H, self.N, len(r)
        decay = np.broadcast_to(decay, (T, self.C)).reshape(T, H, N, 1)
        u = first.reshape(H, N, 1)
        S = self.wkv[i]
        y = np.empty((T, H, N))
        for t in range(T):
            kv = k[t].reshape(H, N, 1) * v[t].reshape(H, 1, N)
            y[t] = np.einsum("hi,hij->hj", r[t].reshape(H, N), u * kv + S)
            S = kv + decay[t] * S
        self.wkv[i] = S
        return y.reshape(T, self.C)

    def time_mix_v5(self, i: int, xx: np.ndarray, prev: np.ndarray) -> np.ndarray:
        w, a = self.w, f"blocks.{i}.att."
        k, v, r, g = (xx * w[a + f"time_mix_{m}"] + prev * (1 - w[a + f"time_mix_{m}"]) for m in "kvrg")
        k, v, r = self.mat(a + "key.weight", k), self.mat(a + "value.weight", v), self.mat(a + "receptance.weight", r)
        g = self.mat(a + "gate.weight", g)
        y = self.heads_wkv(i, r, k, v, np.exp(-np.exp(w[a + "time_decay"].reshape(-1))), w[a + "time_faaaa"])
        y = group_norm(y, self.H, w[a + "ln_x.weight"], w[a + "ln_x.bias"])
        return self.mat(a + "output.weight", y * g * sigmoid(g))

    def time_mix_v6(self, i: int, xx: np.ndarray, prev: np.ndarray) -> np.ndarray:
        w, a = self.w, f"blocks.{i}.att."
        sx = prev - xx
        h = np.tanh((xx + sx * w[a + "time_maa_x"]) @ w[a + "time_maa_w1"]).reshape(len(xx), 5, -1)
        mw, mk, mv, mr, mg = np.einsum("tzd,zdc->ztc", h, w[a + "time_maa_w2"])
        xw, xk, xv, xr, xg = (xx + sx * (w[a + f"time_maa_{m}"] + d)
                              for m, d in zip("wkvrg", (mw, mk, mv, mr, mg)))
        r, k, v = self.mat(a + "receptance.weight", xr), self.mat(a + "key.weight", xk), self.mat(a + "value.weight", xv)
        g = self.mat(a + "gate.weight", xg)
        decay = w[a + "time_decay"] + np.tanh(xw @ w[a + "time_decay_w1"]) @ w[a + "time_decay_w2"]
        y = self.heads_wkv(i, r, k, v, np.exp(-np.exp(decay)), w[a + "time_faaaa"])
        y = group_norm(y, self.H, w[a + "ln_x.weight"], w[a + "ln_x.bias"])
        return self.mat(a + "output.weight", y * g * sigmoid(g))

    def time_mix_v7(self, i: int, xx: np.ndarray, prev: np.ndarray,
                    v_first: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        w, a, H, N, T = self.w, f"blocks.{i}.att.", self.H, self.N, len(xx)
        sx = prev - xx
        xr, xw, xk, xv, xa, xg = (xx + sx * w[a + f"x_{m}"] for m in "rwkvag")
        r, k, v = self.mat(a + "receptance.weight", xr), self.mat(a + "key.weight", xk), self.mat(a + "value.weight", xv)
        d = np.tanh(xw @ w[a + "w1"]) @ w[a + "w2"]
        alpha = sigmoid(w[a + "a0"] + (xa @ w[a + "a1"]) @ w[a + "a2"])
        g = sigmoid(xg @ w[a + "g1"]) @ w[a + "g2"]
        kk = (k * w[a + "k_k"]).reshape(T, H, N)
        kk = (kk / np.maximum(np.linalg.norm(kk, axis=-1, keepdims=True), 1e-12)).reshape(T, -1)
        k = k * (1 + (alpha - 1) * w[a + "k_a"])
        if v_first is None:
            v_first = v
        else:
            v = v + (v_first - v) * sigmoid(w[a + "v0"] + (xv @ w[a + "v1"]) @ w[a + "v2"])
        decay = np.exp(-np.exp(-0.5) * sigmoid(w[a + "w0"] + d))
        S = self.wkv[i]                                     # [H, N value, N key]
        y = np.empty((T, H, N))
        for t in range(T):
            ab = (-kk[t]).reshape(H, N, 1) * (kk[t] * alpha[t]).reshape(H, 1, N)
            S = S * decay[t].reshape(H, 1, N) + S @ ab + v[t].reshape(H, N, 1) * k[t].reshape(H, 1, N)
            y[t] = (S @ r[t].reshape(H, N, 1))[..., 0]
        self.wkv[i] = S
        y = group_norm(y.reshape(T, -1), H, w[a + "ln_x.weight"], w[a + "ln_x.bias"])
        bonus = (r * k * w[a + "r_k"].reshape(-1)).reshape(T, H, N).sum(-1, keepdims=True) * v.reshape(T, H, N)
        return self.mat(a + "output.weight", (y + bonus.reshape(T, -1)) * g), v_first
