"""Sampler configurations: the AI00 ``sampler`` object and OpenAI's flat fields.

The three configs are msgspec Structs tagged by ``"type"`` exactly as AI00 spells it
(``"Nucleus"``, ``"Typical"``, ``"Mirostat"``; case-sensitive). They can be embedded in a
request Struct (``sampler: SamplerConfig | None = None``) or decoded from a plain dict
with :func:`decode_sampler`, which turns every problem into a :class:`SamplerConfigError`
(a ``ValueError``) whose message names the field, for a 400 reply.

Like AI00 (serde without ``deny_unknown_fields``), unknown keys are ignored unless
``strict=True`` is passed. Unlike AI00, values are range-checked: probabilities,
temperatures, ``tau``, ``rate`` and ``penalty_decay`` must be finite and >= 0, ``top_k`` an
int >= 0 (0 means "no limit"; AI00 would always return token 0 there).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Union

import msgspec

__all__ = [
    "DEFAULT_PENALTY_DECAY", "SAMPLER_TYPES", "Mirostat", "Nucleus", "SamplerConfig",
    "SamplerConfigError", "Typical", "decode_sampler", "sampler_from_openai",
    "sampler_from_request",
]

#: AI00's default decay: a half-life of about 200 tokens.
DEFAULT_PENALTY_DECAY = 0.99654026

NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]
TopK = Annotated[int, msgspec.Meta(ge=0, le=1 << 20)]
Penalty = Annotated[float, msgspec.Meta(ge=-100, le=100)]  # 100 already rules a token out


class SamplerConfigError(ValueError):
    """A sampler configuration the server should answer with HTTP 400."""


def _check_finite(struct: msgspec.Struct) -> None:
    for name in struct.__struct_fields__:
        value = getattr(struct, name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"`{name}` must be a finite number, got {value}")


class _Penalized(msgspec.Struct, tag_field="type", kw_only=True):
    """Fields shared by the samplers that apply top-k, temperature and repetition penalties."""

    top_k: TopK = 128
    temperature: NonNegative = 1.0
    presence_penalty: Penalty = 0.3
    frequency_penalty: Penalty = 0.3
    penalty_decay: NonNegative = DEFAULT_PENALTY_DECAY

    def __post_init__(self) -> None:
        _check_finite(self)


class Nucleus(_Penalized, tag="Nucleus", kw_only=True):
    """Top-k, then top-p (the token that crosses ``top_p`` is kept) and min-p (tokens with
    p >= min_p * max p), then p^(1/T)."""

    top_p: NonNegative = 0.5
    min_p: Fraction = 0.0


class Typical(_Penalized, tag="Typical", kw_only=True):
    """Locally typical sampling: rank by |-ln p - H|, top-k, keep mass up to ``tau``."""

    tau: NonNegative = 0.5


class Mirostat(msgspec.Struct, tag_field="type", tag="Mirostat", kw_only=True, omit_defaults=True):
    """Mirostat (v2-like): target surprise ``tau`` bits, learning rate ``rate``.

    ``learning_rate`` is accepted as an alias of ``rate`` when decoding (as in AI00); it is
    folded into ``rate`` and reset to None, so it never shows up afterwards.
    """

    tau: NonNegative = 3.0
    rate: NonNegative = 0.1
    learning_rate: Annotated[float, msgspec.Meta(ge=0)] | None = None

    def __post_init__(self) -> None:
        if self.learning_rate is not None:
            self.rate = self.learning_rate
            self.learning_rate = None
        _check_finite(self)


SamplerConfig = Union[Nucleus, Typical, Mirostat]
SAMPLER_TYPES: dict[str, type] = {"Nucleus": Nucleus, "Typical": Typical, "Mirostat": Mirostat}
_CONFIG_CLASSES = (Nucleus, Typical, Mirostat)


def _field_error(where: str, exc: Exception) -> SamplerConfigError:
    message = str(exc).replace("`$.", f"`{where}.").replace("`$`", f"`{where}`")
    return SamplerConfigError(f"invalid `{where}`: {message}")


def decode_sampler(obj: Any, *, strict: bool = False, where: str = "sampler") -> SamplerConfig:
    """Turn a decoded JSON object (``{"type": "Nucleus", ...}``) into a sampler config.

    Raises :class:`SamplerConfigError` (a ValueError) naming the bad field or type.
    ``strict=True`` also rejects unknown keys (AI00 ignores them, so it is off by default).
    ``where`` is the name used for the object in messages.
    """
    if isinstance(obj, _CONFIG_CLASSES):
        return obj
    if not isinstance(obj, Mapping):
        raise SamplerConfigError(
            f"`{where}` must be an object with a \"type\" field, got {type(obj).__name__}")
    if "type" not in obj:
        raise SamplerConfigError(
            f"`{where}` is missing the \"type\" field (one of {', '.join(map(repr, SAMPLER_TYPES))})")
    kind = obj["type"]
    cls = SAMPLER_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise SamplerConfigError(
            f"`{where}.type`: unknown sampler type {kind!r}; expected one of "
            f"{', '.join(map(repr, SAMPLER_TYPES))} (case-sensitive)")
    if cls is Mirostat and "rate" in obj and "learning_rate" in obj:
        raise SamplerConfigError(
            f"`{where}`: give either `rate` or its alias `learning_rate`, not both")
    if strict:
        known = set(cls.__struct_fields__) | {"type"}
        unknown = sorted(str(k) for k in obj if k not in known)
        if unknown:
            raise SamplerConfigError(
                f"`{where}`: unknown field(s) for {kind} sampler: {', '.join(unknown)}")
    try:
        return msgspec.convert(dict(obj), cls)
    except msgspec.ValidationError as exc:
        raise _field_error(where, exc) from None


#: The OpenAI-style top-level fields :func:`sampler_from_openai` reads.
OPENAI_FIELDS = ("temperature", "top_p", "top_k", "presence_penalty", "frequency_penalty",
                 "penalty_decay", "min_p")


def sampler_from_openai(*, temperature: Any = None, top_p: Any = None, top_k: Any = None,
                        presence_penalty: Any = None, frequency_penalty: Any = None,
                        penalty_decay: Any = None, min_p: Any = None) -> Nucleus:
    """A Nucleus config from OpenAI-style top-level request fields (None = not given).

    Defaults: ``temperature`` 1.0, ``top_p`` 0.5 and ``top_k`` 128 as AI00's flattened
    Nucleus; but ``presence_penalty`` and ``frequency_penalty`` default to **0** as in the
    OpenAI API (AI00 ignores these top-level fields and always applies 0.3/0.3, which
    surprises OpenAI clients). ``penalty_decay`` defaults to AI00's 0.99654026.
    """
    given = {"temperature": temperature, "top_p": top_p, "top_k": top_k,
             "presence_penalty": presence_penalty, "frequency_penalty": frequency_penalty,
             "penalty_decay": penalty_decay, "min_p": min_p}
    obj: dict[str, Any] = {"presence_penalty": 0.0, "frequency_penalty": 0.0}
    obj.update({k: v for k, v in given.items() if v is not None})
    try:
        return msgspec.convert(obj, Nucleus)
    except msgspec.ValidationError as exc:
        message = str(exc).replace("`$.", "`").replace(" - at ", " at ")
        raise SamplerConfigError(f"invalid sampling parameter: {message}") from None


def sampler_from_request(body: Mapping[str, Any], *, strict: bool = False) -> SamplerConfig:
    """The sampler config of a completion/chat request body (a decoded JSON object).

    ``sampler`` (alias ``sampler_override``) wins when present and not null, and then the
    top-level fields are ignored, as in AI00. Otherwise :func:`sampler_from_openai` reads
    the top-level fields (penalties default to 0).
    """
    present = [k for k in ("sampler", "sampler_override") if body.get(k) is not None]
    if len(present) == 2:
        raise SamplerConfigError("give either `sampler` or its alias `sampler_override`, not both")
    if present:
        return decode_sampler(body[present[0]], strict=strict, where=present[0])
    return sampler_from_openai(**{k: body.get(k) for k in OPENAI_FIELDS})
