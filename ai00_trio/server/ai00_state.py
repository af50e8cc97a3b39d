"""A state in AI00's layout (web-rwkv's state tensor), as its `states` route returns it."""
from __future__ import annotations

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
