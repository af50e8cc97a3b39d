"""A state in AI00's layout (web-rwkv's state tensor), as its `states` route returns it."""
from __future__ import annotations

import math

import numpy as np

from ..engine import Model


def ai00_state_tensor(model: Model, flat: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """`flat` (a state as `State.to_host` gives it) as web-rwkv's tensor: the data, x fastest,
    and its shape [x, y, z, w].

    v4: [C, 5·layers, 1, 1], per layer the rows att x_prev, a, b, p, ffn x_prev.
    v5-v7: [C, N + 2, layers, 1], per layer the row att x_prev, then N rows of the wkv state
    (row j holds key j, column head·N + i value i), then the row ffn x_prev."""
    info = model.info
    arrays = model.split_state(flat)
    C, L = info.n_embd, info.n_layer
    if info.version == "v4":
        return np.concatenate(arrays).astype(np.float32), [C, 5 * L, 1, 1]
    H, N = info.n_head, info.head_size
    # the package's wkv layout: v5/v6 [H, N key, N value], v7 [H, N value, N key]
    to_rows = (2, 0, 1) if info.version == "v7" else (1, 0, 2)
    parts = []
    for layer in range(L):
        att, wkv, ffn = arrays[3 * layer:3 * layer + 3]
        parts += [att.reshape(-1), wkv.reshape(H, N, N).transpose(to_rows).reshape(-1), ffn.reshape(-1)]
    return np.concatenate(parts).astype(np.float32), [C, N + 2, L, 1]


def host_state_from_ai00(model: Model, data: list[float], shape: list[int]) -> np.ndarray:
    """The inverse of `ai00_state_tensor`: web-rwkv's state tensor as a host array in
    `State.to_host` layout."""
    info = model.info
    C, L = info.n_embd, info.n_layer
    flat = np.asarray(data, np.float32)
    if info.version == "v4":
        expected, rows = [C, 5 * L, 1, 1], 5
    else:
        expected, rows = [C, info.head_size + 2, L, 1], 3
    if list(shape) != expected or flat.size != math.prod(expected):
        raise ValueError(f"this model's state tensor has shape {expected} ({math.prod(expected)} floats); "
                         f"got shape {list(shape)} with {flat.size} floats")
    arrays: list[np.ndarray] = []
    if info.version == "v4":
        arrays = list(flat.reshape(5 * L, C))
    else:
        H, N = info.n_head, info.head_size
        from_rows = (1, 2, 0) if info.version == "v7" else (1, 0, 2)  # undoes ai00_state_tensor's to_rows
        for layer in flat.reshape(L, N + 2, C):
            wkv = layer[1:N + 1].reshape(N, H, N).transpose(from_rows)
            arrays += [layer[0], wkv, layer[N + 1]]
    return np.concatenate([model.arch.layer_from_reference(arrays[i:i + rows]) for i in range(0, len(arrays), rows)])
