"""One prefix cache per initial state, in a shared `PrefixCache` and its shared budgets.

A state computed from one initial state (the zero state, or a state-tuned one) must never serve
a request that starts from another: the same tokens give other states. Each scope's keys start
with a marker no real token has (a negative number: token ids are 0 or more), so the scopes'
entries live in disjoint subtrees of the one trie. Lengths given to and returned by a view count
real tokens only.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Generic, Sequence

import numpy as np

from .prefix_cache import Claim, Hit, PrefixCache, S


class ScopedCache(Generic[S]):
    """The part of `cache` that belongs to one initial state (`scope` 0, 1, ...)."""

    def __init__(self, cache: PrefixCache[S], scope: int) -> None:
        self.cache = cache
        self._marker = (-1 - scope,)

    def _key(self, tokens: Sequence[int]) -> tuple[int, ...]:
        return self._marker + tuple(int(t) for t in tokens)

    def lookup(self, tokens: Sequence[int]) -> Hit[S] | None:
        hit = self.cache.lookup(self._key(tokens), marker=1)
        return None if hit is None else replace(hit, length=hit.length - 1)

    def cached_length(self, tokens: Sequence[int]) -> int:
        return self.cache.cached_length(self._key(tokens), marker=1)

    def insert(self, tokens: Sequence[int], state: S, logits: np.ndarray | None) -> None:
        if tokens:
            self.cache.insert(self._key(tokens), state, logits)

    def claim(self, tokens: Sequence[int]) -> Claim[S]:
        return self.cache.claim(self._key(tokens))

    def complete(self, claim: Claim[S], state: S, logits: np.ndarray) -> None:
        self.cache.complete(claim, state, logits)

    def abandon(self, claim: Claim[S]) -> None:
        self.cache.abandon(claim)
