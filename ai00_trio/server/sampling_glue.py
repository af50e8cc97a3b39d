"""Turning a request's sampling fields into a per-request sampler factory."""
from __future__ import annotations

from typing import Any, Callable

from ..sampling import sample_logits
from .errors import bad_request
from .schemas import SamplingFields

import numpy as np


class _SimpleSampler:
    """Placeholder: nucleus sampling with logprobs (replaced by ai00_trio.sampling's samplers)."""

    def __init__(self, temperature: float, top_p: float, seed: int | None, top_n: int,
                 bias: dict[int, float]) -> None:
        self.temperature, self.top_p, self.top_n, self.bias = temperature, top_p, top_n, bias
        self.rng = np.random.default_rng(seed)

    def step(self, logits: np.ndarray):
        logits = np.array(logits, np.float64)
        for token, value in self.bias.items():
            logits[token] += value
        token = sample_logits(logits, self.rng, self.temperature, self.top_p)
        log_probs = logits - logits.max()
        log_probs -= np.log(np.exp(log_probs).sum())
        top = [(int(t), float(log_probs[t])) for t in np.argsort(-log_probs)[: self.top_n]]
        return token, float(log_probs[token]), top


def sampler_factory(request: SamplingFields, n_vocab: int, seed_offset: int, top_n: int) -> Callable[[], Any]:
    bias: dict[int, float] = {}
    for key, value in (request.logit_bias or request.bias or {}).items():
        try:
            token = int(key)
        except ValueError:
            raise bad_request(f"logit_bias keys must be token ids, got {key!r}", param="logit_bias") from None
        if not 0 <= token < n_vocab:
            raise bad_request(f"logit_bias token {token} out of range 0..{n_vocab - 1}", param="logit_bias")
        bias[token] = max(-100.0, min(100.0, float(value)))
    temperature = 1.0 if request.temperature is None else request.temperature
    top_p = 1.0 if request.top_p is None else request.top_p
    if not 0 <= temperature <= 5:
        raise bad_request("temperature must be between 0 and 5", param="temperature")
    if not 0 <= top_p <= 1:
        raise bad_request("top_p must be between 0 and 1", param="top_p")
    seed = None if request.seed is None else request.seed + seed_offset
    return lambda: _SimpleSampler(temperature, top_p, seed, top_n, bias)
