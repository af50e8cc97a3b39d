"""Token sampling with AI00's semantics (Nucleus, Typical, Mirostat), numpy on the host.

Typical use by the server::

    config = sampler_from_request(body)                 # SamplerConfigError -> HTTP 400
    sampler = make_sampler(config, seed=body.get("seed"),
                           logit_bias=body.get("logit_bias") or body.get("bias"),
                           top_logprobs=n, model_tokens=assistant_tokens)
    result = sampler.step(logits_V, mask)               # a SampleResult (the server: sampling_glue.py)

See ``samplers`` for the pipeline and the choice of log-probabilities.
"""
from .basic import sample_logits
from .config import (DEFAULT_PENALTY_DECAY, OPENAI_FIELDS, SAMPLER_TYPES, Mirostat, Nucleus,
                     SamplerConfig, SamplerConfigError, Typical, decode_sampler,
                     sampler_from_openai, sampler_from_request)
from .kernels import (draw, mirostat_candidates, nucleus_candidates,
                      softmax_rows, top_n_logprobs, typical_candidates)
from .samplers import (MirostatSampler, NucleusSampler, PenaltyState, SampleResult, Sampler,
                       SamplerState, SamplingError, TokenLogprob, TypicalSampler, make_sampler,
                       normalize_logit_bias, prepare_logits, sample_batch)

__all__ = [
    "DEFAULT_PENALTY_DECAY", "OPENAI_FIELDS", "SAMPLER_TYPES", "Mirostat", "MirostatSampler",
    "Nucleus", "NucleusSampler", "PenaltyState", "SampleResult", "Sampler", "SamplerConfig",
    "SamplerConfigError", "SamplerState", "SamplingError", "TokenLogprob", "Typical",
    "TypicalSampler", "decode_sampler", "draw", "make_sampler",
    "mirostat_candidates", "normalize_logit_bias", "nucleus_candidates", "prepare_logits",
    "sample_batch", "sample_logits", "sampler_from_openai", "sampler_from_request",
    "softmax_rows", "top_n_logprobs", "typical_candidates",
]
