"""Pure numpy steps of token selection, one function per stage.

These are the parts a GPU port would replace: a batched (log-)softmax over ``[B, V]``
and the per-row candidate selection. Every ``*_candidates`` function takes one row of
probabilities (float64, summing to 1, zeros for disallowed tokens) and returns
``(ids, weights)``: the kept token ids in the sampler's order and their unnormalised
sampling weights. Tokens with probability 0 are never candidates, so a masked token can
never be drawn.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "apply_temperature", "draw", "mirostat_candidates",
    "nucleus_candidates", "softmax_rows", "top_n_logprobs", "typical_candidates",
]


def softmax_rows(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Softmax of each row of ``logits [B, V]`` (float64).

    Returns ``(probs [B, V], log_norm [B])`` with ``log_softmax = logits - log_norm[:, None]``.
    Every row must have a finite maximum (the caller checks this).
    """
    x = np.asarray(logits, dtype=np.float64)
    peak = x.max(axis=1, keepdims=True)
    probs = np.subtract(x, peak)
    np.exp(probs, out=probs)
    total = probs.sum(axis=1, keepdims=True)
    probs /= total
    return probs, (peak + np.log(total))[:, 0]


def _ranked(keys: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` smallest ``keys`` (all when k <= 0), ascending, ties by position."""
    n = keys.size
    if 0 < k < n:
        kth = np.partition(keys, k - 1)[k - 1]
        below = np.flatnonzero(keys < kth)
        tied = np.flatnonzero(keys == kth)[: k - below.size]  # ties at the cut: lowest ids
        part = np.concatenate([below, tied])
        return part[np.lexsort((part, keys[part]))]
    return np.argsort(keys, kind="stable")


def _narrow(inside, k: int, probs: np.ndarray, mass: float, tries: int):
    """A small index set that provably holds the part of a ranking a sampler needs.

    ``inside(j)`` is a bool mask of a set closed under the ranking (every token outside
    ranks after every token inside) for growing ``j``. The set is enough when it holds at
    least ``k`` tokens (k > 0), or its probability mass exceeds ``mass`` (the mass cut
    then falls inside it). Returns the indices, or None (the caller ranks everything).
    Saves the O(V log V) sort / O(V) argpartition of a 65k vocabulary per row.
    """
    if k <= 0 and mass >= 1.0:
        return None
    for j in range(tries):
        mask = inside(j)
        count = int(np.count_nonzero(mask))
        if (k > 0 and count >= k) or (mass < 1.0 and
                                      float(probs.sum(where=mask)) > mass + 1e-9):
            return np.flatnonzero(mask)
    return None


def _top_desc(probs: np.ndarray, k: int, mass: float = np.inf) -> np.ndarray:
    """Indices of tokens with p > 0 by descending probability (ties by id): at least the
    first ``k`` (k <= 0: no limit), or at least up to where the mass exceeds ``mass``."""
    n = probs.size
    k = 0 if k >= n else k
    start = 1.0 / (2 * k) if k > 0 else 1.0 / 64
    ids = _narrow(lambda j: probs >= start / 16.0 ** j, k, probs, mass, 6)
    if ids is None:
        ids = np.flatnonzero(probs > 0)
    return ids[_ranked(-probs[ids], k)]


def _cut_mass(p: np.ndarray, limit: float) -> int:
    """How many leading entries to keep: while the mass *before* adding is <= limit.

    So the entry that crosses ``limit`` is kept, and ``limit == 0`` keeps exactly one.
    """
    before = np.empty_like(p)
    before[0] = 0.0
    np.cumsum(p[:-1], out=before[1:])
    return max(1, int(np.searchsorted(before, limit, side="right")))


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """AI00's ``p^(1/T)`` on the kept probabilities, computed in log space (no underflow to
    all-zero for tiny T). Unnormalised; the largest weight is 1. ``T == 0`` -> only the
    first candidate gets weight (callers handle that case before calling)."""
    logp = np.log(probs)
    return np.exp((logp - logp.max()) / temperature)


def nucleus_candidates(probs: np.ndarray, top_p: float, top_k: int, temperature: float = 1.0,
                       min_p: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Sort descending, keep ``top_k`` (0 = no limit), then keep while the cumulative mass
    before adding is <= ``top_p``, and only tokens with ``p >= min_p * max p``; weights
    ``p^(1/T)``. ``T == 0`` keeps the top token."""
    order = _top_desc(probs, top_k, top_p)
    p = probs[order]
    if temperature <= 0:
        return order[:1], np.ones(1)
    n = _cut_mass(p, top_p)
    if min_p > 0:  # p is descending: the tokens at or above the floor are a prefix
        n = min(n, max(1, int(np.count_nonzero(p[:n] >= min_p * p[0]))))
    return order[:n], apply_temperature(p[:n], temperature)


def typical_candidates(probs: np.ndarray, tau: float, top_k: int,
                       temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Rank the tokens with p > 0 by ``|-ln p - H|`` (H = entropy in nats), ascending; keep
    ``top_k`` (0 = no limit), then keep while the mass before adding is <= ``tau``;
    weights ``p^(1/T)``. ``T == 0`` keeps the first (most typical) token, as AI00 does."""
    ids = np.flatnonzero(probs > 0)
    p = probs[ids]
    logp = np.log(p)
    entropy = -float(np.dot(p, logp))
    score = np.add(logp, entropy)  # |-ln p - H| = |ln p + H|
    np.abs(score, out=score)
    near = _narrow(lambda j: score <= 0.5 * 2.0 ** j, top_k if top_k < ids.size else 0,
                   p, tau, 6)
    if near is not None:
        ids, p, score = ids[near], p[near], score[near]
    order = _ranked(score, top_k)
    ids, p = ids[order], p[order]
    if temperature <= 0:
        return ids[:1], np.ones(1)
    n = _cut_mass(p, tau)
    return ids[:n], apply_temperature(p[:n], temperature)


def mirostat_candidates(probs: np.ndarray, max_surprise: float) -> tuple[np.ndarray, np.ndarray]:
    """Sort descending and cut at the first token whose surprise ``-log2 p`` exceeds
    ``max_surprise``, that token included. Weights are the probabilities themselves."""
    with np.errstate(divide="ignore"):
        keep = -np.log2(probs) <= max_surprise  # p == 0 has surprise inf: never kept
    over = np.where(keep, -1.0, probs)
    first_over = int(np.argmax(over))  # the likeliest token past the threshold
    if over[first_over] > 0:
        keep[first_over] = True
    ids = np.flatnonzero(keep)
    p = probs[ids]
    order = np.lexsort((ids, -p))
    return ids[order], p[order]


def draw(weights: np.ndarray, u: float) -> int:
    """Inverse-CDF pick: the first position whose cumulative weight exceeds ``u * total``.

    ``u`` is uniform in [0, 1). Zero-weight positions are never returned.
    """
    cum = np.cumsum(weights)
    index = int(np.searchsorted(cum, u * cum[-1], side="right"))
    if index >= cum.size:  # rounding at u ~ 1: take the last position with weight
        index = int(np.flatnonzero(weights > 0)[-1])
    return index


def top_n_logprobs(probs: np.ndarray, n: int, logits: np.ndarray | None = None,
                   log_norm: float = 0.0) -> list[tuple[int, float]]:
    """The ``n`` likeliest tokens of one row as ``(id, logprob)``, descending, ties by id.

    Ranked by ``probs``; the log-probability is ``logits[id] - log_norm`` (exact, from the
    log-softmax) or ``log(probs[id])`` without logits. Tokens with probability 0 (masked)
    are not listed.
    """
    if n <= 0:
        return []
    ids = _top_desc(probs, n)[:n]
    values = np.log(probs[ids]) if logits is None else logits[ids] - log_norm
    return list(zip(ids.tolist(), values.tolist()))
