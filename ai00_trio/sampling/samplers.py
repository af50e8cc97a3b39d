"""Per-request sampler state and the logits -> token pipeline.

Pipeline for one step (AI00's order), per row of a ``[B, V]`` batch:

1. ``sampler.transform(row)``: repetition penalties (``logits[t] -= penalty[t]``);
2. grammar mask: disallowed tokens -> ``-inf``;
3. ``+ logit_bias``;
4. softmax of all rows at once (``kernels.softmax_rows``), also giving the log-softmax;
5. ``sampler.sample(probs_row)``: pick a token with the sampler's own RNG and update its
   state (penalty map or Mirostat's ``max_surprise``).

Steps 1-4 work on logits and batch naturally (a GPU port would do them there: the
penalties are a sparse subtract); step 5 is the CPU seam (:class:`Sampler`).

Log-probabilities returned to the client (OpenAI ``logprobs``/``top_logprobs``) are the
log-softmax after steps 1-3: penalties, mask and bias applied, but *before* temperature
and before top-k/top-p/typical/mirostat truncation. So they describe the model's
adjusted distribution, not the truncated one the token was drawn from (which would give
0.0 for every greedy token), and masked tokens have ``-inf`` and never appear in the top list.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, Union, runtime_checkable

import msgspec
import numpy as np

from . import kernels
from .config import Mirostat, Nucleus, SamplerConfig, Typical, decode_sampler

__all__ = [
    "MirostatSampler", "NucleusSampler", "PenaltyState", "SampleResult", "Sampler",
    "SamplerState", "SamplingError", "TokenLogprob", "TypicalSampler", "make_sampler",
    "normalize_logit_bias", "prepare_logits", "sample_batch",
]


class SamplingError(ValueError):
    """No token can be sampled from a row (every token masked, or NaN/inf logits)."""


class TokenLogprob(msgspec.Struct, frozen=True):
    token: int
    logprob: float


class SampleResult(msgspec.Struct, frozen=True):
    """One sampled token, its log-probability, and the ``top_logprobs`` likeliest tokens."""

    token: int
    logprob: float
    top_logprobs: list[TokenLogprob] = []


@runtime_checkable
class Sampler(Protocol):
    """The seam between the (batchable) logit stages and the per-row CPU choice."""

    def init(self, model_tokens: Sequence[int]) -> None:
        """Seed the state from tokens the model produced earlier (chat ``model_text``)."""

    def transform(self, logits: np.ndarray) -> np.ndarray:
        """Adjust one row of logits (a private float64 copy: may work in place); return it."""

    def sample(self, probs: np.ndarray) -> int:
        """Pick a token from one row of probabilities and update the state."""


class PenaltyState:
    """AI00's repetition penalty map, stored as parallel arrays so decay is one multiply.

    - ``init(tokens)``: walking backwards from the latest token (index i = 0, 1, ...),
      ``penalty[t] = (penalty[t] if present else presence) + frequency * decay**i``;
    - ``update(t)`` after a token is sampled: every penalty *= decay, then
      ``penalty[t] += frequency`` if present, else ``penalty[t] = presence``.
    """

    __slots__ = ("presence", "frequency", "decay", "active", "_slot", "_tokens", "_values", "_n")

    def __init__(self, presence: float, frequency: float, decay: float) -> None:
        self.presence = float(presence)
        self.frequency = float(frequency)
        self.decay = float(decay)
        # With both penalties 0 every value stays 0: skip the bookkeeping entirely.
        self.active = self.presence != 0.0 or self.frequency != 0.0
        self._slot: dict[int, int] = {}
        self._tokens = np.zeros(64, dtype=np.int64)
        self._values = np.zeros(64, dtype=np.float64)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def _new_slot(self, token: int, value: float) -> None:
        if self._n == self._tokens.size:
            self._tokens = np.concatenate([self._tokens, np.zeros_like(self._tokens)])
            self._values = np.concatenate([self._values, np.zeros_like(self._values)])
        self._slot[token] = self._n
        self._tokens[self._n] = token
        self._values[self._n] = value
        self._n += 1

    def init(self, model_tokens: Sequence[int]) -> None:
        if not self.active or len(model_tokens) == 0:
            return
        recent_first = np.asarray(model_tokens, dtype=np.int64)[::-1]
        weights = self.frequency * self.decay ** np.arange(recent_first.size, dtype=np.float64)
        tokens, inverse = np.unique(recent_first, return_inverse=True)
        sums = np.bincount(inverse, weights=weights)
        for token, add in zip(tokens.tolist(), sums.tolist()):
            slot = self._slot.get(token)
            if slot is None:
                self._new_slot(token, self.presence + add)
            else:
                self._values[slot] += add

    def update(self, token: int) -> None:
        if not self.active:
            return
        self._values[: self._n] *= self.decay
        slot = self._slot.get(int(token))
        if slot is None:
            self._new_slot(int(token), self.presence)
        else:
            self._values[slot] += self.frequency

    def apply(self, logits: np.ndarray) -> np.ndarray:
        if self._n:
            logits[self._tokens[: self._n]] -= self._values[: self._n]  # tokens are unique
        return logits

    def as_dict(self) -> dict[int, float]:
        return dict(zip(self._tokens[: self._n].tolist(), self._values[: self._n].tolist()))


def normalize_logit_bias(bias: Mapping[int | str, float] | None,
                         vocab_size: int | None = None) -> dict[int, float]:
    """``{token id: bias}`` with int keys (JSON object keys arrive as strings).

    Raises ValueError for a key that is not a non-negative integer (or >= vocab_size when
    given) or a value that is not a finite number.
    """
    out: dict[int, float] = {}
    for key, value in (bias or {}).items():
        try:
            token = int(key) if not isinstance(key, bool) else None
        except (TypeError, ValueError):
            token = None
        if token is None or token < 0 or (isinstance(key, float) and key != token):
            raise ValueError(f"logit_bias: key {key!r} is not a token id")
        if vocab_size is not None and token >= vocab_size:
            raise ValueError(f"logit_bias: token id {token} is out of range (vocab size {vocab_size})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise ValueError(f"logit_bias[{key!r}]: {value!r} is not a finite number")
        out[token] = float(value)
    return out


class SamplerState:
    """What every per-request sampler carries besides its algorithm."""

    config: SamplerConfig

    def __init__(self, config: SamplerConfig, seed: int | None = None, *,
                 logit_bias: Mapping[int | str, float] | None = None,
                 top_logprobs: int = 0, vocab_size: int | None = None) -> None:
        self.config = config
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1, np.uint64)[0])
        #: The seed actually used (64-bit; negative seeds are taken modulo 2**64).
        self.seed = int(seed) % (1 << 64)
        self.rng = np.random.default_rng(self.seed)
        self.logit_bias = normalize_logit_bias(logit_bias, vocab_size)
        self._bias_ids = np.fromiter(self.logit_bias.keys(), dtype=np.int64, count=len(self.logit_bias))
        self._bias_values = np.fromiter(self.logit_bias.values(), dtype=np.float64,
                                        count=len(self.logit_bias))
        if isinstance(top_logprobs, bool) or int(top_logprobs) < 0:
            raise ValueError(f"top_logprobs must be an integer >= 0, got {top_logprobs!r}")
        self.top_logprobs = int(top_logprobs)

    # Sampler protocol defaults
    def init(self, model_tokens: Sequence[int]) -> None:
        pass

    def transform(self, logits: np.ndarray) -> np.ndarray:
        return logits

    def sample(self, probs: np.ndarray) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def apply_bias(self, logits: np.ndarray) -> np.ndarray:
        if self._bias_ids.size:
            if int(self._bias_ids.max()) >= logits.shape[-1]:
                bad = int(self._bias_ids.max())
                raise SamplingError(f"logit_bias: token id {bad} is out of range "
                                    f"(vocab size {logits.shape[-1]})")
            logits[self._bias_ids] += self._bias_values
        return logits

    def _pick(self, ids: np.ndarray, weights: np.ndarray) -> int:
        if ids.size == 1:
            return int(ids[0])
        return int(ids[kernels.draw(weights, float(self.rng.random()))])

    def step(self, logits: np.ndarray, mask: np.ndarray | None = None) -> SampleResult:
        """One token from one row of logits ``[V]`` (see :func:`sample_batch`)."""
        row = np.asarray(logits)
        if row.ndim != 1:
            raise ValueError(f"step() takes one row of logits [V], got shape {row.shape}")
        return sample_batch([self], row[None, :], None if mask is None else [mask])[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r}, seed={self.seed})"


class _PenalizedSampler(SamplerState):
    def __init__(self, config: Nucleus | Typical, seed: int | None = None, **kwargs) -> None:
        super().__init__(config, seed, **kwargs)
        self.penalties = PenaltyState(config.presence_penalty, config.frequency_penalty,
                                      config.penalty_decay)

    def init(self, model_tokens: Sequence[int]) -> None:
        self.penalties.init(model_tokens)

    def transform(self, logits: np.ndarray) -> np.ndarray:
        return self.penalties.apply(logits)

    def candidates(self, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError  # pragma: no cover

    def choose(self, probs: np.ndarray) -> int:
        """Pick a token without touching the penalty map (only the RNG advances)."""
        return self._pick(*self.candidates(probs))

    def update(self, token: int) -> None:
        """Record a token as generated (for a token chosen or forced elsewhere)."""
        self.penalties.update(token)

    def sample(self, probs: np.ndarray) -> int:
        token = self.choose(probs)
        self.update(token)
        return token


class NucleusSampler(_PenalizedSampler):
    config: Nucleus

    @property
    def greedy(self) -> bool:
        """Temperature 0 or top_p 0: always the likeliest token (the lowest id on ties)."""
        return self.config.temperature <= 0 or self.config.top_p <= 0

    def candidates(self, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        if self.greedy:
            return np.array([int(np.argmax(probs))]), np.ones(1)
        return kernels.nucleus_candidates(probs, c.top_p, c.top_k, c.temperature, c.min_p)


class TypicalSampler(_PenalizedSampler):
    config: Typical

    def candidates(self, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        return kernels.typical_candidates(probs, c.tau, c.top_k, c.temperature)


class MirostatSampler(SamplerState):
    """No penalties, no temperature, no top_k. ``max_surprise`` starts at 2*tau."""

    config: Mirostat

    def __init__(self, config: Mirostat, seed: int | None = None, **kwargs) -> None:
        super().__init__(config, seed, **kwargs)
        self.max_surprise = 2.0 * config.tau
        #: Surprise (bits) of the last sampled token, within the truncated distribution.
        self.last_surprise: float | None = None

    def candidates(self, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return kernels.mirostat_candidates(probs, self.max_surprise)

    def sample(self, probs: np.ndarray) -> int:
        ids, weights = self.candidates(probs)
        index = 0 if ids.size == 1 else kernels.draw(weights, float(self.rng.random()))
        # surprise relative to the truncated, renormalised distribution (as AI00)
        surprise = float(np.log2(weights.sum()) - np.log2(weights[index]))
        c = self.config
        self.max_surprise = min(self.max_surprise - c.rate * (surprise - c.tau), 4.0 * c.tau)
        self.last_surprise = surprise
        return int(ids[index])


AnySampler = Union[NucleusSampler, TypicalSampler, MirostatSampler]
_CLASSES = {Nucleus: NucleusSampler, Typical: TypicalSampler, Mirostat: MirostatSampler}


def make_sampler(config: SamplerConfig | Mapping | None = None, seed: int | None = None, *,
                 logit_bias: Mapping[int | str, float] | None = None, top_logprobs: int = 0,
                 model_tokens: Sequence[int] | None = None,
                 vocab_size: int | None = None) -> AnySampler:
    """A fresh per-request sampler.

    ``config``: a config Struct, a dict (decoded with ``decode_sampler``) or None (AI00's
    default Nucleus). ``seed``: same seed + same logits sequence -> same tokens; None draws
    fresh entropy (the seed used is kept in ``.seed``). ``model_tokens``: earlier assistant
    output to seed the penalties (``init``). ``vocab_size`` lets ``logit_bias`` be checked now.
    """
    if config is None:
        config = Nucleus()
    elif not isinstance(config, (Nucleus, Typical, Mirostat)):
        config = decode_sampler(config)
    sampler = _CLASSES[type(config)](config, seed, logit_bias=logit_bias,
                                     top_logprobs=top_logprobs, vocab_size=vocab_size)
    if model_tokens:
        sampler.init(model_tokens)
    return sampler


def _mask_rows(masks, batch: int, vocab: int) -> list[np.ndarray | None]:
    if masks is None:
        return [None] * batch
    if isinstance(masks, np.ndarray) and masks.ndim == 2:
        if masks.shape != (batch, vocab):
            raise ValueError(f"masks shape {masks.shape} does not match logits ({batch}, {vocab})")
        return [m for m in masks.astype(bool, copy=False)]
    masks = list(masks)
    if len(masks) != batch:
        raise ValueError(f"{len(masks)} masks for {batch} rows")
    out: list[np.ndarray | None] = []
    for m in masks:
        if m is None:
            out.append(None)
            continue
        m = np.asarray(m, dtype=bool)
        if m.shape != (vocab,):
            raise ValueError(f"mask shape {m.shape} does not match vocab size {vocab}")
        out.append(m)
    return out


def prepare_logits(samplers: Sequence[SamplerState], logits: np.ndarray,
                   masks=None) -> tuple[np.ndarray, list[str | None]]:
    """Steps 1-3 on a float64 copy of ``logits [B, V]``: penalties, mask (-inf), bias.

    Returns the final logits and, per row, None or why the row cannot be sampled.
    """
    x = np.array(logits, dtype=np.float64, copy=True)
    if x.ndim != 2:
        raise ValueError(f"logits must be [B, V], got shape {x.shape}")
    batch, vocab = x.shape
    if len(samplers) != batch:
        raise ValueError(f"{len(samplers)} samplers for {batch} rows of logits")
    rows = _mask_rows(masks, batch, vocab)
    for i, sampler in enumerate(samplers):
        row = x[i]
        out = sampler.transform(row)
        if out is not row:
            x[i] = out
        if rows[i] is not None:
            x[i, ~rows[i]] = -np.inf
        sampler.apply_bias(x[i])
    problems: list[str | None] = [None] * batch
    peak = x.max(axis=1)  # NaN anywhere propagates
    for i in np.flatnonzero(~np.isfinite(peak)).tolist():
        if np.isnan(peak[i]):
            problems[i] = "the logits contain NaN"
        elif peak[i] == np.inf:
            problems[i] = "the logits contain +inf"
        else:
            problems[i] = "no token is allowed: the mask (and logit_bias) exclude every token"
    return x, problems


def sample_batch(samplers: Sequence[SamplerState], logits: np.ndarray, masks=None) -> list[SampleResult]:
    """Sample one token per row of ``logits [B, V]``; row i uses ``samplers[i]``.

    ``masks``: None, a bool array ``[B, V]`` (True = allowed), or a sequence of ``[V]``
    bool arrays / None (no grammar for that row). The softmax runs on all rows at once.

    A row that cannot be sampled (everything masked, NaN logits) raises
    :class:`SamplingError` before any sampler state changes.
    """
    x, problems = prepare_logits(samplers, logits, masks)
    bad = [i for i, p in enumerate(problems) if p is not None]
    if bad:
        i = bad[0]
        prefix = f"row {i}: " if len(samplers) > 1 else ""
        raise SamplingError(prefix + problems[i])
    probs, log_norm = kernels.softmax_rows(x)
    results: list[SampleResult] = []
    for i, sampler in enumerate(samplers):
        token = sampler.sample(probs[i])
        logprob = float(x[i, token] - log_norm[i])
        top: list[TokenLogprob] = []
        if sampler.top_logprobs:
            top = [TokenLogprob(t, lp) for t, lp in
                   kernels.top_n_logprobs(probs[i], sampler.top_logprobs, x[i], log_norm[i])]
        results.append(SampleResult(token, logprob, top))
    return results
