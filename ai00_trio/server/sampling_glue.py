"""Turning a request's sampling fields into a factory of per-request samplers."""
from __future__ import annotations

from typing import Any, Callable

import msgspec

from ..engine.runtime import Sampling
from ..sampling import NucleusSampler, SamplerConfigError, SamplingError, make_sampler, sampler_from_request
from .errors import bad_request
from .schemas import SamplingFields


def logit_bias(request: SamplingFields, n_vocab: int) -> dict[int, float]:
    bias: dict[int, float] = {}
    for key, value in (request.logit_bias or request.bias or {}).items():
        try:
            token = int(key)
        except ValueError:
            raise bad_request(f"logit_bias keys must be token ids, got {key!r}", param="logit_bias") from None
        if not 0 <= token < n_vocab:
            raise bad_request(f"logit_bias token {token} out of range 0..{n_vocab - 1}", param="logit_bias")
        bias[token] = max(-100.0, min(100.0, float(value)))
    return bias


def sampler_factory(request: SamplingFields, n_vocab: int, seed_offset: int, top_n: int) -> Callable[[], Any]:
    """Validates now (so bad values are a 400 before anything runs); builds samplers later."""
    fields = msgspec.structs.asdict(request)
    if request.min_p and (request.sampler is not None or request.sampler_override is not None):
        raise bad_request("with a `sampler` object, min_p goes inside it (Nucleus)", param="min_p")
    if request.half_life is not None:
        if request.penalty_decay is not None:
            raise bad_request("give either half_life or penalty_decay, not both", param="half_life")
        fields["penalty_decay"] = 0.5 ** (1 / request.half_life)
    try:
        config = sampler_from_request(fields)
    except SamplerConfigError as error:
        param = "sampler_override" if request.sampler_override is not None else (
            "sampler" if request.sampler is not None else None)
        raise bad_request(str(error), param=param) from None
    bias = logit_bias(request, n_vocab)
    seed = None if request.seed is None else request.seed + seed_offset
    return lambda: _StepSampler(make_sampler(config, seed, logit_bias=bias, top_logprobs=top_n,
                                             vocab_size=n_vocab))


class _StepSampler:
    """Adapts a sampler to the generation loop: `step(logits) -> (token, logprob, top)`."""

    def __init__(self, sampler) -> None:
        self.sampler = sampler

    def init(self, model_tokens: list[int]) -> None:
        self.sampler.init(model_tokens)

    @property
    def gpu_sampling(self) -> Sampling | None:
        """This sampler's choice as the GPU makes it (sample.wgsl), or None where only the host
        can make it: Typical, Mirostat and top_logprobs need the logits here. The draws use
        the sampler's seed, so a seed still repeats its output."""
        sampler = self.sampler
        if not isinstance(sampler, NucleusSampler) or sampler.top_logprobs:
            return None
        c = sampler.config
        return Sampling(temperature=0.0 if sampler.greedy else c.temperature, top_p=c.top_p, top_k=c.top_k,
                        min_p=c.min_p,
                        presence=c.presence_penalty, frequency=c.frequency_penalty, decay=c.penalty_decay,
                        seed=sampler.seed, biased=bool(sampler.logit_bias))

    def logit_bias(self) -> dict[int, float]:
        return dict(self.sampler.logit_bias)

    def penalties(self) -> dict[int, float]:
        """The repetition penalties so far, {token: penalty}, for the GPU to carry on from."""
        return self.sampler.penalties.as_dict()

    def step(self, logits, mask=None) -> tuple[int, float, list[tuple[int, float]]]:
        try:
            result = self.sampler.step(logits, mask)
        except SamplingError as error:
            raise bad_request(f"sampling failed: {error}") from None
        return result.token, result.logprob, [(t.token, t.logprob) for t in result.top_logprobs]
