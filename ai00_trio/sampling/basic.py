"""The CLI's minimal sampler (moved here from the old ``ai00_trio/sampling.py``)."""
from __future__ import annotations

import numpy as np


def sample_logits(logits: np.ndarray, rng: np.random.Generator, temperature: float = 1.0,
                  top_p: float = 1.0) -> int:
    """Nucleus sampling; greedy when temperature is 0.

    Simpler than :class:`~ai00_trio.sampling.NucleusSampler`: the temperature divides the
    logits before the softmax, and the nucleus stops at the token that reaches ``top_p``.
    """
    if temperature <= 0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    order = np.argsort(-probs)
    cumulative = np.cumsum(probs[order])
    keep = order[: int(np.searchsorted(cumulative, top_p)) + 1]
    kept = probs[keep] / probs[keep].sum()
    return int(rng.choice(keep, p=kept))
